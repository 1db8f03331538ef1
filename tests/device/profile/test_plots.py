"""edgekd.device.profile.plots: OpenCV-drawn PNGs; colours, marker positions and bar heights are read back from pixels."""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import pytest

from edgekd.device.profile.plots import (HEIGHT, INK, PALETTE, WIDTH, bar_spans, data_limits, exit_histogram_plot,
                                  histogram_axes, nice_step, tick_label, ticks, tradeoff_axes, tradeoff_plot)


def _pt(latency, accuracy):
    return {"latency": latency, "accuracy": accuracy}


def _bundle(name="x-fp32 (fp32)", scale=1.0, shift=0.0, op=(0.55, 70.0)):
    """A sweep along the top-left of the box; the bottom-right (where ``op`` goes) stays empty."""
    lat = [0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 0.9]
    acc = [60.0, 74.0, 80.0, 84.0, 87.0, 89.0, 90.0]
    return {"name": name,
            "sweep": [_pt(scale * x, y + shift) for x, y in zip(lat, acc)],
            "pareto": list(range(len(lat))),
            "operating_point": _pt(scale * op[0], op[1] + shift),
            "exits": [_pt(scale * 0.22, 58.0 + shift), _pt(scale * 0.6, 62.0 + shift), _pt(scale * 0.9, 66.0 + shift)],
            "full": _pt(scale * 0.85, 64.0 + shift)}


def _mask(img, color, tol=10):
    return (np.abs(img.astype(int) - np.array(color, int)) <= tol).all(axis=2)


def _near(img, uv, color, r=2, tol=12) -> bool:
    u, v = int(round(uv[0])), int(round(uv[1]))
    return bool(_mask(img[v - r:v + r + 1, u - r:u + r + 1], color, tol).any())


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    series = [_bundle(), _bundle("x-int8 (int8)", scale=0.6, shift=-1.0)]
    path = tmp_path_factory.mktemp("plots") / "tradeoff.png"
    out = tradeoff_plot(series, path)
    return series, out, cv2.imread(str(out))


def test_tradeoff_png_size_and_content(two):
    series, out, img = two
    assert out.exists() and out.suffix == ".png"
    assert img.shape == (HEIGHT, WIDTH, 3)
    nonwhite = (img < 250).any(axis=2).mean()
    assert 0.02 < nonwhite < 0.5
    assert (img[0, :] == 255).all() and (img[:, 0] == 255).all()  # white background, nothing bleeds to the edge


def test_each_bundle_gets_its_palette_colour(two, tmp_path):
    _, _, img = two
    assert _mask(img, PALETTE[0]).sum() > 200 and _mask(img, PALETTE[1]).sum() > 200
    single = cv2.imread(str(tradeoff_plot([_bundle()], tmp_path / "one.png")))
    assert _mask(single, PALETTE[0]).sum() > 200
    assert _mask(single, PALETTE[1], tol=25).sum() == 0


def test_markers_land_where_the_data_says(two):
    series, _, img = two
    ax = tradeoff_axes(series)
    for k, s in enumerate(series):
        op = ax.px(s["operating_point"]["latency"], s["operating_point"]["accuracy"])
        assert _near(img, op, PALETTE[k], r=1), f"no star fill at the operating point of {s['name']}"
        ring = img[int(op[1]) - 14:int(op[1]) + 15, int(op[0]) - 14:int(op[0]) + 15]
        assert _mask(ring, INK, tol=30).sum() > 20, "the operating point has no dark outline"
        for e in s["exits"]:
            assert _near(img, ax.px(e["latency"], e["accuracy"]), PALETTE[k], r=1)
        assert _near(img, ax.px(s["full"]["latency"], s["full"]["accuracy"]), PALETTE[k], r=1)
    # far from every marker of either bundle: plain background or grid
    empty = ax.px(0.75, 75.0)
    assert not _near(img, empty, PALETTE[0], r=6, tol=40) and not _near(img, empty, PALETTE[1], r=6, tol=40)


def test_operating_point_moves_with_the_data(tmp_path):
    a, b = _bundle(op=(0.55, 70.0)), _bundle(op=(0.8, 80.0))
    ax = tradeoff_axes([a])
    assert (ax.xlim, ax.ylim) == (tradeoff_axes([b]).xlim, tradeoff_axes([b]).ylim)  # same frame for both
    img_a = cv2.imread(str(tradeoff_plot([a], tmp_path / "a.png")))
    img_b = cv2.imread(str(tradeoff_plot([b], tmp_path / "b.png")))
    p, q = ax.px(0.55, 70.0), ax.px(0.8, 80.0)
    assert _near(img_a, p, PALETTE[0], r=1) and not _near(img_a, q, PALETTE[0], r=4, tol=40)
    assert _near(img_b, q, PALETTE[0], r=1) and not _near(img_b, p, PALETTE[0], r=4, tol=40)


def test_pareto_front_is_a_line_between_its_points(tmp_path):
    s = _bundle()
    s["sweep"] = [_pt(0.2, 60.0), _pt(0.9, 90.0), _pt(0.9, 60.0)]
    s["exits"], s["full"], s["pareto"] = [], None, [0, 1]
    ax = tradeoff_axes([s])
    mid = ax.px(0.55, 75.0)  # halfway along the front from sweep[0] to sweep[1]
    s["pareto"] = [0, 1]
    assert _near(cv2.imread(str(tradeoff_plot([s], tmp_path / "line.png"))), mid, PALETTE[0], r=1)
    s["pareto"] = []
    assert not _near(cv2.imread(str(tradeoff_plot([s], tmp_path / "none.png"))), mid, PALETTE[0], r=3, tol=40)


def test_legend_sits_beside_the_plot(two):
    series, _, img = two
    ax = tradeoff_axes(series)
    for s in series:
        for p in s["sweep"] + s["exits"] + [s["operating_point"], s["full"]]:
            u, v = ax.px(p["latency"], p["accuracy"])
            assert ax.left < u < ax.right and ax.top < v < ax.bottom
    legend = img[int(ax.top):int(ax.bottom), int(ax.right) + 10:]
    assert _mask(legend, PALETTE[0]).sum() > 10 and _mask(legend, PALETTE[1]).sum() > 10
    assert (legend < 128).any(axis=2).sum() > 300  # its text


def test_degenerate_data_still_plots(tmp_path):
    one = {"name": "flat", "sweep": [_pt(0.5, 80.0)], "pareto": [0], "operating_point": _pt(0.5, 80.0),
           "exits": [], "full": None}
    img = cv2.imread(str(tradeoff_plot([one], tmp_path / "one.png")))
    assert img.shape == (HEIGHT, WIDTH, 3)
    ax = tradeoff_axes([one])
    assert ax.xlim[0] < 0.5 < ax.xlim[1] and ax.ylim[0] < 80.0 < ax.ylim[1]
    assert _near(img, ax.px(0.5, 80.0), PALETTE[0], r=1)
    same_latency = dict(one, sweep=[_pt(0.5, 60.0), _pt(0.5, 90.0)], pareto=[0, 1])
    tradeoff_plot([same_latency], tmp_path / "same.png")
    assert cv2.imread(str(tmp_path / "same.png")).shape == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("breakage, message", [
    (lambda s: s["sweep"][2].update(latency=float("nan")), "sweep\\[2\\] latency"),
    (lambda s: s["sweep"][0].update(latency=None), "sweep\\[0\\] latency"),
    (lambda s: s["operating_point"].update(accuracy=math.inf), "operating_point accuracy"),
    (lambda s: s.update(operating_point=None), "operating_point"),
    (lambda s: s["exits"][1].pop("latency"), "exits\\[1\\] latency"),
    (lambda s: s.update(full={"latency": "fast", "accuracy": 1.0}), "full latency"),
    (lambda s: s.update(pareto=[0, 99]), "pareto index 99"),
    (lambda s: s.update(sweep=[]), "sweep"),
    (lambda s: s.pop("name"), "name"),
])
def test_tradeoff_rejects_bad_data(tmp_path, breakage, message):
    s = _bundle()
    breakage(s)
    with pytest.raises(ValueError, match=message):
        tradeoff_plot([s], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_empty_or_too_many_series_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        tradeoff_plot([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="non-empty"):
        exit_histogram_plot([], tmp_path / "b.png")
    with pytest.raises(ValueError, match="at most"):
        tradeoff_plot([_bundle(f"b{i}") for i in range(len(PALETTE) + 1)], tmp_path / "c.png")


def _bars(img, ax, color):
    """(x centre, height) of each bar of ``color`` inside the plot box, left to right."""
    box = _mask(img, color, tol=6)
    box[:int(ax.top) + 2], box[int(ax.bottom) - 1:] = False, False
    box[:, :int(ax.left) + 2], box[:, int(ax.right) - 1:] = False, False
    n, _, stats, centroids = cv2.connectedComponentsWithStats(box.astype(np.uint8))
    found = [(centroids[i][0], stats[i, cv2.CC_STAT_HEIGHT]) for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] > 30]
    return sorted(found)


def test_histogram_bar_heights_follow_the_fractions(tmp_path):
    series = [{"name": "x-fp32 (fp32)", "exit_fraction": [0.6, 0.3, 0.1]},
              {"name": "x-int8 (int8)", "exit_fraction": [0.45, 0.35, 0.2]}]
    out = exit_histogram_plot(series, tmp_path / "sub" / "hist.png")
    img = cv2.imread(str(out))
    assert img.shape == (HEIGHT, WIDTH, 3)
    ax = histogram_axes(series)
    unit = (ax.bottom - ax.top) / (ax.ylim[1] - ax.ylim[0])  # pixels per percentage point
    for k, s in enumerate(series):
        bars = _bars(img, ax, PALETTE[k])
        assert len(bars) == 3, bars
        for i, ((u, h), f) in enumerate(zip(bars, s["exit_fraction"])):
            assert h == pytest.approx(100 * f * unit, abs=2.0)
            lo, hi = bar_spans(len(series), i)[k]
            assert ax.px(lo, 0)[0] < u < ax.px(hi, 0)[0]  # grouped: bundle k is the k-th bar of each group


def test_histogram_single_bundle_and_zero_bars(tmp_path):
    series = [{"name": "only", "exit_fraction": [1.0, 0.0, 0.0, 0.0]}]
    img = cv2.imread(str(exit_histogram_plot(series, tmp_path / "h.png")))
    ax = histogram_axes(series)
    bars = _bars(img, ax, PALETTE[0])
    assert len(bars) == 1 and bars[0][1] == pytest.approx(100 * (ax.bottom - ax.top) / ax.ylim[1], abs=2.0)
    assert _mask(img, PALETTE[1], tol=25).sum() == 0


@pytest.mark.parametrize("series, message", [
    ([{"name": "a", "exit_fraction": [0.5, 0.5]}, {"name": "b", "exit_fraction": [0.2, 0.3, 0.5]}], "same number"),
    ([{"name": "a", "exit_fraction": [0.5, 0.2]}], "sum to 1"),
    ([{"name": "a", "exit_fraction": [1.5, -0.5]}], "\\[0, 1\\]"),
    ([{"name": "a", "exit_fraction": [float("nan"), 1.0]}], "exit_fraction\\[0\\]"),
    ([{"name": "a", "exit_fraction": []}], "non-empty"),
])
def test_histogram_rejects_bad_data(tmp_path, series, message):
    with pytest.raises(ValueError, match=message):
        exit_histogram_plot(series, tmp_path / "bad.png")


def test_write_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "new" / "deeper" / "plot.png"
    assert tradeoff_plot([_bundle()], str(target)) == target  # parents created, str accepted, Path returned
    target.write_bytes(b"stale, not a png")
    exit_histogram_plot([{"name": "a", "exit_fraction": [0.7, 0.3]}], target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(target)).shape == (HEIGHT, WIDTH, 3)
    assert os.listdir(target.parent) == ["plot.png"]  # no temporary siblings left behind


def test_tick_helpers():
    assert [nice_step(s, 6) for s in (0.9, 34.0, 1.0, 250.0)] == [0.2, 5.0, 0.2, 50.0]
    assert ticks(0.13, 0.91, 0.2) == [0.2, 0.4, 0.6, 0.8]
    assert ticks(-1.0, 1.0, 0.5) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert [tick_label(v, 0.05) for v in (0.1, 0.15, -0.0)] == ["0.10", "0.15", "0.00"]
    assert tick_label(80.0, 5.0) == "80"
    lo, hi = data_limits([0.5, 0.5])
    assert lo < 0.5 < hi
    lo, hi = data_limits([0.0, 10.0])
    assert lo < 0.0 and 10.0 < hi and hi - lo < 12.0

"""edgekd.device.profile.plots: the matplotlib figures hold the report's numbers, the PNGs carry each bundle's
palette colour, bad series are refused, and `edgekd plot` redraws the PNGs from a report.json (also without
matplotlib: a one-line error)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.device.profile.plots import (
    DPI,
    FIGSIZE,
    PALETTE,
    exits_figure,
    exits_plot,
    plot_report,
    report_series,
    tradeoff_figure,
    tradeoff_plot,
)

to_rgb = pytest.importorskip("matplotlib.colors").to_rgb

SIZE = (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))  # (rows, columns) of every PNG


def _pt(latency, accuracy):
    return {"latency": latency, "accuracy": accuracy}


def _bundle(name="x-fp32 (fp32)", scale=1.0, shift=0.0, op=(0.55, 70.0)):
    """A sweep along the top-left; the exits and the full vote below it."""
    lat = [0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 0.9]
    acc = [60.0, 74.0, 80.0, 84.0, 87.0, 89.0, 90.0]
    return {"name": name,
            "sweep": [_pt(scale * x, y + shift) for x, y in zip(lat, acc)],
            "pareto": list(range(len(lat))),
            "operating_point": _pt(scale * op[0], op[1] + shift),
            "exits": [_pt(scale * 0.22, 58.0 + shift), _pt(scale * 0.6, 62.0 + shift), _pt(scale * 0.9, 66.0 + shift)],
            "full": _pt(scale * 0.85, 64.0 + shift)}


def _line(fig, gid):
    """The one Line2D of the figure's axes with ``gid``."""
    found = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == gid]
    assert len(found) == 1, f"{len(found)} lines with gid {gid!r}"
    return found[0]


def _xy(line):
    return list(zip(np.atleast_1d(line.get_xdata()).tolist(), np.atleast_1d(line.get_ydata()).tolist()))


def _pixels(path) -> np.ndarray:
    """The PNG as an (H, W, 3) RGB uint8 array."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} is not a readable image"
    return img[:, :, ::-1]


def _count(img, colour, tol=6) -> int:
    """Pixels within ``tol`` of the hex ``colour`` on every channel."""
    rgb = np.array([round(255 * c) for c in to_rgb(colour)])
    return int((np.abs(img.astype(int) - rgb) <= tol).all(axis=2).sum())


def _report_bundle(label, precision, shift=0.0, scale=1.0, fractions=(0.6, 0.3, 0.1)):
    """The fields of one report.json bundle that the plots read; non-global sweep points and a cheaper 'hard'
    vote are there to prove that only the right ones are drawn."""
    glob = [(0.0, 0.2, 60.0), (0.5, 0.3, 78.0), (0.7, 0.45, 77.0), (0.9, 0.6, 86.0), (1.01, 0.9, 88.0)]
    sweep = [{"kind": "global", "threshold": t, "target_drop": None, "accuracy": a + shift, "mean_macs": 1e6 * ms,
              "mean_latency_ms": scale * ms, "exit_fraction": [1.0, 0.0, 0.0], "operating_point": False}
             for t, ms, a in glob]
    sweep.append({"kind": "target-drop", "threshold": None, "target_drop": 0.5, "accuracy": 99.0, "mean_macs": 1.0,
                  "mean_latency_ms": 0.01, "exit_fraction": [1.0, 0.0, 0.0], "operating_point": False})
    op = {"kind": "manifest", "threshold": None, "target_drop": None, "accuracy": 84.0 + shift, "mean_macs": 5e5,
          "mean_latency_ms": scale * 0.5, "exit_fraction": list(fractions), "operating_point": True}
    sweep.append(op)
    medians = [0.21, 0.55, 0.88]
    return {"name": label, "label": label, "path": f"/b/{label}", "precision": precision, "vote_rule": "soft",
            "num_exits": 3, "sweep": sweep, "pareto": [5, 0, 1, 3, 4], "operating_point": op,
            "accuracy": {"exits": [{"exit": i, "top1": a + shift, "top5": 99.0, "k": 5}
                                   for i, a in enumerate((58.0, 80.0, 87.0))],
                         "vote": {"soft": 89.0 + shift, "hard": 10.0}},
            "latency": {**{f"exit{i}": {"latency": {"median": scale * m}} for i, m in enumerate(medians)},
                        "full": {"latency": {"median": scale * 1.1}}}}


def _report(n=2):
    specs = [("student-fp32", "fp32", 0.0, 1.0, (0.6, 0.3, 0.1)),
             ("student-quant", "int8", -1.0, 0.6, (0.45, 0.35, 0.2))]
    return {"report_version": 1, "bundles": [_report_bundle(*s) for s in specs[:n]]}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    series = [_bundle(), _bundle("x-int8 (int8)", scale=0.6, shift=-1.0)]
    path = tradeoff_plot(series, tmp_path_factory.mktemp("plots") / "tradeoff.png")
    return series, path


# ---------------------------------------------------------------------------------------------------- trade-off


def test_tradeoff_png_size_and_bundle_colours(two, tmp_path):
    _, path = two
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = _pixels(path)
    assert img.shape[:2] == SIZE
    assert (img[0, :] == 255).all() and (img[:, 0] == 255).all()  # white background to the edges
    assert _count(img, PALETTE[0]) > 300 and _count(img, PALETTE[1]) > 300
    single = _pixels(tradeoff_plot([_bundle()], tmp_path / "one.png"))
    assert _count(single, PALETTE[0]) > 300
    assert _count(single, PALETTE[1], tol=25) == 0  # the second colour only appears with a second bundle


def test_tradeoff_figure_draws_the_series_numbers(two):
    series, _ = two
    fig = tradeoff_figure(series)

    def xy(points):
        return [(p["latency"], p["accuracy"]) for p in points]

    for k, s in enumerate(series):
        sweep = _line(fig, f"sweep:{k}")
        assert _xy(sweep) == xy(s["sweep"]) and sweep.get_linestyle() == "None" and sweep.get_marker() == "o"
        assert _xy(_line(fig, f"pareto:{k}")) == xy([s["sweep"][j] for j in s["pareto"]])
        star = _line(fig, f"operating-point:{k}")
        assert _xy(star) == xy([s["operating_point"]]) and star.get_marker() == "*"
        squares = _line(fig, f"exits:{k}")
        assert _xy(squares) == xy(s["exits"]) and squares.get_marker() == "s"
        cross = _line(fig, f"full:{k}")
        assert _xy(cross) == xy([s["full"]]) and cross.get_marker() not in ("*", "s", "o")
        for ln in (sweep, star, squares, cross):  # one colour per bundle, the same across marker kinds
            assert to_rgb(ln.get_markerfacecolor()) == to_rgb(PALETTE[k])
        assert to_rgb(_line(fig, f"pareto:{k}").get_color()) == to_rgb(PALETTE[k])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "mean latency per frame (ms)" and ax.get_ylabel() == "top-1 accuracy (%)"
    assert "accuracy" in ax.get_title()


def test_pareto_line_runs_through_the_front_only():
    s = _bundle()
    s["sweep"] = [_pt(0.2, 60.0), _pt(0.9, 90.0), _pt(0.9, 60.0), _pt(0.5, 80.0)]
    s["exits"], s["full"], s["pareto"] = [], None, [0, 3, 1]
    line = _line(tradeoff_figure([s]), "pareto:0")
    assert _xy(line) == [(0.2, 60.0), (0.5, 80.0), (0.9, 90.0)]  # through the front, cheapest first
    assert (0.9, 60.0) not in _xy(line)  # the dominated point is a dot, not on the line
    s["pareto"] = []
    assert not [ln for ln in tradeoff_figure([s]).axes[0].get_lines() if ln.get_gid() == "pareto:0"]


def _texts(fig, prefix):
    return [t for t in fig.axes[0].texts if (t.get_gid() or "").startswith(prefix)]


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_exit_labels_sit_at_their_exits_inside_the_axes_and_apart(two):
    series, _ = two
    fig = tradeoff_figure(series)
    labels = _texts(fig, "exit-label:")
    assert sorted(t.get_text() for t in labels) == sorted(f"exit {i}" for s in series for i in range(3))
    renderer = fig.canvas.get_renderer()
    frame = fig.axes[0].get_window_extent(renderer)
    boxes = []
    for t in labels:
        k, i = map(int, t.get_gid().split(":")[1:])
        assert t.get_text() == f"exit {i}"
        assert tuple(t.xy) == (series[k]["exits"][i]["latency"], series[k]["exits"][i]["accuracy"])
        box = t.get_window_extent(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        boxes.append(box)
    assert not any(_boxes_overlap(a, b) for j, a in enumerate(boxes) for b in boxes[j + 1:])


def test_coinciding_exits_of_two_bundles_share_one_label():
    a, b = _bundle("a"), _bundle("b", shift=0.01)
    assert len(_texts(tradeoff_figure([a, b]), "exit-label:")) == 3


def test_legend_names_bundles_and_shapes_outside_the_axes(two):
    series, _ = two
    long = _bundle("a-very-long-bundle-directory-name-built-for-the-jetson-orin-nano (int8)")
    fig = tradeoff_figure([*series, long])
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:2] == [s["name"] for s in series]
    assert texts[2].startswith("a-very-long") and texts[2].endswith("(int8)") and len(texts[2]) <= 34
    for shape in ("threshold sweep", "Pareto front", "operating point", "exit i answered alone", "ensemble vote"):
        assert any(shape in t for t in texts), shape
    handles = legend.legend_handles if hasattr(legend, "legend_handles") else legend.legendHandles
    assert [to_rgb(h.get_color()) for h in handles[:3]] == [to_rgb(c) for c in PALETTE[:3]]
    renderer = fig.canvas.get_renderer()
    assert not _boxes_overlap(legend.get_window_extent(renderer), fig.axes[0].get_window_extent(renderer))
    fig_box = fig.bbox
    leg = legend.get_window_extent(renderer)
    assert fig_box.x0 <= leg.x0 and leg.x1 <= fig_box.x1 and fig_box.y0 <= leg.y0 and leg.y1 <= fig_box.y1


def test_legend_lists_only_the_shapes_drawn():
    s = _bundle()
    s["exits"], s["full"], s["pareto"] = [], None, [0]
    texts = [t.get_text() for t in tradeoff_figure([s]).legends[0].get_texts()]
    assert not any("alone" in t or "vote" in t or "Pareto" in t for t in texts)
    assert any("operating point" in t for t in texts)


def test_degenerate_data_still_plots(tmp_path):
    one = {"name": "flat", "sweep": [_pt(0.5, 80.0)], "pareto": [0], "operating_point": _pt(0.5, 80.0),
           "exits": [], "full": None}
    fig = tradeoff_figure([one])
    (x0, x1), (y0, y1) = fig.axes[0].get_xlim(), fig.axes[0].get_ylim()
    assert x0 < 0.5 < x1 and y0 < 80.0 < y1
    assert _pixels(tradeoff_plot([one], tmp_path / "one.png")).shape[:2] == SIZE
    same_latency = dict(one, sweep=[_pt(0.5, 60.0), _pt(0.5, 90.0)], pareto=[0, 1])
    assert _pixels(tradeoff_plot([same_latency], tmp_path / "same.png")).shape[:2] == SIZE


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
        exits_plot([], tmp_path / "b.png")
    with pytest.raises(ValueError, match="at most 7"):
        tradeoff_plot([_bundle(f"b{i}") for i in range(len(PALETTE) + 1)], tmp_path / "c.png")
    assert len(PALETTE) == 7 and len(set(PALETTE)) == 7
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------- exits


def _bars(fig, k):
    return [p for p in fig.axes[0].patches if p.get_gid() == f"bars:{k}"]


def test_exit_bars_equal_the_fractions_grouped_by_exit(tmp_path):
    series = [{"name": "x-fp32 (fp32)", "exit_fraction": [0.6, 0.3, 0.1]},
              {"name": "x-int8 (int8)", "exit_fraction": [0.45, 0.35, 0.2]}]
    fig = exits_figure(series)
    for k, s in enumerate(series):
        bars = _bars(fig, k)
        assert [b.get_height() for b in bars] == pytest.approx([100 * f for f in s["exit_fraction"]])
        assert all(to_rgb(b.get_facecolor()) == to_rgb(PALETTE[k]) for b in bars)
        for i, b in enumerate(bars):  # grouped: bundle k is the k-th bar inside exit i's slot
            centre = b.get_x() + b.get_width() / 2
            assert i - 0.5 < centre < i + 0.5 and (centre < i) == (k == 0)
    values = sorted(t.get_text() for t in fig.axes[0].texts)
    assert values == sorted(f"{100 * f:.1f}%" for s in series for f in s["exit_fraction"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["exit 0", "exit 1", "exit 2"]
    assert "share of frames" in fig.axes[0].get_ylabel() and fig.axes[0].get_xlabel() == "exit taken"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["x-fp32 (fp32)", "x-int8 (int8)"]
    img = _pixels(exits_plot(series, tmp_path / "sub" / "exits.png"))
    assert img.shape[:2] == SIZE
    assert _count(img, PALETTE[0]) > 2000 and _count(img, PALETTE[1]) > 2000
    assert _count(img, PALETTE[2], tol=25) == 0


def test_crowded_bar_values_do_not_overlap():
    fractions = [[0.333, 0.333, 0.334]] * 6 + [[1.0, 0.0, 0.0]]  # neighbours of equal height: labels side by side
    fig = exits_figure([{"name": f"b{k}", "exit_fraction": f} for k, f in enumerate(fractions)])
    renderer = fig.canvas.get_renderer()
    texts = fig.axes[0].texts
    assert len(texts) == 21
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert not any(_boxes_overlap(a, b) for j, a in enumerate(boxes) for b in boxes[j + 1:])
    top = fig.axes[0].get_window_extent(renderer).y1
    assert all(b.y1 <= top for b in boxes)  # head-room: no value runs out of the axes


@pytest.mark.parametrize("series, message", [
    ([{"name": "a", "exit_fraction": [0.5, 0.5]}, {"name": "b", "exit_fraction": [0.2, 0.3, 0.5]}], "same number"),
    ([{"name": "a", "exit_fraction": [0.5, 0.2]}], "sum to 1"),
    ([{"name": "a", "exit_fraction": [1.5, -0.5]}], "\\[0, 1\\]"),
    ([{"name": "a", "exit_fraction": [float("nan"), 1.0]}], "exit_fraction\\[0\\]"),
    ([{"name": "a", "exit_fraction": []}], "non-empty"),
    ([{"name": "a"}], "exit_fraction"),
])
def test_exits_rejects_bad_data(tmp_path, series, message):
    with pytest.raises(ValueError, match=message):
        exits_plot(series, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_write_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "new" / "deeper" / "plot.png"
    assert tradeoff_plot([_bundle()], str(target)) == target  # parents created, str accepted, Path returned
    target.write_bytes(b"stale, not a png")
    assert exits_plot([{"name": "a", "exit_fraction": [0.7, 0.3]}], target) == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _pixels(target).shape[:2] == SIZE
    assert os.listdir(target.parent) == ["plot.png"]  # no temporary siblings left behind


# ---------------------------------------------------------------------------------------------------- report


def test_report_series_takes_the_reports_numbers():
    report = _report()
    trade, exits = report_series(report)
    assert [s["name"] for s in trade] == ["student-fp32", "student-quant (int8)"]  # precision added when unsaid
    b, t = report["bundles"][1], trade[1]
    glob = [p for p in b["sweep"] if p["kind"] == "global"]
    assert t["sweep"] == [_pt(p["mean_latency_ms"], p["accuracy"]) for p in glob]  # global points only
    assert t["pareto"] == [0, 1, 3, 4]  # the front of the global points drawn (index 2 is dominated by 1)
    assert t["operating_point"] == _pt(0.6 * 0.5, 83.0)
    assert t["exits"] == [_pt(b["latency"][f"exit{i}"]["latency"]["median"], b["accuracy"]["exits"][i]["top1"])
                          for i in range(3)]
    assert t["full"] == _pt(0.6 * 1.1, 88.0)  # the bundle's vote rule (soft), not another rule
    assert exits[1] == {"name": "student-quant (int8)", "exit_fraction": [0.45, 0.35, 0.2]}
    del report["bundles"][0]["accuracy"]["vote"]["soft"]
    assert report_series(report)[0][0]["full"] is None


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.pop("bundles"), "no non-empty 'bundles'"),
    (lambda r: r.update(bundles=[]), "no non-empty 'bundles'"),
    (lambda r: r["bundles"][1].pop("operating_point"), "bundles\\[1\\] lacks the field 'operating_point'"),
    (lambda r: r["bundles"][0]["latency"].pop("exit2"), "bundles\\[0\\] lacks the field 'exit2'"),
    (lambda r: r["bundles"][0].update(sweep=None), "bundles\\[0\\] is malformed"),
])
def test_report_series_names_what_is_missing(breakage, message):
    report = _report()
    breakage(report)
    with pytest.raises(ValueError, match=message):
        report_series(report)


def test_plot_report_draws_both_pngs_from_a_report(tmp_path):
    report = _report()
    paths = plot_report(report, tmp_path / "out")
    assert paths == {"tradeoff": tmp_path / "out" / "tradeoff.png", "exits": tmp_path / "out" / "exits.png"}
    for p in paths.values():
        img = _pixels(p)
        assert img.shape[:2] == SIZE and _count(img, PALETTE[0]) > 300 and _count(img, PALETTE[1]) > 300
    trade, _ = report_series(report)
    assert paths["tradeoff"].read_bytes() == tradeoff_plot(trade, tmp_path / "again.png").read_bytes()
    bad = _report()
    bad["bundles"][1]["operating_point"]["exit_fraction"] = [0.5, 0.1, 0.1]
    with pytest.raises(ValueError, match="sum to 1"):
        plot_report(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # both figures are checked before either file is written


def _write_report(folder: Path, report=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.json"
    path.write_text(json.dumps(_report() if report is None else report))
    return path


def test_plot_command_writes_next_to_the_report_or_into_out(tmp_path):
    path = _write_report(tmp_path / "r")
    result = CliRunner().invoke(app, ["plot", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(tmp_path / "r" / "tradeoff.png"), str(tmp_path / "r" / "exits.png")]
    assert _pixels(tmp_path / "r" / "exits.png").shape[:2] == SIZE
    result = CliRunner().invoke(app, ["plot", str(path), "--out", str(tmp_path / "elsewhere")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["exits.png", "tradeoff.png"]


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.json", "no such file"),
    (lambda d: d, "no such file"),
    (lambda d: (d / "r.json").write_text("{not json") and d / "r.json", "not a readable JSON file"),
    (lambda d: (d / "r.json").write_text("[1, 2]") and d / "r.json", "not an edgekd profile report"),
    (lambda d: _write_report(d / "x", {"bundles": [{"name": "b"}]}), "lacks the field"),
])
def test_plot_command_bad_input_is_a_one_line_error(tmp_path, make, message):
    result = CliRunner().invoke(app, ["plot", str(make(tmp_path))])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.startswith("error:")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not list(tmp_path.rglob("*.png"))


def test_plot_command_out_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("keep me")
    result = CliRunner().invoke(app, ["plot", str(_write_report(tmp_path / "r")), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "directory" in result.output
    assert (tmp_path / "file").read_text() == "keep me"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[3])


def test_plot_command_without_matplotlib_says_how_to_get_it(tmp_path):
    """``sys.modules['matplotlib'] = None`` makes every ``import matplotlib...`` raise ImportError, as on a
    device without the extra."""
    path = _write_report(tmp_path / "r")
    proc = _python("import sys\nsys.modules['matplotlib'] = None\n"
                   "from typer.testing import CliRunner\nfrom edgekd.cli import app\n"
                   f"r = CliRunner().invoke(app, ['plot', {str(path)!r}])\n"
                   "print(r.exit_code)\nprint(r.output, end='')\n")
    assert proc.returncode == 0, proc.stderr
    code, *lines = proc.stdout.splitlines()
    assert code == "2" and len(lines) == 1, proc.stdout
    assert lines[0].startswith("error:") and "matplotlib" in lines[0] and "pip install 'edgekd[plots]'" in lines[0]
    assert not list(tmp_path.rglob("*.png"))


def test_matplotlib_is_imported_lazily_and_pyplot_never():
    proc = _python("import sys\nimport edgekd.device.profile.plots as plots\n"
                   "print('matplotlib' in sys.modules)\n"
                   "plots.figure_png(plots.tradeoff_figure([{'name': 'a', 'sweep': [{'latency': 1, 'accuracy': 2}],"
                   " 'operating_point': {'latency': 1, 'accuracy': 2}}]))\n"
                   "print('matplotlib.pyplot' in sys.modules)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]

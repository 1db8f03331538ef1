"""edgekd.device.profile.sweep: accuracy table, global-threshold sweep (monotone facts), fitted point, Pareto front."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.core.early_exit import NEVER, fit_thresholds, simulate
from edgekd.device.chain import Chain
from edgekd.device.profile.sweep import accuracy_table, pareto_front, sweep


@pytest.fixture(scope="module")
def chained(tiny_bundle, tmp_path_factory):
    """(manifest, chained probs (E, N, K), labels) of the tiny bundle built in fp32 for ONNX Runtime."""
    from edgekd.device.compiler import build_bundle

    out = tmp_path_factory.mktemp("profile_sweep") / "built"
    m = build_bundle(tiny_bundle, precision="fp32", backend="onnxruntime", out=out, cache_dir=None)
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"], f["labels"]
    with Chain.from_manifest(m) as chain:
        probs = chain.probs(images, m.spec)
    return m, probs, labels


def _top_k_count(p: np.ndarray, labels: np.ndarray, k: int) -> float:
    hits = 0
    for row, y in zip(p, labels):
        hits += int(y in np.argsort(row)[::-1][:k])
    return 100.0 * hits / len(labels)


def _costs(m):
    macs = [float(e.macs) for e in m.exits]
    latency = list(np.cumsum(np.arange(1, m.num_exits + 1, dtype=float)))
    return macs, latency


def test_accuracy_table_matches_independent_count(chained):
    m, probs, labels = chained
    w = [0.2] * (m.num_exits - 1) + [1.0]
    table = accuracy_table(probs, labels, vote_weights=w)
    assert len(table["exits"]) == m.num_exits
    for i, row in enumerate(table["exits"]):
        assert row["top1"] == pytest.approx(100.0 * np.mean(np.argmax(probs[i], axis=1) == labels))
        assert row["top5"] == pytest.approx(_top_k_count(probs[i], labels, 5))
        assert row["top5"] >= row["top1"]
    assert table["vote"]["soft"] == pytest.approx(100.0 * np.mean(probs.mean(axis=0).argmax(axis=1) == labels))
    wn = np.asarray(w) / np.sum(w)
    weighted = np.einsum("e,enk->nk", wn, probs).argmax(axis=1)
    assert table["vote"]["weighted"] == pytest.approx(100.0 * np.mean(weighted == labels))
    top1 = probs.argmax(axis=2)
    majority = [np.bincount(top1[:, j], minlength=probs.shape[2]) for j in range(probs.shape[1])]
    clear = [j for j, c in enumerate(majority) if np.sort(c)[-1] > np.sort(c)[-2]]  # no tie to break
    hard_only = accuracy_table(probs[:, clear], labels[clear])
    assert hard_only["vote"]["hard"] == pytest.approx(
        100.0 * np.mean([majority[j].argmax() == labels[j] for j in clear]))
    assert "weighted" not in hard_only["vote"]


def test_accuracy_table_top5_with_few_classes():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=(2, 50))  # K = 3 < 5
    labels = rng.integers(0, 3, size=50)
    table = accuracy_table(p, labels)
    assert all(r["top5"] == 100.0 and r["k"] == 3 for r in table["exits"])
    p7 = rng.dirichlet(np.ones(7), size=(2, 50))
    labels7 = rng.integers(0, 7, size=50)
    for i, row in enumerate(accuracy_table(p7, labels7)["exits"]):
        assert row["top5"] == pytest.approx(_top_k_count(p7[i], labels7, 5)) and row["top5"] < 100.0


def test_sweep_extremes_and_monotone(chained):
    m, probs, labels = chained
    macs, latency = _costs(m)
    assert macs == sorted(macs)  # cumulative per exit
    points = sweep(probs, labels, macs, latency)
    global_pts = [p for p in points if not p["operating_point"]]
    assert len(global_pts) == 22 and len(points) == 22  # no fitted thresholds given
    exit_acc = [100.0 * np.mean(probs[i].argmax(axis=1) == labels) for i in range(m.num_exits)]
    first = global_pts[0]
    assert first["threshold"] == 0.0
    assert first["exit_fraction"][0] == 1.0 and first["accuracy"] == pytest.approx(exit_acc[0])
    assert first["mean_macs"] == pytest.approx(macs[0]) and first["mean_latency_ms"] == pytest.approx(latency[0])
    last = global_pts[-1]
    assert last["threshold"] > 1.0
    assert last["exit_fraction"][-1] == 1.0 and last["accuracy"] == pytest.approx(exit_acc[-1])
    assert last["mean_macs"] == pytest.approx(macs[-1])
    ts = [p["threshold"] for p in global_pts]
    assert ts == sorted(ts)
    for a, b in zip(global_pts, global_pts[1:]):
        assert b["exit_fraction"][-1] >= a["exit_fraction"][-1] - 1e-12
        assert b["mean_macs"] >= a["mean_macs"] - 1e-9
        assert b["mean_latency_ms"] >= a["mean_latency_ms"] - 1e-9
    for p in points:
        assert sum(p["exit_fraction"]) == pytest.approx(1.0)
    # the sweep actually moves (the facts above are not vacuous)
    assert global_pts[0]["mean_macs"] < global_pts[-1]["mean_macs"]


def test_sweep_fitted_point_equals_simulate(chained):
    m, probs, labels = chained
    macs, latency = _costs(m)
    points = sweep(probs, labels, macs, latency, fitted=m.thresholds)
    fitted = [p for p in points if p["operating_point"]]
    assert len(fitted) == 1 and fitted[0]["kind"] == "manifest" and fitted[0]["threshold"] is None
    ref = simulate(probs, m.thresholds, macs, labels)
    assert fitted[0]["accuracy"] == pytest.approx(ref.accuracy)
    assert fitted[0]["exit_fraction"] == pytest.approx(ref.exit_fraction)
    assert fitted[0]["mean_macs"] == pytest.approx(ref.mean_cost)
    lat_ref = simulate(probs, m.thresholds, latency, labels).mean_cost
    assert fitted[0]["mean_latency_ms"] == pytest.approx(lat_ref)
    assert fitted[0]["thresholds"] == pytest.approx(m.thresholds)


def test_sweep_target_drop_family(chained):
    """One fitted set per allowed drop, meeting its target; a larger allowance never costs more MACs."""
    m, probs, labels = chained
    macs, latency = _costs(m)
    ref = 100.0 * np.mean(probs[-1].argmax(axis=1) == labels)
    drops = [0.0, 1.0, 3.0, 10.0]
    points = sweep(probs, labels, macs, latency, thresholds=[], reference_accuracy=ref, target_drops=drops)
    assert [p["kind"] for p in points] == ["target-drop"] * 4 and [p["target_drop"] for p in points] == drops
    for k, (p, drop) in enumerate(zip(points, drops)):
        fit = fit_thresholds(probs, labels, macs, reference_accuracy=ref, target_drop=drop,
                             starts=[q["thresholds"] for q in points[:k]])
        assert p["thresholds"] == pytest.approx(fit.thresholds) and p["accuracy"] >= ref - drop - 1e-9
        assert p["thresholds"][-1] == 0.0 and not p["operating_point"]
    costs = [p["mean_macs"] for p in points]
    assert all(b <= a + 1e-9 for a, b in zip(costs, costs[1:]))
    assert points[0]["mean_macs"] > points[-1]["mean_macs"]  # a 10-point allowance buys something: it moves
    with pytest.raises(ValueError, match="reference"):
        sweep(probs, labels, macs, latency, target_drops=[1.0])


def test_sweep_without_latency_and_custom_thresholds(chained):
    m, probs, labels = chained
    macs, _ = _costs(m)
    points = sweep(probs, labels, macs, None, thresholds=[0.5, NEVER])
    assert [p["threshold"] for p in points] == [0.5, NEVER]
    assert all(p["mean_latency_ms"] is None for p in points)
    with pytest.raises(ValueError):
        sweep(probs, labels, macs[:-1], None)


def _pt(acc, lat=None, macs=0.0):
    return {"accuracy": acc, "mean_latency_ms": lat, "mean_macs": macs}


def test_pareto_front_constructed():
    pts = [_pt(90, 10), _pt(80, 5), _pt(85, 12), _pt(95, 20), _pt(80, 6), _pt(70, 5), _pt(95, 25)]
    # 2 is dominated by 0; 4 by 1; 5 by 1; 6 by 3
    assert pareto_front(pts) == [1, 0, 3]
    # without latency everywhere, MACs decide
    pts = [_pt(90, None, 100), _pt(80, 1.0, 50), _pt(85, None, 200)]
    assert pareto_front(pts) == [1, 0]
    # equal points do not dominate each other
    assert sorted(pareto_front([_pt(50, 1), _pt(50, 1)])) == [0, 1]
    assert pareto_front([]) == []

"""edgekd.device.profile.latency: summary statistics, the measuring loop, and per-segment latencies of a built bundle."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgekd.core.manifest import load_manifest
from edgekd.device.profile.latency import LatencyStats, interleaved, measure, segment_latencies, summarize

ORDER = ("min", "median", "p90", "p95", "p99", "max")


def _ordered(stats: dict) -> bool:
    values = [stats[k] for k in ORDER]
    return all(a <= b for a, b in zip(values, values[1:])) and stats["min"] <= stats["mean"] <= stats["max"]


@pytest.fixture(scope="module")
def built(tiny_bundle, tmp_path_factory):
    from edgekd.device.compiler import build_bundle

    out = tmp_path_factory.mktemp("profile_latency") / "built"
    return build_bundle(tiny_bundle, precision="fp32", backend="onnxruntime", out=out, cache_dir=None)


def test_summarize_matches_numpy_and_is_ordered():
    rng = np.random.default_rng(0)
    data = list(rng.gamma(2.0, 1.5, size=501) + 1.0)
    s = summarize(data)
    assert isinstance(s, LatencyStats) and s.n == 501
    for key, q in (("median", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert getattr(s, key) == pytest.approx(np.percentile(data, q))
    assert s.min == min(data) and s.max == max(data)
    assert s.mean == pytest.approx(np.mean(data)) and s.std == pytest.approx(np.std(data))
    assert s.cv == pytest.approx(np.std(data) / np.mean(data))
    assert _ordered(s.to_dict())
    assert set(s.to_dict()) >= {"n", *ORDER, "mean", "std", "cv", "unstable", "warning"}


def test_summarize_known_small_sample():
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert (s.min, s.median, s.max, s.mean) == (1.0, 2.5, 4.0, 2.5)
    assert s.p90 == pytest.approx(3.7)


def test_cv_warning_only_when_spread_out():
    tight = summarize([10.0, 10.1, 9.9, 10.05, 9.95] * 20)
    assert not tight.unstable and tight.warning is None
    spread = summarize([1.0, 10.0, 2.0, 30.0, 1.5, 5.0])
    assert spread.unstable and "coefficient of variation" in spread.warning and "unreliable" in spread.warning
    # the limit is honoured both ways
    assert summarize([1.0, 1.2, 0.8] * 5, cv_limit=0.5).unstable is False
    assert summarize([1.0, 1.2, 0.8] * 5, cv_limit=0.05).unstable is True


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        summarize([])


def test_measure_honours_iterations():
    calls = []
    s = measure(lambda: calls.append(1), warmup_s=0.0, iterations=37)
    assert s.n == 37 and len(calls) == 37
    # iterations win over a duration
    calls.clear()
    t0 = time.perf_counter()
    s = measure(lambda: calls.append(1), warmup_s=0.0, iterations=3, duration_s=30.0)
    assert s.n == 3 and len(calls) == 3 and time.perf_counter() - t0 < 5.0


def test_measure_warms_up_by_time():
    stamps = []

    def fn():
        stamps.append(time.perf_counter())
        time.sleep(0.005)

    start = time.perf_counter()
    s = measure(fn, warmup_s=0.1, iterations=5)
    assert s.n == 5
    warm = stamps[:-5]
    assert len(warm) >= 2  # several calls, not a fixed one
    assert warm[-1] - start < 0.1  # the last warm-up call began inside the warm-up window
    assert stamps[-5] - start >= 0.1  # timing began only after it
    assert s.min >= 4.0  # samples are in milliseconds


def test_measure_honours_duration():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.005)

    t0 = time.perf_counter()
    s = measure(fn, warmup_s=0.0, iterations=None, duration_s=0.1)
    elapsed = time.perf_counter() - t0
    assert s.n == len(calls)
    assert elapsed >= 0.1
    assert 2 <= s.n <= 21  # 0.1 s of 5 ms calls, never more
    with pytest.raises(ValueError):
        measure(fn, iterations=None, duration_s=None)


def test_interleaved_times_every_callable_once_per_round_in_a_rotating_order():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = interleaved(fns, rounds=4, warmup_rounds=1)
    assert calls[:3] == ["a", "b", "c"]  # the untimed round
    assert calls[3:] == ["b", "c", "a", "c", "a", "b", "a", "b", "c", "b", "c", "a"]  # order rotates
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}
    slow = interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.01)}, rounds=3)
    assert min(slow["slow"]) >= 10.0 > max(slow["fast"])  # milliseconds of each call
    with pytest.raises(ValueError):
        interleaved(fns, rounds=0)


def test_stage_latencies_on_built_bundle(built):
    n = built.num_exits
    res = segment_latencies(built, batch=4, warmup_s=0.01, iterations=15)
    assert res["backend"] == "onnxruntime" and res["batch"] == 4
    names = [f"segment{i}" for i in range(n)] + [f"exit{i}" for i in range(n)] + ["full"]
    for name in names:
        entry = res[name]
        assert entry["batch"] == 1 and entry["latency"]["n"] == 15, name
        assert _ordered(entry["latency"]) and entry["latency"]["min"] > 0, name
        assert entry["throughput"] == pytest.approx(1e3 / entry["latency"]["median"])
        b = entry["batched"]
        assert b["batch"] == 4 and _ordered(b["latency"]), name
        assert b["throughput"] == pytest.approx(4e3 / b["latency"]["median"])
    for i in range(n):
        expected = sum(res[f"segment{j}"]["latency"]["median"] for j in range(i + 1))
        assert res[f"exit{i}"]["segment_median_sum_ms"] == pytest.approx(expected)


def test_stage_latencies_exported_bundle_runs_on_onnxruntime(tiny_bundle):
    m = load_manifest(tiny_bundle)
    assert m.backend == "onnx"
    res = segment_latencies(m, warmup_s=0.0, iterations=3)
    assert res["backend"] == "onnxruntime" and res["full"]["batched"] is None
    assert all(res[f"exit{i}"]["latency"]["n"] == 3 for i in range(m.num_exits))


def test_stage_latencies_energy_per_item_from_power_rails(built, tmp_path):
    from edgekd.device.profile.energy import find_rails
    from tests.helpers import iio_tree

    iio_tree(tmp_path, {0: ("POM_5V_IN", 4000.0)})  # a constant 4 W (JetPack 4 layout)
    res = segment_latencies(built, batch=2, warmup_s=0.0, iterations=10, rails=find_rails(tmp_path))
    for name in ("segment0", f"exit{built.num_exits - 1}", "full"):
        e, s = res[name]["energy"], res[name]["latency"]
        assert e["per_inference_j"]["POM_5V_IN"] == pytest.approx(4.0 * s["mean"] / 1e3, rel=1e-6)
        assert e["mean_power_mw"] == {"POM_5V_IN": pytest.approx(4000.0)}
        assert e["samples"] >= 2  # one on entering, one on leaving, more from the sampling thread
        assert (e["warning"] is not None) == (e["samples"] < 10)  # too few readings to trust: said so
        eb, sb = res[name]["batched"]["energy"], res[name]["batched"]["latency"]
        assert eb["per_inference_j"]["POM_5V_IN"] == pytest.approx(4.0 * sb["mean"] / 1e3 / 2, rel=1e-6)  # per item
    assert segment_latencies(built, warmup_s=0.0, iterations=2)["full"]["energy"] == "not available"

"""edgekd.device.chain on the tiny digits student (real ONNX Runtime, exported and int8 bundles): the chain equals
the full graph, per-sample early exit equals the simulation on the chain's probabilities, every segment is asked
only for the outputs its callers need (run, profile, export), the segment-input hook sees the right feeds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.early_exit import simulate
from edgekd.core.manifest import Manifest, load_manifest
from edgekd.core.preprocess import normalize
from edgekd.core.vote import softmax
from edgekd.device import chain as chain_module
from edgekd.device.chain import Chain, full_probs, normalized_batches
from edgekd.device.runners.onnxruntime import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def bundles(tiny_bundle, tmp_path_factory) -> dict[str, Manifest]:
    """The exported (fp32, plain ONNX) bundle and an int8 build of it for ONNX Runtime."""
    from edgekd.device.compiler import build_bundle

    out = tmp_path_factory.mktemp("chain") / "int8"
    return {"exported": load_manifest(tiny_bundle),
            "int8": build_bundle(tiny_bundle, precision="int8", out=out, cache_dir=None, max_drop=100.0)}


def _val(m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    with np.load(m.file("val_sample")) as f:
        return f["images"], f["labels"]  # (N, 16, 16, 1) uint8, (N,)


class RecordingRunner(OnnxRuntimeRunner):
    """A real ONNX Runtime runner that logs (graph file, requested output names) for every call."""

    log: list[tuple[str, tuple[str, ...]]]

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.log.append((self.path.name, tuple(outputs)))
        return super()._infer(feed, outputs)


@pytest.fixture
def fetched(monkeypatch) -> list[tuple[str, tuple[str, ...]]]:
    """Every segment call the chain makes from now on, as (graph file, requested outputs)."""
    log: list[tuple[str, tuple[str, ...]]] = []

    def recording_runner(backend: str, path, **options):
        assert backend == "onnxruntime"
        runner = RecordingRunner(path, **options)
        runner.log = log
        return runner

    monkeypatch.setattr(chain_module, "make_runner", recording_runner)
    return log


def _by_segment(m: Manifest, log: list[tuple[str, tuple[str, ...]]]) -> list[tuple[int, tuple[str, ...]]]:
    """The log with graph files replaced by segment indices."""
    index = {m.segment_graph(i).name: i for i in range(m.num_exits)}
    return [(index[name], outputs) for name, outputs in log]


@pytest.mark.parametrize("kind", ["exported", "int8"])
def test_chain_equals_the_full_graph(bundles, kind):
    m = bundles[kind]
    images, _ = _val(m)
    full = full_probs(m.runner_backend, m.full_graph(), images, m.spec, m.num_exits)  # (E, N, K)
    with Chain.from_manifest(m) as chain:
        chained = chain.probs(images, m.spec, batch=50)
    assert chained.shape == full.shape == (m.num_exits, len(images), m.spec.num_classes)
    assert chained.dtype == np.float32
    if kind == "exported":  # the same float32 computation, cut in pieces
        np.testing.assert_allclose(chained, full, atol=1e-5)
    else:  # int8: each graph quantized on its own
        assert np.mean(full.argmax(2) == chained.argmax(2)) >= 0.97 and np.abs(full - chained).max() < 0.25


@pytest.mark.parametrize("kind", ["exported", "int8"])
def test_early_exit_per_sample_equals_the_simulation_on_the_chain(bundles, kind):
    m = bundles[kind]
    images, labels = _val(m)
    with Chain.from_manifest(m) as chain:
        probs = chain.probs(images, m.spec)  # (E, N, K)
        conf = probs.max(axis=2)  # (E, N)
        thresholds = [float(np.median(conf[i])) for i in range(m.num_exits - 1)] + [0.0]
        answers = [chain.early_exit(x, thresholds) for x in normalized_batches(images, m.spec, batch=64)]
    exits = np.concatenate([a.exits for a in answers])  # (N,)
    got = np.concatenate([a.probs for a in answers])  # (N, K)
    sim = simulate(probs, thresholds, labels=labels)
    assert np.array_equal(exits, sim.exit_taken)
    assert len(np.unique(exits)) == m.num_exits, "the median thresholds should use every exit"
    np.testing.assert_allclose(got, probs[exits, np.arange(len(exits))], atol=1e-6)
    assert np.array_equal(got.argmax(axis=1), sim.pred)
    assert all(a.network_ms > 0 for a in answers)


def test_early_exit_answers_at_the_chains_last_segment(bundles):
    m = bundles["exported"]
    images, _ = _val(m)
    x = np.stack([normalize(img, m.spec) for img in images[:40]])  # (40, C, H, W)
    with Chain.from_manifest(m, last=1) as chain:
        assert len(chain) == len(chain.runners) == 2
        out = chain.early_exit(x, [np.inf, np.inf])  # never confident: the chain's last exit answers
        probs = chain.probs(images[:40], m.spec)  # (2, 40, K)
    assert np.array_equal(out.exits, np.ones(40))
    np.testing.assert_allclose(out.probs, probs[1], atol=1e-6)


def test_every_segment_is_asked_only_for_what_its_caller_needs(bundles, fetched):
    m = bundles["exported"]
    n = m.num_exits
    assert n == 3
    x = np.stack([normalize(img, m.spec) for img in _val(m)[0][:8]])  # (8, C, H, W)
    with Chain.from_manifest(m) as chain:
        out = chain.run(x)
        assert set(out) == {"feat0", "logits0", "conf0", "feat1", "logits1", "conf1", "logits2", "conf2"}
        chain.run(x, last=1)
        chain.run(x, last=2, every_exit=False)  # what --mode exit fetches
        chain.early_exit(x, [0.999999, 0.999999, 0.0])  # reachable thresholds: every exit's answer comes back
        chain.early_exit(x, [1.5, np.inf, 0.0])  # thresholds nothing reaches: those exits only pass feat on
    assert _by_segment(m, fetched) == [
        (0, ("feat0", "logits0", "conf0")), (1, ("feat1", "logits1", "conf1")), (2, ("logits2", "conf2")),  # run
        (0, ("feat0", "logits0", "conf0")), (1, ("logits1", "conf1")),  # up to exit 1: no feat1, nobody needs it
        (0, ("feat0",)), (1, ("feat1",)), (2, ("logits2", "conf2")),  # only the last exit answers
        (0, ("feat0", "logits0", "conf0")), (1, ("feat1", "logits1", "conf1")), (2, ("logits2", "conf2")),
        (0, ("feat0",)), (1, ("feat1",)), (2, ("logits2", "conf2")),
    ]
    for i in range(n):  # the graph's confidence is its softmax maximum, up to rounding
        np.testing.assert_allclose(out[f"conf{i}"], softmax(out[f"logits{i}"]).max(axis=1), atol=1e-5)


def test_the_chains_probabilities_peak_exactly_at_the_graphs_confidence(bundles):
    """Every decision is made on ``conf{i}``: the probabilities build certifies on have it as their maximum, bit
    for bit, and keep the host softmax's argmax; the batch does not change a confidence (build decides at 64,
    run at 1)."""
    m = bundles["int8"]
    images, _ = _val(m)
    with Chain.from_manifest(m) as chain:
        probs = chain.probs(images, m.spec, batch=64)  # (E, N, K)
        one = chain.probs(images[:50], m.spec, batch=1)
        x = next(normalized_batches(images, m.spec, batch=len(images)))
        out = chain.run(x)
    assert np.array_equal(one, probs[:, :50])
    for i in range(m.num_exits):
        assert np.array_equal(probs[i].max(axis=1), out[f"conf{i}"])
        assert np.array_equal(probs[i].argmax(axis=1), softmax(out[f"logits{i}"]).argmax(axis=1))
        np.testing.assert_allclose(probs[i], softmax(out[f"logits{i}"]), atol=1e-6)


def test_exit_probs_keeps_the_argmax_where_the_confidence_rounds_below_a_near_tie():
    logits = np.log(np.array([[0.5, 0.5 - 1e-8, 0.0 + 1e-9], [0.1, 0.2, 0.7]], dtype=np.float32))
    conf = np.array([np.nextafter(np.float32(0.5), np.float32(0)), 0.7], dtype=np.float32)  # an ulp below
    p = chain_module.exit_probs(logits, conf)
    assert np.array_equal(p.max(axis=1), conf) and list(p.argmax(axis=1)) == [0, 2]
    assert (p[0, 1] < conf[0]) and p.dtype == np.float32


@pytest.mark.parametrize("t", [0.95, 0.1, 1 / 3, 0.7000000000000001, 1.01, float(np.float32(0.95)), 0.0, np.inf,
                               3.5e38])
def test_float32_thresholds_decide_every_float32_confidence_as_float64_does(t):
    got = chain_module.float32_thresholds([t])[0]
    assert got.dtype == np.float32
    near = np.float32(min(t, 1.0)) if np.isfinite(t) else np.float32(1.0)
    conf = np.array([np.nextafter(near, np.float32(-1)), near, np.nextafter(near, np.float32(2)), got,
                     np.nextafter(got, np.float32(-1))], dtype=np.float32)
    assert np.array_equal(conf >= got, conf.astype(np.float64) >= t)


def test_profile_times_exactly_what_run_fetches(bundles, fetched):
    """Per-exit latency in `edgekd profile` asks every segment for what `edgekd run` asks it for, nothing more."""
    from edgekd.device.profile.latency import segment_latencies
    from edgekd.device.runtime.pipeline import Pipeline

    m = bundles["int8"]
    images = _val(m)[0]
    with Chain.from_manifest(m) as chain:
        conf = chain.probs(images[:20], m.spec).max(axis=2)[:-1]  # (E - 1, 20) confidences of the shallow exits
    j = int(np.argmin(conf.max(axis=0)))  # a frame no shallow exit is sure of
    reachable = float(np.nextafter(conf[:, j].max(), 2.0))  # a threshold it misses by an ulp: every exit answers
    assert reachable <= 1.0
    early = [{"threshold": reachable, "early_exit_graph": "chain"}, {"threshold": 1.5, "early_exit_graph": "chain"}]
    run_fetches = set()
    for mode, extra in [("early-exit", e) for e in early] + [("exit", {"exit": k}) for k in range(m.num_exits)]:
        with Pipeline(m, mode=mode, **extra) as pipe:
            assert pipe(images[j]).exit == (m.num_exits - 1 if mode == "early-exit" else extra["exit"])
        run_fetches |= set(_by_segment(m, fetched))
        fetched.clear()
    segment_latencies(m, warmup_s=0.0, iterations=1)
    assert set(_by_segment(m, fetched)) == run_fetches


def test_segment_input_hook_sees_every_segments_feed(bundles):
    m = bundles["int8"]
    images, _ = _val(m)
    seen: list[tuple[int, dict[str, np.ndarray]]] = []
    with Chain.from_manifest(m) as chain:
        chain.probs(images, m.spec, batch=32, on_segment_input=lambda i, feed: seen.append((i, dict(feed))))
        batches = list(normalized_batches(images, m.spec, batch=32))
        expected = [chain.run(x) for x in batches]
    n_batches = -(-len(images) // 32)
    assert len(batches) == n_batches and len(seen) == n_batches * m.num_exits
    assert [i for i, _ in seen] == list(range(m.num_exits)) * n_batches
    for b, x in enumerate(batches):
        for i in range(m.num_exits):
            _, feed = seen[b * m.num_exits + i]
            if i == 0:
                assert list(feed) == ["image"]
                np.testing.assert_array_equal(feed["image"], x)  # (B, C, H, W) normalised as the runtime does
            else:
                assert list(feed) == [f"feat{i - 1}"]
                assert feed[f"feat{i - 1}"].shape == (len(x), *m.exits[i - 1].feat_shape)
                np.testing.assert_array_equal(feed[f"feat{i - 1}"], expected[b][f"feat{i - 1}"])


def test_a_chain_of_plain_paths_opens_all_or_nothing_and_reopens(bundles, tmp_path):
    """Export's parity check chains graphs in a temporary directory, without a manifest."""
    m = bundles["exported"]
    paths = [Path(shutil.copy(m.segment_graph(i), tmp_path / f"s{i}.onnx")) for i in range(m.num_exits)]
    x = np.stack([normalize(img, m.spec) for img in _val(m)[0][:5]])  # (5, C, H, W)
    chain = Chain("onnxruntime", paths)
    assert chain.runners == []
    with chain:
        first = chain.run(x)
        opened = list(chain.runners)
    assert chain.runners == [] and not any(r.is_active for r in opened)
    with chain:  # a closed chain opens again
        np.testing.assert_array_equal(chain.run(x)["logits2"], first["logits2"])
    broken = Chain("onnxruntime", [paths[0], tmp_path / "missing.onnx"])
    with pytest.raises(Exception, match="not found"):
        broken.open()
    assert broken.runners == []
    with pytest.raises(ValueError):
        Chain("onnxruntime", [])

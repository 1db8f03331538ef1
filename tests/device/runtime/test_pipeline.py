"""The inference pipeline on the tiny digits student (real ONNX Runtime, built int8/fp32 bundles): early exit,
full vote, anytime exit, smoothing, option errors, and no torch on the device side."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekd.core.early_exit import RUN_MODES, simulate
from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import load_manifest
from edgekd.core.vote import vote, vote_scores
from edgekd.device.chain import Chain, full_probs
from edgekd.device.compiler import build_bundle
from edgekd.device.runtime.pipeline import Pipeline, Prediction


@pytest.fixture(scope="module")
def built(tiny_bundle, tmp_path_factory) -> dict[str, Path]:
    """The tiny student built once per module: int8 and fp32, ONNX Runtime. A 5-point budget: its 400 validation
    images certify early exit there (at the default 0.5 they are too few, and only the last exit would answer)."""
    root = tmp_path_factory.mktemp("runtime_built")
    out = {}
    for precision in ("int8", "fp32"):
        out[precision] = root / precision
        build_bundle(tiny_bundle, precision=precision, out=out[precision], cache_dir=str(root / "cache"),
                     target_drop=5.0)
    return out


def val(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(load_manifest(bundle).file("val_sample")) as f:
        return f["images"], f["labels"]  # (N, 16, 16, 1) uint8, (N,)


def frames_of(images: np.ndarray) -> list[np.ndarray]:
    """Camera-like frames of the val images: BGR mostly, some gray (H, W) and some BGRA."""
    out = []
    for j, img in enumerate(images):
        if j % 5 == 3:
            out.append(img[:, :, 0])
        elif j % 5 == 4:
            out.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA))
        else:
            out.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return out


def chain_probs(bundle: Path, last: int | None = None) -> np.ndarray:
    """(E, N, K) probabilities of the chained stage graphs, computed independently (one image per call)."""
    m = load_manifest(bundle)
    images, _ = val(bundle)
    with Chain.from_manifest(m, last=last) as chain:
        return chain.probs(images, m.spec, batch=1)


def full_graph_probs(bundle: Path) -> np.ndarray:
    m = load_manifest(bundle)
    images, _ = val(bundle)
    return full_probs("onnxruntime", m.full_graph(), images, m.spec, m.num_exits)


def run_all(pipe: Pipeline, frames: list[np.ndarray]) -> list[Prediction]:
    return [pipe(f) for f in frames]


@pytest.mark.parametrize("graph", ["one-call", "chain"])
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_early_exit_equals_simulation_on_the_stage_chain(built, precision, graph):
    bundle = built[precision]
    m = load_manifest(bundle)
    images, labels = val(bundle)
    with Pipeline.from_bundle(bundle, early_exit_graph=graph) as pipe:
        assert pipe.mode == "early-exit" and pipe.thresholds == m.thresholds and pipe.early_exit_graph == graph
        if graph == "chain":  # segment graphs only
            assert [r.path for r in pipe.runners] == [m.segment_graph(i) for i in range(m.num_exits)]
        else:  # one graph for single frames; the chain opens only for a batch
            assert [r.path for r in pipe.runners] == [m.early_exit_graph()]
        preds = run_all(pipe, frames_of(images))
    probs = chain_probs(bundle)
    sim = simulate(probs, m.thresholds, labels=labels)
    exits = np.array([p.exit for p in preds])
    assert np.array_equal(exits, sim.exit_taken)
    assert np.array_equal([p.label for p in preds], sim.pred)
    assert len(np.unique(exits)) >= 2, "the fitted thresholds should spread answers over several exits"
    last = m.num_exits - 1
    conf = probs.max(axis=2)  # (E, N)
    for n, p in enumerate(preds):
        if p.exit < last:
            assert p.confidence >= m.thresholds[p.exit]
        assert all(conf[j, n] < m.thresholds[j] for j in range(p.exit))  # no earlier exit was confident
        np.testing.assert_allclose(p.probs, probs[p.exit, n], rtol=0, atol=1e-6)
        assert p.confidence == pytest.approx(float(probs[p.exit, n].max()), abs=1e-6)
        assert p.class_name == m.spec.class_names[p.label] and p.mode == "early-exit"
        assert set(p.timings) == {"pre", "network", "post"} and all(v >= 0 for v in p.timings.values())
        assert p.timings["network"] > 0
    assert 100 * np.mean(np.array([p.label for p in preds]) == labels) == pytest.approx(sim.accuracy)


def test_predict_batch_early_exits_per_sample_like_single_frames(built):
    bundle = built["int8"]
    images, _ = val(bundle)
    with Pipeline.from_bundle(bundle, early_exit_graph="one-call") as pipe:
        single = run_all(pipe, frames_of(images[:128]))  # one call of the early-exit graph each
        assert len(pipe.runners) == 1
        x = np.stack([pipe.preprocess(img)[0].copy() for img in images[:128]])
        batch = pipe.predict_batch(x)  # the chain, opened for it
        assert len(pipe.runners) == 1 + m_exits(bundle)
    assert [(p.exit, p.label) for p in batch] == [(p.exit, p.label) for p in single]
    for a, b in zip(batch, single):
        assert np.array_equal(a.probs, b.probs)  # the same numbers: same logits, same confidence


def m_exits(bundle: Path) -> int:
    return load_manifest(bundle).num_exits


def test_auto_follows_what_build_measured_on_this_device(built, tmp_path):
    """``auto`` runs one frame on the graph build measured faster here (``build.early_exit``), on the one-call
    graph when the measurement is from another device or missing, and on the chain when the bundle has no
    one-call graph."""
    from edgekd.device.profile.environment import device_name
    from edgekd.device.profile.payoff import stored_payoff_line

    def copy_with(record) -> Path:
        copy = Path(shutil.copytree(built["int8"], tmp_path / f"c{len(list(tmp_path.iterdir()))}"))
        data = json.loads((copy / "manifest.json").read_text())
        data["build"].pop("early_exit", None)
        if record is not None:
            data["build"]["early_exit"] = record
        (copy / "manifest.json").write_text(json.dumps(data))
        return copy

    m = load_manifest(built["int8"])
    recorded = m.build.early_exit
    assert recorded["device"] == device_name("onnxruntime") and recorded["graph"] in ("one-call", "chain")
    with Pipeline.from_bundle(built["int8"]) as pipe:
        assert pipe.early_exit_graph == recorded["graph"]
    here = device_name("onnxruntime")
    for record, expected in [({**recorded, "graph": "chain", "device": here}, "chain"),
                             ({**recorded, "graph": "one-call", "device": here}, "one-call"),
                             ({**recorded, "graph": "chain", "device": "another board"}, "one-call"),
                             (None, "one-call"), ({"graph": 3}, "one-call")]:
        with Pipeline.from_bundle(copy_with(record)) as pipe:
            assert pipe.early_exit_graph == expected, record
            line = stored_payoff_line(pipe.manifest)
        if record is None or "ms" not in record:
            assert line.startswith("early exit not measured against the full graph")
        else:
            assert ("not this device" in line) == (record["device"] != here)
    without = copy_with(None)
    data = json.loads((without / "manifest.json").read_text())
    del data["graphs"]["early_exit"]
    (without / "manifest.json").write_text(json.dumps(data))
    with Pipeline.from_bundle(without) as pipe:
        assert pipe.early_exit_graph == "chain"
    with Pipeline.from_bundle(without, mode="exit", exit=1) as pipe:
        assert pipe.early_exit_graph is None
    with pytest.raises(EdgekdError, match="early_exit_graph applies to mode early-exit only"):
        Pipeline.from_bundle(built["int8"], mode="full-vote", early_exit_graph="chain")
    with pytest.raises(EdgekdError, match="early_exit_graph must be one of"):
        Pipeline.from_bundle(built["int8"], early_exit_graph="fast")


def test_threshold_zero_answers_at_exit_zero_and_above_one_at_the_last(built):
    bundle = built["fp32"]
    images, _ = val(bundle)
    probs = chain_probs(bundle)
    frames = frames_of(images[:80])
    with Pipeline.from_bundle(bundle, threshold=0.0) as pipe:
        assert pipe.thresholds == [0.0] * 3
        preds = run_all(pipe, frames)
    assert all(p.exit == 0 for p in preds)
    assert np.array_equal([p.label for p in preds], probs[0, :80].argmax(axis=1))
    with Pipeline.from_bundle(bundle, threshold=1.5) as pipe:
        preds = run_all(pipe, frames)
    assert all(p.exit == 2 for p in preds)
    assert np.array_equal([p.label for p in preds], probs[2, :80].argmax(axis=1))


def _with_answer(bundle: Path, root: Path, answer: str, rule: str = "soft") -> Path:
    """A copy of ``bundle`` whose manifest says what full-vote answers with (``vote.answer``, ``vote.rule``), so the
    test does not depend on what export chose for the tiny model trained on this machine."""
    copy = root / f"{bundle.name}-{answer}-{rule}"
    shutil.copytree(bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["vote"].update(answer=answer, rule=rule)
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize("precision", ["int8", "fp32"])
@pytest.mark.parametrize("rule", [None, "soft", "hard", "weighted"])
def test_full_vote_equals_the_vote_of_the_full_graph(built, precision, rule, tmp_path):
    bundle = _with_answer(built[precision], tmp_path, "vote", rule or "soft")  # None: the manifest's rule
    m = load_manifest(bundle)
    images, _ = val(bundle)
    with Pipeline.from_bundle(bundle, mode="full-vote", vote=rule) as pipe:
        assert len(pipe.runners) == 1 and pipe.runners[0].path == m.full_graph()
        effective = rule or m.vote_rule
        assert pipe.vote_rule == effective
        # the manifest's in-graph rule is soft: the graph's vote output answers it, the others are voted here
        assert pipe.vote_in_graph == (effective == m.vote.in_graph and effective != "hard")
        preds = run_all(pipe, frames_of(images))
    probs = full_graph_probs(bundle)  # (E, N, K)
    weights = m.vote_weights if effective == "weighted" else None
    expected = vote(probs, effective, weights)
    assert np.array_equal([p.label for p in preds], expected)
    assert all(p.exit == m.num_exits - 1 and p.mode == "full-vote" for p in preds)
    mean_probs = probs.mean(axis=0)
    scores = vote_scores(probs, effective, weights)
    for n, p in enumerate(preds):
        if effective == "hard":  # confidence: mean probability of the winning class
            assert p.confidence == pytest.approx(float(mean_probs[n, p.label]), abs=1e-5)
        else:
            assert p.confidence == pytest.approx(float(scores[n].max()), abs=1e-5)
        assert p.probs.shape == (m.spec.num_classes,) and p.probs.sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_full_vote_answers_with_the_deepest_exit_when_the_manifest_says_so(built, precision, tmp_path):
    bundle = _with_answer(built[precision], tmp_path, "deepest")
    images, _ = val(bundle)
    with Pipeline.from_bundle(bundle, mode="full-vote") as pipe:
        assert pipe.vote_rule is None and not pipe.vote_in_graph
        preds = run_all(pipe, frames_of(images))
    probs = full_graph_probs(bundle)  # (E, N, K)
    assert np.array_equal([p.label for p in preds], probs[-1].argmax(axis=1))
    assert all(p.confidence == pytest.approx(float(probs[-1, n].max()), abs=1e-5) for n, p in enumerate(preds))
    with Pipeline.from_bundle(bundle, mode="full-vote", vote="hard") as pipe:  # an explicit rule still votes
        assert pipe.vote_rule == "hard"


def test_hard_vote_differs_from_soft_where_the_exits_disagree(built):
    """Guards against a 'hard' that silently returns the soft vote: on samples where the two rules disagree (found
    independently), the pipeline follows the hard rule."""
    bundle = built["int8"]
    images, _ = val(bundle)
    rng = np.random.default_rng(0)
    # make disagreement likely: heavy noise frames (the exits disagree more off-distribution)
    noisy = [np.clip(img.astype(np.int16) + rng.integers(-90, 90, img.shape), 0, 255).astype(np.uint8)
             for img in images[:200]]
    m = load_manifest(bundle)
    nprobs = full_probs("onnxruntime", m.full_graph(), np.stack(noisy), m.spec, m.num_exits)
    with Pipeline.from_bundle(bundle, mode="full-vote", vote="hard") as pipe:
        got = np.array([pipe(img[:, :, 0]).label for img in noisy])
    assert np.array_equal(got, vote(nprobs, "hard"))
    differs = vote(nprobs, "hard") != vote(nprobs, "soft")  # measured: 4 of 200 (int8), and 1 of 400 clean images
    assert differs.any(), "no sample where hard and soft differ: the test would prove nothing"


@pytest.mark.parametrize("k", [0, 1, 2])
def test_exit_mode_answers_from_exit_k_with_stages_0_to_k(built, k):
    bundle = built["int8"]
    images, _ = val(bundle)
    probs = chain_probs(bundle, last=k)
    with Pipeline.from_bundle(bundle, mode="exit", exit=k) as pipe:
        assert len(pipe.runners) == k + 1
        preds = run_all(pipe, frames_of(images[:100]))
    assert all(p.exit == k and p.mode == "exit" for p in preds)
    assert np.array_equal([p.label for p in preds], probs[k, :100].argmax(axis=1))
    for n, p in enumerate(preds):
        np.testing.assert_allclose(p.probs, probs[k, n], atol=1e-6)


def _two_digits(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two val images of different classes that the full vote answers confidently and correctly."""
    images, labels = val(bundle)
    probs = full_graph_probs(bundle).mean(axis=0)
    ok = (probs.argmax(axis=1) == labels) & (probs.max(axis=1) > 0.9)
    first = int(np.flatnonzero(ok)[0])
    second = int(np.flatnonzero(ok & (labels != labels[first]))[0])
    return images[first], images[second]


def test_smoothing_is_an_ema_of_the_probabilities_and_lags_a_switch(built):
    bundle = built["fp32"]
    a, b = _two_digits(bundle)
    sequence = [a] * 6 + [b] * 12
    w = 0.8
    with Pipeline.from_bundle(bundle, mode="full-vote") as raw:
        raw_preds = [raw(img[:, :, 0]) for img in sequence]
    with Pipeline.from_bundle(bundle, mode="full-vote", smoothing=w) as smooth:
        smooth_preds = [smooth(img[:, :, 0]) for img in sequence]
        # independent EMA of the unsmoothed probabilities
        ema = raw_preds[0].probs.astype(np.float64)
        for j, (r, s) in enumerate(zip(raw_preds, smooth_preds)):
            if j:
                ema = w * ema + (1 - w) * r.probs
            np.testing.assert_allclose(s.probs, ema, atol=1e-5)
            assert s.label == int(ema.argmax()) and s.confidence == pytest.approx(float(ema.max()), abs=1e-5)
        label_a, label_b = raw_preds[0].label, raw_preds[-1].label
        assert label_a != label_b
        assert [p.label for p in raw_preds] == [label_a] * 6 + [label_b] * 12  # no smoothing: switches at once
        smoothed = [p.label for p in smooth_preds]
        assert smoothed[:7] == [label_a] * 7  # the EMA still answers a on the first frame of b …
        assert smoothed[-1] == label_b  # … and follows b later
        switch = smoothed.index(label_b)
        assert 7 <= switch < len(sequence) and smoothed[switch:] == [label_b] * (len(sequence) - switch)
        # reset() forgets the past: the next frame answers on its own
        smooth.reset()
        assert smooth(a[:, :, 0]).label == label_a


def test_smoothing_in_early_exit_mode_smooths_the_answering_exits_probabilities(built):
    bundle = built["int8"]
    images, _ = val(bundle)
    frames = frames_of(images[:30])
    with Pipeline.from_bundle(bundle) as raw, Pipeline.from_bundle(bundle, smoothing=0.5) as smooth:
        ema = None
        for f in frames:
            r, s = raw(f), smooth(f)
            assert s.exit == r.exit  # decisions use each frame's own confidence
            ema = r.probs.astype(np.float64) if ema is None else 0.5 * ema + 0.5 * r.probs
            np.testing.assert_allclose(s.probs, ema, atol=1e-5)
            assert s.label == int(ema.argmax())


def test_exported_bundle_runs_with_onnxruntime_and_every_frame_kind(tiny_bundle):
    m = load_manifest(tiny_bundle)
    assert m.backend == "onnx"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (33, 47, 3), dtype=np.uint8), rng.integers(0, 256, (7, 9), dtype=np.uint8),
              rng.integers(0, 256, (480, 640, 4), dtype=np.uint8), rng.integers(0, 256, (16, 16, 1), dtype=np.uint8),
              np.zeros((50, 31, 3), dtype=np.uint8)[:, ::-1]]
    for mode, extra in [("early-exit", {}), ("full-vote", {}), ("exit", {"exit": 1})]:
        with Pipeline.from_bundle(tiny_bundle, mode=mode, **extra) as pipe:
            assert pipe.backend == "onnxruntime" and pipe.spec == m.spec and pipe.manifest.root == m.root
            for f in frames:
                p = pipe(f)
                assert 0 <= p.label < m.spec.num_classes and 0.0 <= p.confidence <= 1.0 + 1e-6
                assert isinstance(p.label, int) and isinstance(p.confidence, float) and isinstance(p.exit, int)


def test_close_is_idempotent_and_a_closed_pipeline_refuses_frames(built):
    pipe = Pipeline.from_bundle(built["fp32"])
    runners = list(pipe.runners)
    with pipe:
        pipe(np.zeros((16, 16), dtype=np.uint8))
    assert not any(r.is_active for r in runners) and pipe.runners == []
    pipe.close()
    with pytest.raises(EdgekdError, match="closed"):
        pipe(np.zeros((16, 16), dtype=np.uint8))


@pytest.mark.parametrize("options,match", [
    (dict(mode="fast"), "unknown mode"),
    (dict(threshold=-0.1), "threshold"),
    (dict(threshold=float("nan")), "threshold"),
    (dict(threshold="0.5"), "threshold"),
    (dict(mode="full-vote", threshold=0.5), "threshold"),
    (dict(mode="exit"), "needs the exit"),
    (dict(mode="exit", exit=3), "exit must be"),
    (dict(mode="exit", exit=-1), "exit must be"),
    (dict(mode="exit", exit=1.5), "exit must be"),
    (dict(mode="exit", exit=float("inf")), "exit must be"),
    (dict(mode="exit", exit=True), "exit must be"),
    (dict(exit=1), "mode exit only"),
    (dict(mode="full-vote", vote="majority"), "unknown vote rule"),
    (dict(vote="hard"), "full-vote only"),
    (dict(smoothing=0.0), "smoothing"),
    (dict(smoothing=1.0), "smoothing"),
    (dict(smoothing=-0.5), "smoothing"),
])
def test_bad_options_raise_one_line_errors(built, options, match):
    with pytest.raises(EdgekdError, match=match) as info:
        Pipeline.from_bundle(built["fp32"], **options)
    assert "\n" not in str(info.value)


#: The committed fixture bundle: its vote rule is fixed (soft, computed in the graph), unlike the tiny bundle
#: trained in the session, whose rule is whatever export found best on this machine's training run.
FIXTURE_BUNDLE = Path(__file__).resolve().parents[2] / "fixtures" / "bundle-abf6d4b"


def test_modes_and_missing_bundle_and_weighted_vote_without_weights(tmp_path):
    assert RUN_MODES == ("early-exit", "full-vote", "exit")
    with pytest.raises(EdgekdError, match="not found"):
        Pipeline.from_bundle(tmp_path / "nowhere")
    copy = tmp_path / "noweights"
    shutil.copytree(FIXTURE_BUNDLE, copy)
    data = json.loads((copy / "manifest.json").read_text())
    assert data["vote"]["rule"] == data["vote"]["in_graph"] == "soft"  # what the test relies on
    data["vote"]["weights"] = None
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EdgekdError, match="weighted vote needs"):
        Pipeline.from_bundle(copy, mode="full-vote", vote="weighted")
    with Pipeline.from_bundle(copy, mode="full-vote", vote="soft") as pipe:  # soft still runs on the graph's vote
        assert pipe.vote_in_graph
        pipe(np.zeros((16, 16), dtype=np.uint8))


def test_pipeline_never_imports_torch(tiny_bundle):
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from edgekd.device.runtime.pipeline import Pipeline\n"
        "from edgekd.device.runtime.preprocess import Preprocessor\n"
        "frame = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)\n"
        "for kw in ({}, {'mode': 'full-vote', 'vote': 'hard'}, {'mode': 'exit', 'exit': 0}, {'smoothing': 0.5}):\n"
        f"    with Pipeline.from_bundle({str(tiny_bundle)!r}, **kw) as p:\n"
        "        p(frame); p(frame)\n"
        "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('LEAKED' if leaked else 'CLEAN', leaked[:5])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("CLEAN"), proc.stdout

"""Defect 1 of issue 10: every caller that batches many images stays within the batch range its runners declare.

A TensorRT engine built for an orin-nano target takes batches of 1..8; verification, accuracy and throughput used to
feed 64 and every TensorRT build aborted. ``SmallBatchRunner`` is a real ONNX Runtime runner that declares such a
range (and so refuses a larger batch exactly as the TensorRT runner does); it is registered as a backend so the
real build, chain, pipeline and profile code paths pick it by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import load_manifest
from edgekd.device import runners
from edgekd.device.chain import Chain, full_probs, within_range
from edgekd.device.profile.latency import segment_latencies
from edgekd.device.runners.onnxruntime import OnnxRuntimeRunner
from edgekd.device.runtime.pipeline import Pipeline

MAX_BATCH = 8


class SmallBatchRunner(OnnxRuntimeRunner):
    """ONNX Runtime, but built "for batches 1..8" like an orin-nano engine; records every batch it is fed."""

    backend = "small-batch"
    seen: list[int] = []

    @property
    def batch_range(self) -> tuple[int, int | None]:
        return (1, MAX_BATCH)

    def _infer(self, feed, outputs):
        SmallBatchRunner.seen.append(len(next(iter(feed.values()))))
        return super()._infer(feed, outputs)


@pytest.fixture
def small_batch_backend(monkeypatch):
    monkeypatch.setitem(runners.IMPLEMENTATIONS, "small-batch", (__name__, "SmallBatchRunner"))
    SmallBatchRunner.seen = []
    return "small-batch"


def _val(m):
    with np.load(m.file("val_sample")) as f:
        return f["images"], f["labels"]


def test_the_base_runner_refuses_a_batch_outside_its_range(tiny_bundle, small_batch_backend):
    m = load_manifest(tiny_bundle)
    with runners.make_runner(small_batch_backend, m.full_graph()) as r:
        x = np.zeros((MAX_BATCH + 1, *m.spec.shape), dtype=np.float32)
        with pytest.raises(EdgekdError, match=f"batch of {MAX_BATCH + 1} is outside the 1..{MAX_BATCH}"):
            r.infer({"image": x})
        assert r.infer({"image": x[:MAX_BATCH]})["logits0"].shape[0] == MAX_BATCH


def test_whole_dataset_helpers_batch_within_the_range(tiny_bundle, small_batch_backend):
    m = load_manifest(tiny_bundle)
    images, _ = _val(m)  # 400 images; the helpers default to batches of 64
    p_full = full_probs(small_batch_backend, m.full_graph(), images, m.spec, m.num_exits)
    with Chain(small_batch_backend, [m.segment_graph(i) for i in range(m.num_exits)]) as chain:
        p_chain = chain.probs(images, m.spec)
    assert p_full.shape == p_chain.shape == (m.num_exits, len(images), m.spec.num_classes)
    assert max(SmallBatchRunner.seen) == MAX_BATCH and sum(SmallBatchRunner.seen) == len(images) * (1 + m.num_exits)
    # the same numbers as ONNX Runtime at batch 64
    assert np.allclose(p_full, full_probs("onnxruntime", m.full_graph(), images, m.spec, m.num_exits), atol=1e-5)


def test_pipeline_batches_and_profile_throughput_stay_within_the_range(tiny_bundle, small_batch_backend, monkeypatch):
    m = load_manifest(tiny_bundle)
    monkeypatch.setattr(type(m), "runner_backend", property(lambda self: small_batch_backend))
    images, _ = _val(m)
    with Pipeline(m, mode="early-exit", threshold=0.0) as pipe:
        x = np.stack([pipe.prepare(img)[0][0] for img in images[:20]])  # (20, C, H, W)
        preds = pipe.predict_batch(x)
    assert len(preds) == 20 and max(SmallBatchRunner.seen) <= MAX_BATCH
    SmallBatchRunner.seen = []
    timing = segment_latencies(m, batch=64, iterations=2, warmup_s=0.0)
    assert timing["batch"] == MAX_BATCH and "--batch 64" in timing["batch_note"]
    assert timing["full"]["batched"]["batch"] == MAX_BATCH and max(SmallBatchRunner.seen) == MAX_BATCH


def test_within_range():
    class Fixed:
        def __init__(self, hi):
            self.batch_range = (1, hi)

    assert within_range(64, [Fixed(None)]) == 64
    assert within_range(64, [Fixed(None), Fixed(8), Fixed(4)]) == 4
    assert within_range(3, [Fixed(8)]) == 3

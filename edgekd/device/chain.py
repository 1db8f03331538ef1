"""The graph chain: a bundle's segment graphs run one after another, ``feat{i}`` of segment i feeding segment i + 1.

Build (verification, threshold fitting, calibration feeds), run (early exit, fixed exit), profile (accuracy,
latency) and export's parity check all chain segments through this one module, so they fetch the same outputs
and decide early exit the same way. Segment i is asked only for ``logits{i}``, plus ``feat{i}`` when a later
segment runs in the same call, plus ``conf{i}`` when the chain was opened with ``conf=True``: what ``edgekd run``
fetches is what profile times and what build fits thresholds on.

Feature maps stay where the backend computed them: segment i is asked to keep ``feat{i}`` on the device
(``keep_on_device``; TensorRT returns a :class:`~edgekd.device.cuda.DeviceArray` that the next segment's runner
binds directly, on the one stream the chain's runners share; ONNX Runtime ignores it and returns numpy). Only the
logits the chain decides on come to the host. ``feat`` is read back only when someone asks: rows of a partial
batch going on after some exited early, a segment-input hook, or a caller of :meth:`Chain.run` reading it.

Confidence for early exit is the max of float32 ``softmax(logits{i})`` computed here rather than the graph's
``conf{i}`` (the same value up to rounding and, in int8 graphs, quantization), so a sample whose confidence sits
exactly on a threshold is decided at run time as build decided it.

Torch-free: numpy, the runners and :mod:`edgekd.core` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

from edgekd.core.manifest import Manifest, segment_input_name
from edgekd.core.preprocess import normalize
from edgekd.core.spec import InputSpec
from edgekd.core.vote import softmax
from edgekd.device.runners import Runner, make_runner

# typing's Callable and Dict: this alias is evaluated at import, and Python 3.8 (JetPack 5.1) cannot subscript
# collections.abc.Callable or dict
SegmentHook = Callable[[int, Dict[str, np.ndarray]], None]  # (segment index, its input feed)


def within_range(batch: int, runners: Sequence[Runner]) -> int:
    """``batch`` reduced to the largest batch every one of ``runners`` accepts (their :attr:`Runner.batch_range`):
    a TensorRT engine built for batches up to 8 is fed at most 8 images at a time, whatever the caller asked."""
    limits = [r.batch_range[1] for r in runners if r.batch_range[1] is not None]
    return max(1, min([batch, *limits]))


def normalized_batches(images: np.ndarray, spec: InputSpec, batch: int = 64) -> Iterator[np.ndarray]:
    """(N, H, W, C) uint8 at spec size → (B, C, H, W) float32 batches, normalised as the runtime does."""
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]  # (B, H, W, C)
        out = np.empty((len(chunk), *spec.shape), dtype=np.float32)  # (B, C, H, W)
        for j, img in enumerate(chunk):
            normalize(img, spec, out=out[j])
        yield out


def full_probs(backend: str, path: str | Path, images: np.ndarray, spec: InputSpec, n_exits: int, *,
               batch: int = 64, **options: Any) -> np.ndarray:
    """(E, N, K) float32 per-exit probabilities of the full graph at ``path`` on (N, H, W, C) uint8 ``images``
    (it is asked for the ``logits{i}`` only)."""
    names = [f"logits{i}" for i in range(n_exits)]
    with make_runner(backend, path, **options) as runner:
        batch = within_range(batch, [runner])
        chunks = [np.stack([softmax(out[name].astype(np.float32)) for name in names])  # (E, B, K)
                  for out in (runner.infer({"image": x}, names) for x in normalized_batches(images, spec, batch))]
    return np.concatenate(chunks, axis=1)


@dataclass
class ExitBatch:
    """Early-exit answers for N inputs."""

    probs: np.ndarray  # (N, K) float32 softmax of the answering exit's logits
    exits: np.ndarray  # (N,) int64 index of the exit that answered
    network_ms: float  # time spent inside runner calls


class Chain:
    """Runners over segment graphs 0..len(paths)-1, opened together (``with Chain(...) as chain`` or ``open()``).

    ``paths`` are segment graphs (or engines) in order; ``options`` go to every runner. ``conf=True`` also fetches
    ``conf{i}`` from every segment (export's parity check compares it; nothing else needs it).
    """

    def __init__(self, backend: str, paths: Sequence[str | Path], *, conf: bool = False, **options: Any):
        if not paths:
            raise ValueError("a chain needs at least one segment graph")
        self.backend = backend
        self.paths = [Path(p) for p in paths]
        self.conf = conf
        self.options = options
        self.runners: list[Runner] = []  # active runners, one per path while open; empty when closed

    @classmethod
    def from_manifest(cls, manifest: Manifest, *, last: int | None = None, conf: bool = False,
                      **options: Any) -> Chain:
        """The chain of ``manifest``'s segments 0..``last`` (default: all) on the bundle's own runner backend."""
        last = manifest.num_exits - 1 if last is None else last
        return cls(manifest.runner_backend, [manifest.segment_graph(i) for i in range(last + 1)], conf=conf,
                   **options)

    # lifecycle -------------------------------------------------------------------------------------------------
    def open(self) -> Chain:
        """Activate one runner per segment (all or none: a failure closes those already open); each follows the
        previous one (a TensorRT runner shares its stream and binds its device-resident ``feat``)."""
        if not self.runners:
            try:
                for path in self.paths:
                    follows = self.runners[-1] if self.runners else None
                    self.runners.append(make_runner(self.backend, path, **self.options).activate(follows=follows))
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        """Release every runner (idempotent)."""
        while self.runners:
            self.runners.pop().deactivate()

    def __enter__(self) -> Chain:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.paths)

    # one segment -----------------------------------------------------------------------------------------------
    def outputs(self, i: int, last: int | None = None) -> list[str]:
        """What segment ``i`` is asked for when segments 0..``last`` (default: all) run."""
        last = len(self) - 1 if last is None else last
        return ([f"feat{i}"] if i < last else []) + [f"logits{i}"] + ([f"conf{i}"] if self.conf else [])

    def segment(self, i: int, feed: dict[str, Any], last: int | None = None) -> dict[str, Any]:
        """Run segment ``i`` on ``feed`` ({``image`` or ``feat{i-1}``: array}) and return :meth:`outputs`;
        ``feat{i}`` may come back device-resident (``np.asarray`` reads it)."""
        return self.runners[i].infer(feed, self.outputs(i, last), keep_on_device=[f"feat{i}"])

    # whole batches ---------------------------------------------------------------------------------------------
    def run(self, x: np.ndarray, *, last: int | None = None,
            on_segment_input: SegmentHook | None = None) -> dict[str, Any]:
        """Segments 0..``last`` (default: all) on one (N, C, H, W) float32 batch; every fetched output by name
        (``feat{i}`` possibly device-resident, read with ``np.asarray`` before running the chain again).

        ``on_segment_input(i, feed)`` sees each segment's input feed, on the host, before it runs (build collects
        calibration feeds for the segment graphs with it).
        """
        last = len(self) - 1 if last is None else last
        feed: dict[str, np.ndarray] = {"image": x}
        out: dict[str, np.ndarray] = {}
        for i in range(last + 1):
            if on_segment_input is not None:  # the hook may keep what it sees: give it host arrays
                on_segment_input(i, {name: np.asarray(value) for name, value in feed.items()})
            out.update(self.segment(i, feed, last))
            if i < last:
                feed = {segment_input_name(i + 1): out[f"feat{i}"]}
        return out

    def early_exit(self, x: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> ExitBatch:
        """Per-sample early exit on one (N, C, H, W) float32 batch: a sample answers at the first exit whose
        confidence (max softmax probability) reaches ``thresholds[i]``, the chain's last segment always; only the
        samples still without an answer go on to the next segment."""
        n, last = len(x), len(self) - 1
        probs: np.ndarray | None = None  # (N, K), allocated once K is known
        exits = np.empty(n, dtype=np.int64)  # (N,)
        pending = np.arange(n)  # rows of x still without an answer
        feed: dict[str, np.ndarray] = {"image": x}
        network = 0.0
        for i in range(last + 1):
            t = time.perf_counter()
            out = self.segment(i, feed)
            network += time.perf_counter() - t
            p = softmax(out[f"logits{i}"].astype(np.float32, copy=False))  # (M, K)
            if probs is None:
                probs = np.empty((n, p.shape[1]), dtype=np.float32)
            done = np.ones(len(p), dtype=bool) if i == last else p.max(axis=1) >= thresholds[i]  # (M,)
            if done.all():
                probs[pending], exits[pending] = p, i
                break
            feat = out[f"feat{i}"]  # (M, C_i, H_i, W_i), on the device with TensorRT: the next segment binds it
            if done.any():  # only a partial batch needs feat on the host, for the rows that go on
                probs[pending[done]], exits[pending[done]] = p[done], i
                pending = pending[~done]
                feat = np.ascontiguousarray(np.asarray(feat)[~done])
            feed = {segment_input_name(i + 1): feat}
        assert probs is not None
        return ExitBatch(probs, exits, network * 1e3)

    def probs(self, images: np.ndarray, spec: InputSpec, *, batch: int = 64,
              on_segment_input: SegmentHook | None = None) -> np.ndarray:
        """(E, N, K) float32 per-exit probabilities of the whole chain on (N, H, W, C) uint8 ``images``, normalised
        in batches of ``batch`` (at most what every segment accepts); ``on_segment_input`` as in :meth:`run`."""
        chunks = []
        for x in normalized_batches(images, spec, within_range(batch, self.runners)):
            out = self.run(x, on_segment_input=on_segment_input)
            chunks.append(np.stack([softmax(out[f"logits{i}"].astype(np.float32)) for i in range(len(self))]))
        return np.concatenate(chunks, axis=1)  # (E, N, K)

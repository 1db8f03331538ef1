"""The graph chain: a bundle's segment graphs run one after another, ``feat{i}`` of segment i feeding segment i + 1.

Build (verification, threshold fitting, calibration feeds), run (early exit, fixed exit), profile (accuracy,
latency) and export's parity check all chain segments through this one module, so they fetch the same outputs
and decide early exit the same way. Segment i is asked for ``feat{i}`` when a later segment runs in the same call,
and for ``logits{i}`` and ``conf{i}`` when exit i may answer: the chain's last exit always, an earlier one unless its
threshold is above any confidence (``--mode exit``, a threshold above 1), whose answer nobody would read. What
``edgekd run`` fetches is what profile times and what build fits thresholds on.

Feature maps stay where the backend computed them: segment i is asked to keep ``feat{i}`` on the device
(``keep_on_device``; TensorRT returns a :class:`~edgekd.device.cuda.DeviceArray` that the next segment's runner
binds directly, on the one stream the chain's runners share; ONNX Runtime ignores it and returns numpy). Only the
outputs the chain decides and answers on come to the host. ``feat`` is read back only when someone asks: rows of a
partial batch going on after some exited early, a segment-input hook, or a caller of :meth:`Chain.run` reading it.

Early exit decides on the graph's own confidence ``conf{i}`` (the float32 max of the segment's ``Softmax``, never
quantized), the number the one-call early-exit graph decides on too
(:mod:`edgekd.device.compiler.early_exit_graph`); the host's numpy softmax of ``logits{i}`` may differ from it in
the last bit. The per-exit probabilities the chain returns (:func:`exit_probs`) are the host softmax with its largest
entry set to ``conf{i}``, so whoever decides on their maximum (build's certification, profile's sweep, the
simulation) decides on exactly the numbers ``edgekd run`` decides on, a threshold placed at an observed confidence
included.

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


def can_answer(threshold: float) -> bool:
    """Whether a confidence can reach ``threshold``: a softmax maximum is at most 1, so a threshold above 1 (or
    infinite) never lets the exit answer, and its logits need not be fetched."""
    return bool(threshold <= 1.0)


def float32_thresholds(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """(E,) float32 thresholds for a graph that compares in float32 (the one-call early-exit graph's ``thresholds``
    input): each the smallest float32 at or above the given value (infinity above float32's range), so that for
    every float32 confidence ``c``, ``c >= out[i]`` exactly when ``c >= thresholds[i]`` in float64, as the chain and
    the simulation compare. Rounding to nearest instead would let a confidence just below a threshold answer in the
    graph and not in the chain."""
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or np.isnan(t).any():
        raise ValueError(f"thresholds must be a list of numbers, got {thresholds!r}")
    with np.errstate(over="ignore"):
        out = t.astype(np.float32)
    low = out.astype(np.float64) < t
    out[low] = np.nextafter(out[low], np.float32(np.inf))
    return out


def exit_probs(logits: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """(M, K) float32 probabilities of one exit: the host's softmax of ``logits`` (M, K), its largest entry replaced by
    the graph's confidence ``conf`` (M,) and every other entry kept strictly below it, so that the row maximum is
    exactly the confidence early exit decides on and the argmax is the softmax's (on ONNX Runtime the two differ in
    the last bit at most; a TensorRT engine may compute its Softmax in FP16)."""
    p = softmax(np.asarray(logits).astype(np.float32, copy=False))
    c = np.asarray(conf).astype(np.float32, copy=False).reshape(-1)
    rows, top = np.arange(len(p)), p.argmax(axis=1)
    np.minimum(p, np.nextafter(c, np.float32(-np.inf))[:, None], out=p)
    p[rows, top] = c
    return p


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

    probs: np.ndarray  # (N, K) float32 probabilities of the answering exit (:func:`exit_probs`)
    exits: np.ndarray  # (N,) int64 index of the exit that answered
    network_ms: float  # time spent inside runner calls


class Chain:
    """Runners over segment graphs 0..len(paths)-1, opened together (``with Chain(...) as chain`` or ``open()``).

    ``paths`` are segment graphs (or engines) in order; ``options`` go to every runner.
    """

    def __init__(self, backend: str, paths: Sequence[str | Path], **options: Any):
        if not paths:
            raise ValueError("a chain needs at least one segment graph")
        self.backend = backend
        self.paths = [Path(p) for p in paths]
        self.options = options
        self.runners: list[Runner] = []  # active runners, one per path while open; empty when closed

    @classmethod
    def from_manifest(cls, manifest: Manifest, *, last: int | None = None, **options: Any) -> Chain:
        """The chain of ``manifest``'s segments 0..``last`` (default: all) on the bundle's own runner backend."""
        last = manifest.num_exits - 1 if last is None else last
        return cls(manifest.runner_backend, [manifest.segment_graph(i) for i in range(last + 1)], **options)

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
    def outputs(self, i: int, last: int | None = None, *, answers: bool = True) -> list[str]:
        """What segment ``i`` is asked for when segments 0..``last`` (default: all) run: ``feat{i}`` when a later
        segment runs, ``logits{i}`` and ``conf{i}`` when exit ``i`` may answer (``answers``; the last always)."""
        last = len(self) - 1 if last is None else last
        head = [f"logits{i}", f"conf{i}"] if answers or i == last else []
        return ([f"feat{i}"] if i < last else []) + head

    def segment(self, i: int, feed: dict[str, Any], last: int | None = None, *, answers: bool = True
                ) -> dict[str, Any]:
        """Run segment ``i`` on ``feed`` ({``image`` or ``feat{i-1}``: array}) and return :meth:`outputs`;
        ``feat{i}`` may come back device-resident (``np.asarray`` reads it)."""
        return self.runners[i].infer(feed, self.outputs(i, last, answers=answers), keep_on_device=[f"feat{i}"])

    # whole batches ---------------------------------------------------------------------------------------------
    def run(self, x: np.ndarray, *, last: int | None = None, every_exit: bool = True,
            on_segment_input: SegmentHook | None = None) -> dict[str, Any]:
        """Segments 0..``last`` (default: all) on one (N, C, H, W) float32 batch; every fetched output by name
        (``feat{i}`` possibly device-resident, read with ``np.asarray`` before running the chain again). Every exit
        answers, or with ``every_exit=False`` only the last (what ``edgekd run --mode exit`` fetches).

        ``on_segment_input(i, feed)`` sees each segment's input feed, on the host, before it runs (build collects
        calibration feeds for the segment graphs with it).
        """
        last = len(self) - 1 if last is None else last
        feed: dict[str, np.ndarray] = {"image": x}
        out: dict[str, np.ndarray] = {}
        for i in range(last + 1):
            if on_segment_input is not None:  # the hook may keep what it sees: give it host arrays
                on_segment_input(i, {name: np.asarray(value) for name, value in feed.items()})
            out.update(self.segment(i, feed, last, answers=every_exit))
            if i < last:
                feed = {segment_input_name(i + 1): out[f"feat{i}"]}
        return out

    def early_exit(self, x: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> ExitBatch:
        """Per-sample early exit on one (N, C, H, W) float32 batch: a sample answers at the first exit whose
        confidence (the graph's ``conf{i}``) reaches ``thresholds[i]``, the chain's last segment always; only the
        samples still without an answer go on to the next segment. An exit whose threshold no confidence reaches
        (:func:`can_answer`) is asked for ``feat{i}`` only."""
        n, last = len(x), len(self) - 1
        probs: np.ndarray | None = None  # (N, K), allocated once K is known
        exits = np.empty(n, dtype=np.int64)  # (N,)
        pending = np.arange(n)  # rows of x still without an answer
        feed: dict[str, np.ndarray] = {"image": x}
        network = 0.0
        for i in range(last + 1):
            answers = i == last or can_answer(thresholds[i])
            t = time.perf_counter()
            out = self.segment(i, feed, answers=answers)
            network += time.perf_counter() - t
            if not answers:
                feed = {segment_input_name(i + 1): out[f"feat{i}"]}
                continue
            conf = np.asarray(out[f"conf{i}"]).reshape(-1)  # (M,) float32
            # compared in float64, as the simulation compares (a float32 comparison would round the threshold)
            done = np.ones(len(conf), dtype=bool) if i == last else conf.astype(np.float64) >= float(thresholds[i])
            if not done.any():
                feed = {segment_input_name(i + 1): out[f"feat{i}"]}
                continue
            p = exit_probs(out[f"logits{i}"], conf)  # (M, K)
            if probs is None:
                probs = np.empty((n, p.shape[1]), dtype=np.float32)
            if done.all():
                probs[pending], exits[pending] = p, i
                break
            # a partial batch: the rows that go on need feat on the host (with TensorRT it lives on the GPU)
            probs[pending[done]], exits[pending[done]] = p[done], i
            pending = pending[~done]
            feed = {segment_input_name(i + 1): np.ascontiguousarray(np.asarray(out[f"feat{i}"])[~done])}
        assert probs is not None
        return ExitBatch(probs, exits, network * 1e3)

    def probs(self, images: np.ndarray, spec: InputSpec, *, batch: int = 64,
              on_segment_input: SegmentHook | None = None) -> np.ndarray:
        """(E, N, K) float32 per-exit probabilities (:func:`exit_probs`: their maxima are the confidences early exit
        decides on) of the whole chain on (N, H, W, C) uint8 ``images``, normalised in batches of ``batch`` (at
        most what every segment accepts); ``on_segment_input`` as in :meth:`run`."""
        chunks = []
        for x in normalized_batches(images, spec, within_range(batch, self.runners)):
            out = self.run(x, on_segment_input=on_segment_input)
            chunks.append(np.stack([exit_probs(out[f"logits{i}"], out[f"conf{i}"]) for i in range(len(self))]))
        return np.concatenate(chunks, axis=1)  # (E, N, K)

"""The inference pipeline: one camera frame → one :class:`Prediction`, from a bundle's manifest alone.

Three modes:

* ``early-exit`` (default): run stage 0 on the image; if the exit's confidence (max softmax probability) reaches
  its threshold, answer there, otherwise feed ``feat{i}`` to stage ``i + 1``; the last exit always answers.
  Thresholds come from the manifest (fitted by ``edgekd build``) or one ``threshold`` for every exit: 0 answers
  everything at exit 0, anything above 1 answers everything at the last exit. Only the stage graphs are opened.
* ``full-vote``: one call of the full graph and the ensemble vote of all exits. The rule is the manifest's unless
  ``vote`` overrides it. When it equals the rule the graph computes (``vote.in_graph``: soft, or weighted with the
  manifest weights) the graph's ``vote`` output is the answer; otherwise (hard, or another rule) the vote is
  computed here from the ``logits{i}`` outputs with :func:`edgekd.core.vote.vote_scores`. ``exit`` of the
  prediction is the last exit's index and ``mode`` is ``"full-vote"``.
* ``exit`` with ``exit=K``: run stages 0..K and answer from exit K (anytime inference at a fixed budget).

Confidence is computed on the host from ``softmax(logits{i})`` in float32 — exactly the numbers ``edgekd build``
fitted the thresholds on (:func:`edgekd.device.compiler.evaluate.run_chain`) — rather than read from ``conf{i}``, which is
the same value up to rounding (and quantization, in int8 graphs), so a frame whose confidence sits exactly on a
threshold is decided as the build decided it.

Temporal smoothing (``smoothing=W``, 0 < W < 1): an exponential moving average of the answer's probability vector
over consecutive frames, ``p ← W·p_prev + (1 − W)·p_new`` (like jetson-inference's temporal smoothing of
classification results); the label is the argmax of the smoothed vector and the confidence its value there. The
first frame (and the first after :meth:`Pipeline.reset`) starts the average. A larger W is steadier and slower to
follow a change of scene. Early-exit decisions are made on each frame's own confidence; smoothing only shapes the
answer. For the hard vote the smoothed vector is the (normalised) vote scores, and ``probs``/``confidence`` are
the smoothed mean of the exits' probabilities.

Timings per frame, in milliseconds (``time.perf_counter``): ``pre`` (colour, resize, normalise), ``network`` (the
runner calls only), ``post`` (softmax, threshold checks, vote, argmax, smoothing).

The device side never imports torch: this module needs numpy, OpenCV and the chosen runner's backend only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import Manifest, load_manifest
from edgekd.core.vote import VOTE_RULES, softmax, vote_scores
from edgekd.device.runners import Runner, make_runner
from edgekd.device.runtime.preprocess import Preprocessor

MODES = ("early-exit", "full-vote", "exit")
RUNNER_BACKEND = {"onnx": "onnxruntime", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}


@dataclass
class Prediction:
    """One answer. ``exit``: the exit that answered (full-vote: the last exit's index, and ``mode`` says vote)."""

    label: int
    class_name: str
    confidence: float
    exit: int
    probs: np.ndarray  # (K,) probabilities used for the answer (after smoothing)
    timings: dict[str, float] = field(default_factory=dict)  # "pre", "network", "post" in milliseconds
    mode: str = "early-exit"


@dataclass
class _Batch:
    """Network answers for N inputs, before smoothing."""

    scores: np.ndarray  # (N, K) argmax = label (probabilities, or hard-vote scores)
    probs: np.ndarray  # (N, K) probabilities (for the hard vote: mean of the exits')
    exits: np.ndarray  # (N,) exit that answered
    network_ms: float
    post_ms: float


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


class Pipeline:
    """Frames in, :class:`Prediction` out. Build it with :meth:`from_bundle`; close it (or use ``with``)."""

    def __init__(self, manifest: Manifest, *, mode: str = "early-exit", threshold: float | None = None,
                 exit: int | None = None, vote: str | None = None, smoothing: float | None = None,
                 backend_options: dict | None = None):
        n = manifest.num_exits
        if mode not in MODES:
            raise EdgekdError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if threshold is not None:
            if not _is_number(threshold) or not math.isfinite(threshold) or threshold < 0:
                raise EdgekdError(f"threshold must be a finite number >= 0 (above 1: never exit early), "
                                  f"got {threshold!r}")
            if mode != "early-exit":
                raise EdgekdError(f"threshold applies to mode early-exit only, not {mode}")
        if mode == "exit":
            if exit is None:
                raise EdgekdError(f"mode exit needs the exit that answers (exit=K, 0 <= K < {n})")
            if not _is_number(exit) or not 0 <= exit < n or int(exit) != exit:
                raise EdgekdError(f"exit must be an integer in 0..{n - 1} (the bundle has {n} exits), got {exit!r}")
        elif exit is not None:
            raise EdgekdError(f"exit applies to mode exit only, not {mode}")
        if vote is not None:
            if vote not in VOTE_RULES:
                raise EdgekdError(f"unknown vote rule {vote!r}; choose one of {', '.join(VOTE_RULES)}")
            if mode != "full-vote":
                raise EdgekdError(f"vote applies to mode full-vote only, not {mode}")
        if smoothing is not None and (not _is_number(smoothing) or not 0.0 < smoothing < 1.0):
            raise EdgekdError(f"smoothing must be a number with 0 < W < 1 (the EMA weight of the past), "
                              f"got {smoothing!r}")
        if manifest.backend not in RUNNER_BACKEND:
            raise EdgekdError(f"{manifest.root}: unknown backend {manifest.backend!r}")

        self.manifest = manifest
        self.spec = manifest.spec
        self.mode = mode
        self.num_exits = n
        self.class_names = list(self.spec.class_names)
        self.thresholds = [float(threshold)] * n if threshold is not None else manifest.thresholds
        self.exit = int(exit) if exit is not None else None
        self.smoothing = float(smoothing) if smoothing is not None else None
        self.backend = RUNNER_BACKEND[manifest.backend]
        self.vote_rule = (vote or manifest.vote_rule) if mode == "full-vote" else None
        self.vote_weights: np.ndarray | None = None
        self.vote_in_graph = False
        if mode == "full-vote":
            weights = manifest.vote_weights
            if self.vote_rule == "weighted":
                if weights is None:
                    raise EdgekdError(f"{manifest.root}: the weighted vote needs vote weights and the manifest "
                                      "has none")
                w = np.asarray(weights, dtype=np.float64)
                if w.shape != (n,) or np.any(w < 0) or w.sum() <= 0:
                    raise EdgekdError(f"{manifest.root}: vote weights must be {n} non-negative numbers, got {weights}")
                self.vote_weights = w
            in_graph = manifest.data["vote"].get("in_graph", "soft")
            self.vote_in_graph = self.vote_rule != "hard" and self.vote_rule == in_graph

        # early-exit and exit chain stage graphs; the per-exit decision thresholds of the chain (last always answers)
        if mode == "early-exit":
            self._chain_thresholds = np.asarray(self.thresholds, dtype=np.float64)
        elif mode == "exit":
            self._chain_thresholds = np.full(self.exit + 1, np.inf)
        self.preprocess = Preprocessor(self.spec)
        self._prepare_pre = Preprocessor(self.spec)  # used by prepare(), e.g. on a reader thread
        self.runners: list[Runner] = []
        options = dict(backend_options or {})
        if mode == "full-vote":
            paths = [manifest.full_graph()]
            self._full_outputs = (["vote"] if self.vote_in_graph else [f"logits{i}" for i in range(n)])
        else:
            last = n - 1 if mode == "early-exit" else self.exit
            paths = [manifest.segment_graph(i) for i in range(last + 1)]
            self._segment_outputs = [[f"logits{i}"] + ([f"feat{i}"] if i < last else []) for i in range(last + 1)]
        try:
            for path in paths:
                self.runners.append(make_runner(self.backend, path, **options).activate())
        except BaseException:
            self.close()
            raise
        self._ema_scores: np.ndarray | None = None
        self._ema_probs: np.ndarray | None = None

    @classmethod
    def from_bundle(cls, path: str | Path, *, mode: str = "early-exit", threshold: float | None = None,
                    exit: int | None = None, vote: str | None = None, smoothing: float | None = None,
                    backend_options: dict | None = None) -> Pipeline:
        """Open the bundle at ``path`` (its manifest only) and the runners ``mode`` needs."""
        return cls(load_manifest(path), mode=mode, threshold=threshold, exit=exit, vote=vote, smoothing=smoothing,
                   backend_options=backend_options)

    # lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every runner (idempotent)."""
        while self.runners:
            self.runners.pop().deactivate()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the smoothing state (a new scene or stream)."""
        self._ema_scores = self._ema_probs = None

    # inference -------------------------------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> Prediction:
        """Classify one frame (gray, BGR or BGRA uint8, any size)."""
        if not self.runners:
            raise EdgekdError("the pipeline is closed")
        t0 = time.perf_counter()
        x = self.preprocess(frame)
        return self.infer(x, (time.perf_counter() - t0) * 1e3)

    def prepare(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Preprocess one frame into a new (1, C, H, W) array and the milliseconds it took.

        For a reader thread that preprocesses the next frame while :meth:`infer` runs the current one (it uses its
        own buffer, so it never races with :meth:`__call__`).
        """
        t0 = time.perf_counter()
        x = self._prepare_pre(frame).copy()
        return x, (time.perf_counter() - t0) * 1e3

    def infer(self, x: np.ndarray, pre_ms: float = 0.0) -> Prediction:
        """Network, vote/early exit, smoothing and the answer for one preprocessed (1, C, H, W) input."""
        if not self.runners:
            raise EdgekdError("the pipeline is closed")
        out = self._network(x)
        t1 = time.perf_counter()
        scores, probs = out.scores[0], out.probs[0]
        if self.smoothing is not None:
            w = self.smoothing
            if self._ema_scores is None:
                self._ema_scores, self._ema_probs = scores.astype(np.float64), probs.astype(np.float64)
            else:
                self._ema_scores = w * self._ema_scores + (1.0 - w) * scores
                self._ema_probs = w * self._ema_probs + (1.0 - w) * probs
            scores, probs = self._ema_scores, self._ema_probs
        pred = self._prediction(scores, probs, int(out.exits[0]))
        post_ms = out.post_ms + (time.perf_counter() - t1) * 1e3
        pred.timings = {"pre": pre_ms, "network": out.network_ms, "post": post_ms}
        return pred

    def predict_batch(self, x: np.ndarray) -> list[Prediction]:
        """Network and post-processing on an already preprocessed (N, C, H, W) float32 batch, without smoothing.

        Early exit is per sample: only the samples not yet confident go on to the next stage. Each prediction's
        timings are the batch's divided by N (``pre`` is 0).
        """
        if not self.runners:
            raise EdgekdError("the pipeline is closed")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.spec.shape:
            raise EdgekdError(f"predict_batch takes (N, {', '.join(map(str, self.spec.shape))}) inputs, got {x.shape}")
        if len(x) == 0:
            return []
        out = self._network(x)
        t1 = time.perf_counter()
        preds = [self._prediction(out.scores[j], out.probs[j], int(out.exits[j])) for j in range(len(x))]
        post_ms = out.post_ms + (time.perf_counter() - t1) * 1e3
        for p in preds:
            p.timings = {"pre": 0.0, "network": out.network_ms / len(x), "post": post_ms / len(x)}
        return preds

    def _prediction(self, scores: np.ndarray, probs: np.ndarray, exit_: int) -> Prediction:
        label = int(np.argmax(scores))
        probs = np.asarray(probs, dtype=np.float32)
        return Prediction(label=label, class_name=self.class_names[label], confidence=float(probs[label]),
                          exit=exit_, probs=probs.copy(), mode=self.mode)

    def _network(self, x: np.ndarray) -> _Batch:
        return self._full(x) if self.mode == "full-vote" else self._chain(x)

    def _chain(self, x: np.ndarray) -> _Batch:
        """Stages 0..last on (N, C, H, W); each sample answers at the first exit whose confidence reaches its
        threshold, the last runner's exit always."""
        n, k = len(x), self.spec.num_classes
        probs = np.empty((n, k), dtype=np.float32)
        exits = np.empty(n, dtype=np.int64)
        pending = np.arange(n)  # rows of x still without an answer
        feed: dict[str, np.ndarray] = {"image": x}
        net = 0.0
        t_start = time.perf_counter()
        last = len(self.runners) - 1
        for i, runner in enumerate(self.runners):
            t = time.perf_counter()
            out = runner.infer(feed, self._segment_outputs[i])
            net += time.perf_counter() - t
            p = softmax(out[f"logits{i}"].astype(np.float32, copy=False))  # (M, K)
            done = np.ones(len(p), dtype=bool) if i == last else p.max(axis=1) >= self._chain_thresholds[i]
            if done.all():
                probs[pending], exits[pending] = p, i
                break
            if done.any():
                probs[pending[done]], exits[pending[done]] = p[done], i
                pending = pending[~done]
                feed = {f"feat{i}": np.ascontiguousarray(out[f"feat{i}"][~done])}
            else:
                feed = {f"feat{i}": out[f"feat{i}"]}
        total = time.perf_counter() - t_start
        return _Batch(probs, probs, exits, net * 1e3, (total - net) * 1e3)

    def _full(self, x: np.ndarray) -> _Batch:
        """One call of the full graph and the vote."""
        t = time.perf_counter()
        out = self.runners[0].infer({"image": x}, self._full_outputs)
        t1 = time.perf_counter()
        if self.vote_in_graph:
            probs = out["vote"].astype(np.float32, copy=False)
            scores = probs
        else:
            per_exit = np.stack([softmax(out[f"logits{i}"].astype(np.float32, copy=False))
                                 for i in range(self.num_exits)])  # (E, N, K)
            scores = vote_scores(per_exit, self.vote_rule, self.vote_weights)
            if self.vote_rule == "hard":
                scores = scores / scores.sum(axis=1, keepdims=True)  # same argmax; a distribution to smooth
                probs = per_exit.mean(axis=0)  # confidence: mean probability of the winning class
            else:
                probs = scores
        exits = np.full(len(x), self.num_exits - 1, dtype=np.int64)
        return _Batch(scores, probs, exits, (t1 - t) * 1e3, (time.perf_counter() - t1) * 1e3)

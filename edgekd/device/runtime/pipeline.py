"""The inference pipeline: one camera frame → one :class:`Prediction`, from a bundle's manifest alone.

Three modes:

* ``early-exit`` (default): run segment 0 on the image; if the exit's confidence (max softmax probability) reaches
  its threshold, answer there, otherwise feed ``feat{i}`` to segment ``i + 1``; the last exit always answers.
  Thresholds come from the manifest (fitted by ``edgekd build``) or one ``threshold`` for every exit: 0 answers
  everything at exit 0, anything above 1 answers everything at the last exit. One frame at a time runs in one call
  of the bundle's early-exit graph (``graphs.early_exit``, ONNX Runtime builds: the segments joined by ``If``
  nodes, the thresholds one of its inputs) when build measured it faster than the chain on this device, or measured
  nothing here (``early_exit_graph="auto"``; ``"one-call"`` or ``"chain"`` choose); batches, TensorRT bundles and
  bundles without that graph chain the segment graphs, one call each.
* ``full-vote``: one call of the full graph and the ensemble vote of all exits. The rule is the manifest's unless
  ``vote`` overrides it. When it equals the rule the graph computes (``vote.in_graph``: soft, or weighted with the
  manifest weights) the graph's ``vote`` output is the answer; otherwise (hard, or another rule) the vote is
  computed here from the ``logits{i}`` outputs with :func:`edgekd.core.vote.vote_scores`. ``exit`` of the
  prediction is the last exit's index and ``mode`` is ``"full-vote"``.
* ``exit`` with ``exit=K``: run segments 0..K and answer from exit K (anytime inference at a fixed budget).

Early exit decides on the graph's own confidence ``conf{i}`` — exactly the numbers ``edgekd build`` fitted and
certified the thresholds on, in the chain and in the one-call graph alike (see :mod:`edgekd.device.chain`) — so a
frame whose confidence sits exactly on a threshold is decided as the build decided it. Each mode is one small step
class (``_STEPS``) that checks its own option and runs its own network step.

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

from edgekd.core.early_exit import RUN_MODES
from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import EARLY_EXIT_INPUTS, EARLY_EXIT_OUTPUTS, Manifest, load_manifest
from edgekd.core.vote import VOTE_RULES, softmax, vote_scores
from edgekd.device.chain import Chain, exit_probs, float32_thresholds, within_range
from edgekd.device.options import EARLY_EXIT_GRAPHS
from edgekd.device.runners import Runner, make_runner
from edgekd.device.runtime.preprocess import Preprocessor


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


class _Step:
    """One mode's network step: checks the one option only that mode takes (:attr:`option`), opens the runners it
    needs and turns an (N, C, H, W) batch into a :class:`_Batch`. The attributes say what the mode uses; the
    defaults here mean it does not use them."""

    option: str  # the Pipeline option only this mode accepts
    exit: int | None = None
    early_exit_graph: str | None = None  # "one-call" or "chain": how one frame runs, where the mode chains
    vote_rule: str | None = None
    vote_in_graph: bool = False
    runners: list[Runner]

    def __init__(self, manifest: Manifest) -> None:
        self.thresholds = manifest.thresholds

    def __call__(self, x: np.ndarray) -> _Batch:
        raise NotImplementedError

    def close(self) -> None:
        """Release every runner (idempotent)."""
        while self.runners:
            self.runners.pop().deactivate()


class _ChainStep(_Step):
    """Segments 0..last through the chain; each sample answers at the first exit whose confidence reaches its
    threshold, the chain's last exit always (:meth:`edgekd.device.chain.Chain.early_exit`)."""

    def _open(self, manifest: Manifest, last: int, decide: np.ndarray, options: dict[str, Any]) -> None:
        self._decide = decide  # (last + 1,) float64 thresholds of the chain's exits
        self._chain = Chain.from_manifest(manifest, last=last, **options).open()

    @property
    def runners(self) -> list[Runner]:
        return self._chain.runners

    def close(self) -> None:
        self._chain.close()

    def __call__(self, x: np.ndarray) -> _Batch:
        t = time.perf_counter()
        out = self._chain.early_exit(x, self._decide)
        total_ms = (time.perf_counter() - t) * 1e3
        return _Batch(out.probs, out.probs, out.exits, out.network_ms, total_ms - out.network_ms)


def preferred_early_exit_graph(manifest: Manifest, threads: int | None = None) -> str:
    """What ``auto`` runs one frame on: ``chain`` for a bundle without a one-call graph; else what build measured
    faster (``build.early_exit.graph``) when it measured on this device (same label,
    :func:`edgekd.device.profile.environment.device_name`), else the one-call graph: one runtime call in place of
    one per segment, which is what made the chain slower than the full graph."""
    if manifest.early_exit_graph() is None:
        return "chain"
    record = manifest.build.early_exit if manifest.build else None
    if isinstance(record, dict) and record.get("graph") in EARLY_EXIT_GRAPHS[1:]:
        from edgekd.device.profile.environment import device_name

        if record.get("device") == device_name(manifest.runner_backend, threads):
            return str(record["graph"])
    return "one-call"


class _EarlyExit(_ChainStep):
    """``early-exit``: every segment, the manifest's thresholds or ``threshold`` for every exit; one frame in one call
    of the one-call graph when chosen (:func:`preferred_early_exit_graph`), the chain otherwise and for batches (it is
    opened on the first batch of more than one frame)."""

    option = "threshold"

    def __init__(self, manifest: Manifest, threshold: float | None, options: dict[str, Any],
                 graph: str = EARLY_EXIT_GRAPHS[0]) -> None:
        super().__init__(manifest)
        if threshold is not None:
            if not _is_number(threshold) or not math.isfinite(threshold) or threshold < 0:
                raise EdgekdError(f"threshold must be a finite number >= 0 (above 1: never exit early), "
                                  f"got {threshold!r}")
            self.thresholds = [float(threshold)] * manifest.num_exits
        if graph not in EARLY_EXIT_GRAPHS:
            raise EdgekdError(f"early_exit_graph must be one of {', '.join(EARLY_EXIT_GRAPHS)}, got {graph!r}")
        path = manifest.early_exit_graph()
        if graph == "one-call" and path is None:
            raise EdgekdError(f"{manifest.root} has no one-call early-exit graph (TensorRT bundles and bundles built "
                              "before edgekd wrote one chain the segments); rebuild it or use the chain")
        if graph == EARLY_EXIT_GRAPHS[0]:
            graph = preferred_early_exit_graph(manifest, options.get("threads"))
        self.early_exit_graph = graph
        decide = np.asarray(self.thresholds, dtype=np.float64)
        self._one: Runner | None = None
        if graph == "one-call":
            self._decide = decide
            self._graph_thresholds = float32_thresholds(decide)  # (E,) the graph's input: it compares in float32
            self._one = make_runner(manifest.runner_backend, path, **options).activate()
            self._chain = Chain.from_manifest(manifest, **options)  # opened for the first batch of several frames
        else:
            self._open(manifest, manifest.num_exits - 1, decide, options)

    @property
    def runners(self) -> list[Runner]:
        return ([self._one] if self._one is not None else []) + self._chain.runners

    def close(self) -> None:
        if self._one is not None:
            self._one.deactivate()
            self._one = None
        self._chain.close()

    def __call__(self, x: np.ndarray) -> _Batch:
        if self._one is None or len(x) != 1:
            if self._one is not None and not self._chain.runners:
                self._chain.open()
            return super().__call__(x)
        t = time.perf_counter()
        image, thresholds = EARLY_EXIT_INPUTS
        logits, exit_, conf = EARLY_EXIT_OUTPUTS
        out = self._one.infer({image: x, thresholds: self._graph_thresholds}, list(EARLY_EXIT_OUTPUTS))
        t1 = time.perf_counter()
        probs = exit_probs(out[logits], out[conf])  # (1, K): as the chain answers at that exit
        exits = np.asarray(out[exit_], dtype=np.int64).reshape(-1)
        return _Batch(probs, probs, exits, (t1 - t) * 1e3, (time.perf_counter() - t1) * 1e3)


class _Exit(_ChainStep):
    """``exit``: segments 0..K, exit K answers."""

    option = "exit"

    def __init__(self, manifest: Manifest, exit: int | None, options: dict[str, Any]) -> None:
        super().__init__(manifest)
        n = manifest.num_exits
        if exit is None:
            raise EdgekdError(f"mode exit needs the exit that answers (exit=K, 0 <= K < {n})")
        if not _is_number(exit) or not 0 <= exit < n or int(exit) != exit:
            raise EdgekdError(f"exit must be an integer in 0..{n - 1} (the bundle has {n} exits), got {exit!r}")
        self.exit = int(exit)
        self._open(manifest, self.exit, np.full(self.exit + 1, np.inf), options)


class _FullVote(_Step):
    """``full-vote``: one call of the full graph answering with the bundle's full answer (the manifest's
    ``vote.answer``): the deepest exit's ``logits{E-1}``, or the vote — the graph's ``vote`` output when it computes
    the rule, else the vote of the ``logits{i}`` here. An explicit ``vote`` rule always votes."""

    option = "vote"

    def __init__(self, manifest: Manifest, vote: str | None, options: dict[str, Any]) -> None:
        super().__init__(manifest)
        n = self.num_exits = manifest.num_exits
        if vote is not None and vote not in VOTE_RULES:
            raise EdgekdError(f"unknown vote rule {vote!r}; choose one of {', '.join(VOTE_RULES)}")
        self.deepest = vote is None and manifest.full_answer == "deepest"
        if self.deepest:
            self._outputs = [f"logits{n - 1}"]
            self.runners = [make_runner(manifest.runner_backend, manifest.full_graph(), **options).activate()]
            return
        self.vote_rule = vote or manifest.vote_rule
        self.vote_weights: np.ndarray | None = None
        if self.vote_rule == "weighted":
            weights = manifest.vote_weights
            if weights is None:
                raise EdgekdError(f"{manifest.root}: the weighted vote needs vote weights and the manifest has none")
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (n,) or np.any(w < 0) or w.sum() <= 0:
                raise EdgekdError(f"{manifest.root}: vote weights must be {n} non-negative numbers, got {weights}")
            self.vote_weights = w
        in_graph = manifest.vote.in_graph or "soft"
        self.vote_in_graph = self.vote_rule != "hard" and self.vote_rule == in_graph
        self._outputs = ["vote"] if self.vote_in_graph else [f"logits{i}" for i in range(n)]
        self.runners = [make_runner(manifest.runner_backend, manifest.full_graph(), **options).activate()]

    def __call__(self, x: np.ndarray) -> _Batch:
        t = time.perf_counter()
        out = self.runners[0].infer({"image": x}, self._outputs)
        t1 = time.perf_counter()
        if self.deepest:
            probs = softmax(out[self._outputs[0]].astype(np.float32, copy=False))  # (N, K)
            scores = probs
        elif self.vote_in_graph:
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


_STEPS: dict[str, type[_Step]] = {"early-exit": _EarlyExit, "full-vote": _FullVote, "exit": _Exit}  # by RUN_MODES


class Pipeline:
    """Frames in, :class:`Prediction` out. Build it with :meth:`from_bundle`; close it (or use ``with``).

    ``thresholds``, ``exit``, ``vote_rule`` and ``vote_in_graph`` say what the mode uses (the manifest's
    thresholds, None and False where it does not use them); ``runners`` are the open runners.
    """

    def __init__(self, manifest: Manifest, *, mode: str = "early-exit", threshold: float | None = None,
                 exit: int | None = None, vote: str | None = None, smoothing: float | None = None,
                 backend_options: dict | None = None, early_exit_graph: str | None = None):
        if mode not in _STEPS:
            raise EdgekdError(f"unknown mode {mode!r}; choose one of {', '.join(RUN_MODES)}")
        given = {"threshold": threshold, "exit": exit, "vote": vote}
        for owner, step in _STEPS.items():
            if owner != mode and given[step.option] is not None:
                raise EdgekdError(f"{step.option} applies to mode {owner} only, not {mode}")
        if smoothing is not None and (not _is_number(smoothing) or not 0.0 < smoothing < 1.0):
            raise EdgekdError(f"smoothing must be a number with 0 < W < 1 (the EMA weight of the past), "
                              f"got {smoothing!r}")
        self.manifest = manifest
        self.spec = manifest.spec
        self.mode = mode
        self.num_exits = manifest.num_exits
        self.class_names = list(self.spec.class_names)
        self.smoothing = float(smoothing) if smoothing is not None else None
        self.backend = manifest.runner_backend
        self.preprocess = Preprocessor(self.spec)
        self._prepare_pre = Preprocessor(self.spec)  # used by prepare(), e.g. on a reader thread
        self._ema_scores: np.ndarray | None = None
        self._ema_probs: np.ndarray | None = None
        if early_exit_graph is not None and mode != RUN_MODES[0]:
            raise EdgekdError(f"early_exit_graph applies to mode {RUN_MODES[0]} only, not {mode}")
        step = _STEPS[mode]
        graph = {"graph": early_exit_graph} if early_exit_graph is not None else {}
        self._step = step(manifest, given[step.option], dict(backend_options or {}), **graph)

    @property
    def runners(self) -> list[Runner]:
        return self._step.runners

    @property
    def thresholds(self) -> list[float]:
        return self._step.thresholds

    @property
    def exit(self) -> int | None:
        return self._step.exit

    @property
    def early_exit_graph(self) -> str | None:
        """How early exit runs one frame: ``one-call`` or ``chain`` (None in the other modes)."""
        return self._step.early_exit_graph

    @property
    def vote_rule(self) -> str | None:
        return self._step.vote_rule

    @property
    def vote_in_graph(self) -> bool:
        return self._step.vote_in_graph

    @classmethod
    def from_bundle(cls, path: str | Path, *, mode: str = "early-exit", threshold: float | None = None,
                    exit: int | None = None, vote: str | None = None, smoothing: float | None = None,
                    backend_options: dict | None = None, early_exit_graph: str | None = None) -> Pipeline:
        """Open the bundle at ``path`` (its manifest only: the data archives are hashed, never read) and the runners
        ``mode`` needs."""
        return cls(load_manifest(path, read_data=False), mode=mode, threshold=threshold, exit=exit, vote=vote,
                   smoothing=smoothing, backend_options=backend_options, early_exit_graph=early_exit_graph)

    # lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every runner (idempotent)."""
        self._step.close()

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
        out = self._step(x)
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

        Early exit is per sample: only the samples not yet confident go on to the next segment. Each prediction's
        timings are the batch's divided by N (``pre`` is 0).
        """
        if not self.runners:
            raise EdgekdError("the pipeline is closed")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.spec.shape:
            raise EdgekdError(f"predict_batch takes (N, {', '.join(map(str, self.spec.shape))}) inputs, got {x.shape}")
        preds: list[Prediction] = []
        step = within_range(len(x) or 1, self.runners)  # a TensorRT engine takes at most its target's batch
        for start in range(0, len(x), step):
            chunk = x[start:start + step]  # (B, C, H, W)
            out = self._step(chunk)
            t1 = time.perf_counter()
            part = [self._prediction(out.scores[j], out.probs[j], int(out.exits[j])) for j in range(len(chunk))]
            post_ms = out.post_ms + (time.perf_counter() - t1) * 1e3
            for p in part:
                p.timings = {"pre": 0.0, "network": out.network_ms / len(chunk), "post": post_ms / len(chunk)}
            preds += part
        return preds

    def _prediction(self, scores: np.ndarray, probs: np.ndarray, exit_: int) -> Prediction:
        label = int(np.argmax(scores))
        probs = np.asarray(probs, dtype=np.float32)
        return Prediction(label=label, class_name=self.class_names[label], confidence=float(probs[label]),
                          exit=exit_, probs=probs.copy(), mode=self.mode)

"""Ensemble vote over exits, in numpy (the runtime uses it too, so no torch here).

All functions take per-exit class probabilities ``probs`` of shape (E, N, K): E exits, N samples, K classes.

* ``soft``: mean of the exits' probabilities.
* ``hard``: majority vote of the exits' top-1 labels; ties are broken by the summed probability of the tied classes.
* ``weighted``: weighted mean of probabilities, weights fitted on the validation split by :func:`fit_vote_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from edgekd.core.errors import ConfigError
from edgekd.core.stats import drop_interval

VOTE_RULES = ("soft", "hard", "weighted")
#: What answers ``--mode full-vote`` (a manifest's ``vote.answer``): the deepest exit, or the vote rule
#: ``vote.rule``. Bundles written before the choice existed mean ``vote``.
FULL_ANSWERS = ("deepest", "vote")
#: Two-sided level of the paired interval by which a vote rule must beat the deepest exit to become the answer.
ANSWER_CONFIDENCE = 0.95


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def vote_scores(probs: np.ndarray, rule: str = "soft", weights: np.ndarray | None = None) -> np.ndarray:
    """Combine (E, N, K) per-exit probabilities into (N, K) scores whose argmax is the vote's answer.

    For ``soft`` and ``weighted`` the scores are probabilities; for ``hard`` they are vote counts plus a tie-break
    term below one vote (summed probability / (E + 1)), so the argmax is the majority with ties broken by probability.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (E, N, K), got shape {probs.shape}")
    n_exits, _, n_classes = probs.shape
    if rule == "soft":
        return probs.mean(axis=0)
    if rule == "weighted":
        if weights is None:
            raise ConfigError("the weighted vote needs per-exit weights (fit them on the validation split)")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n_exits,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not 0 < w.sum() < np.inf:
            raise ConfigError(f"vote weights must be {n_exits} finite non-negative numbers with a positive sum, "
                              f"got {w}")
        return np.tensordot(w / w.sum(), probs, axes=1)
    if rule == "hard":
        top1 = probs.argmax(axis=2)  # (E, N)
        counts = np.zeros(probs.shape[1:], dtype=np.float64)  # (N, K)
        for e in range(n_exits):
            counts[np.arange(probs.shape[1]), top1[e]] += 1.0
        return counts + probs.sum(axis=0) / (n_exits + 1)
    raise ConfigError(f"unknown vote rule {rule!r}; choose one of {', '.join(VOTE_RULES)}")


def vote(probs: np.ndarray, rule: str = "soft", weights: np.ndarray | None = None) -> np.ndarray:
    """(N,) predicted labels of the vote."""
    return vote_scores(probs, rule, weights).argmax(axis=1)


def fit_vote_weights(probs: np.ndarray, labels: np.ndarray, *, iters: int = 300, lr: float = 1.0) -> np.ndarray:
    """Per-exit weights (summing to 1) minimising the validation NLL of the weighted mixture of probabilities.

    The mixture NLL is convex in the weights; exponentiated-gradient steps keep them on the simplex.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_exits, n = probs.shape[:2]
    p_true = probs[:, np.arange(n), labels]  # (E, N) probability each exit gives the true class
    w = np.full(n_exits, 1.0 / n_exits)
    for _ in range(iters):
        mix = np.maximum(w @ p_true, 1e-12)  # (N,)
        grad = -(p_true / mix).mean(axis=1)  # (E,) d NLL / d w
        w = w * np.exp(-lr * (grad - grad.min()))
        w /= w.sum()
    return w


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    labels = np.asarray(labels)
    return float(100.0 * np.mean(np.asarray(pred) == labels)) if labels.size else float("nan")


@dataclass(frozen=True)
class FullAnswer:
    """The bundle's best full answer on some labelled images, chosen by a paired test (:func:`full_answer`)."""

    name: str  # "exit{E-1}" (the deepest exit) or "vote:RULE"
    predictions: np.ndarray  # (N,) its labels
    scores: Dict[str, float]  # top-1 % of every candidate
    gains: Dict[str, Tuple[float, float]]  # per vote candidate: interval of its top-1 gain over the deepest exit

    @property
    def answer(self) -> str:
        """``deepest`` or ``vote``, as the manifest's ``vote.answer`` stores it."""
        return "vote" if self.name.startswith("vote:") else "deepest"


def full_answer(probs: np.ndarray, labels: np.ndarray, vote_weights: Optional[Sequence[float]] = None, *,
                confidence: float = ANSWER_CONFIDENCE) -> FullAnswer:
    """The deepest exit, unless a vote rule beats it beyond noise: its paired interval (Tango's, on the images one
    answers right and the other wrong) of the top-1 gain over the deepest exit lies above 0 at ``confidence``. Of the
    rules that do, the most accurate answers (ties in :data:`VOTE_RULES` order). ``probs`` (E, N, K); the weighted
    vote is a candidate only with ``vote_weights``.

    Why not the best point estimate: on 1,000 validation images a vote that was 1.5 points ahead by chance became
    the answer (and the early-exit reference) where, on test, the deepest exit was better (docs/BENCHMARKS.md)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    deepest = f"exit{probs.shape[0] - 1}"
    candidates = {deepest: probs[-1].argmax(axis=1)}
    for rule in VOTE_RULES:
        if rule != "weighted" or vote_weights is not None:
            w = np.asarray(vote_weights, dtype=np.float64) if rule == "weighted" else None
            candidates[f"vote:{rule}"] = vote(probs, rule, w)
    right = {name: pred == labels for name, pred in candidates.items()}
    scores = {name: float(100.0 * np.mean(r)) if r.size else float("nan") for name, r in right.items()}
    gains: Dict[str, Tuple[float, float]] = {}
    n = int(labels.size)
    for name in list(candidates)[1:]:
        lost = int(np.sum(right[deepest] & ~right[name]))
        gained = int(np.sum(~right[deepest] & right[name]))
        low, high = drop_interval(lost, gained, n, confidence) if n else (float("nan"), float("nan"))
        gains[name] = (-high, -low)
    better = [name for name, (low, _) in gains.items() if low > 0]
    best = max(better, key=lambda name: scores[name]) if better else deepest  # max keeps the first of equals
    return FullAnswer(best, candidates[best], scores, gains)

"""Accuracy per exit and per vote rule, the early-exit threshold sweep, and its Pareto front.

Inputs are (E, N, K) per-exit probabilities (e.g. the segment chain's, from :meth:`edgekd.device.chain.Chain.probs`)
and (N,) labels. Costs are per exit and cumulative: ``costs_macs[i]`` / ``latency_ms[i]`` is what it takes to answer
at exit ``i`` (segments 0..i). Torch-free (device side).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.core.early_exit import NEVER, fit_thresholds, simulate
from edgekd.core.vote import VOTE_RULES, vote

DEFAULT_THRESHOLDS = np.concatenate([np.linspace(0.0, 1.0, 21), [NEVER]])
DEFAULT_TARGET_DROPS = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)  # percentage points below the full vote


def _topk_accuracy(p: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of samples whose label is among the ``k`` highest probabilities (stable order on ties)."""
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float(100.0 * np.mean((top == labels[:, None]).any(axis=1)))


def accuracy_table(probs: np.ndarray, labels: np.ndarray, vote_weights: list[float] | np.ndarray | None = None
                   ) -> dict[str, Any]:
    """``{"exits": [{"exit", "top1", "top5", "k"}], "vote": {rule: top1}}`` in percent.

    ``top5`` is top-``k`` with ``k = min(5, K)`` (so it is 100 when there are at most 5 classes). The weighted
    vote is included only when ``vote_weights`` are given.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 3 or probs.shape[1] != labels.shape[0]:
        raise ValueError(f"probs must be (E, N, K) with N = {labels.shape[0]} labels, got {probs.shape}")
    k = min(5, probs.shape[2])
    exits = [{"exit": i, "top1": _topk_accuracy(p, labels, 1), "top5": _topk_accuracy(p, labels, k), "k": k}
             for i, p in enumerate(probs)]
    votes = {}
    for rule in VOTE_RULES:
        if rule == "weighted" and vote_weights is None:
            continue
        w = np.asarray(vote_weights, dtype=np.float64) if rule == "weighted" else None
        votes[rule] = float(100.0 * np.mean(vote(probs, rule, w) == labels))
    return {"exits": exits, "vote": votes}


def _point(probs, labels, th, costs_macs, latency_ms, kind: str, *, threshold: float | None = None,
           target_drop: float | None = None) -> dict[str, Any]:
    res = simulate(probs, th, costs_macs, labels)
    mean_latency = None
    if latency_ms is not None:
        mean_latency = float(np.asarray(latency_ms, dtype=np.float64)[res.exit_taken].mean())
    return {"kind": kind, "threshold": threshold, "target_drop": target_drop, "thresholds": [float(t) for t in th],
            "accuracy": res.accuracy, "exit_fraction": res.exit_fraction, "mean_macs": res.mean_cost,
            "mean_latency_ms": mean_latency, "operating_point": kind == "manifest"}


def sweep(probs: np.ndarray, labels: np.ndarray, costs_macs: list[float], latency_ms: list[float] | None = None, *,
          thresholds: list[float] | np.ndarray = DEFAULT_THRESHOLDS, fitted: list[float] | None = None,
          reference_accuracy: float | None = None, target_drops: list[float] | tuple[float, ...] = ()
          ) -> list[dict[str, Any]]:
    """The early-exit trade-off, one point per threshold setting, in three kinds:

    * ``"global"``: one point per ``thresholds`` value ``t`` (every exit but the last answers when its confidence
      ≥ ``t``), in the given order;
    * ``"target-drop"``: for each of ``target_drops`` (ascending) the per-exit set :func:`fit_thresholds` picks
      (lowest MACs within that many points of ``reference_accuracy``, the full vote), seeded with the tighter
      fits so that mean MACs never rise with the allowance;
    * ``"manifest"`` (``operating_point`` True): the per-exit ``fitted`` thresholds, when given.

    Each point: ``kind``, ``threshold`` (global only), ``target_drop`` (target-drop only), ``thresholds`` (per
    exit), ``accuracy`` (percent), ``exit_fraction`` (per exit), ``mean_macs`` and ``mean_latency_ms`` (mean
    cumulative cost of the exit taken; None without ``latency_ms``).
    """
    probs = np.asarray(probs)
    n_exits = probs.shape[0]
    if len(costs_macs) != n_exits or (latency_ms is not None and len(latency_ms) != n_exits):
        raise ValueError(f"costs must list one value per exit ({n_exits})")
    points = []
    for t in thresholds:
        th = [float(t)] * (n_exits - 1) + [0.0]
        points.append(_point(probs, labels, th, costs_macs, latency_ms, "global", threshold=float(t)))
    if target_drops and reference_accuracy is None:
        raise ValueError("target_drops need the reference (full vote) accuracy")
    fitted_so_far: list[list[float]] = []
    for drop in sorted(target_drops):  # each tighter fit seeds the looser ones: more allowance never costs more
        fit = fit_thresholds(probs, labels, costs_macs, reference_accuracy=reference_accuracy, target_drop=drop,
                             starts=fitted_so_far)
        fitted_so_far.append(fit.thresholds)
        points.append(_point(probs, labels, fit.thresholds, costs_macs, latency_ms, "target-drop",
                             target_drop=float(drop)))
    if fitted is not None:
        if len(fitted) != n_exits:
            raise ValueError(f"fitted thresholds must list one value per exit ({n_exits})")
        points.append(_point(probs, labels, list(fitted), costs_macs, latency_ms, "manifest"))
    return points


def pareto_front(points: list[dict[str, Any]]) -> list[int]:
    """Indices of the points no other point dominates (accuracy at least as high and cost at most as low, one of
    them strictly), cheapest first. Cost is ``mean_latency_ms`` when every point has it, else ``mean_macs``."""
    if not points:
        return []
    key = "mean_latency_ms" if all(p.get("mean_latency_ms") is not None for p in points) else "mean_macs"
    acc = np.array([p["accuracy"] for p in points], dtype=np.float64)
    cost = np.array([p[key] for p in points], dtype=np.float64)
    front = []
    for i in range(len(points)):
        dominated = np.any((acc >= acc[i]) & (cost <= cost[i]) & ((acc > acc[i]) | (cost < cost[i])))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (cost[i], -acc[i], i))


def full_accuracy(bundle: dict[str, Any]) -> float | None:
    """Top-1 of what ``--mode full-vote`` answers, from one bundle of a ``report.json`` (the deepest exit or the vote
    rule; reports written before ``full_accuracy`` existed: the vote rule's)."""
    if isinstance(bundle.get("full_accuracy"), (int, float)):
        return float(bundle["full_accuracy"])
    return bundle["accuracy"]["vote"].get(bundle["vote_rule"])

"""Confidence-based early exit: simulate it on stored per-exit probabilities and fit per-exit thresholds.

A sample leaves at the first exit whose confidence (max softmax probability) reaches that exit's threshold; the
last exit always answers. A threshold of 0 answers everything at that exit; :data:`NEVER` (above any confidence)
never does. Torch-free: build, run and profile all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEVER = 1.01  # above any softmax confidence: this exit never answers
#: How ``edgekd run`` answers: early exit per frame, the full graph's vote, or a fixed exit (anytime inference).
RUN_MODES = ("early-exit", "full-vote", "exit")


@dataclass(frozen=True)
class EarlyExitResult:
    exit_taken: np.ndarray  # (N,) index of the exit that answered
    pred: np.ndarray  # (N,) its top-1 label
    accuracy: float  # percent, nan without labels
    mean_cost: float  # mean cost of the exits taken (cumulative MACs or latency)
    exit_fraction: list[float]  # share of samples answered at each exit


def simulate(probs: np.ndarray, thresholds: list[float] | np.ndarray, costs: list[float] | np.ndarray | None = None,
             labels: np.ndarray | None = None) -> EarlyExitResult:
    """Early exit over (E, N, K) probabilities with per-exit ``thresholds`` (the last one is ignored)."""
    probs = np.asarray(probs)
    n_exits, n = probs.shape[:2]
    conf = probs.max(axis=2)  # (E, N)
    th = np.asarray(thresholds, dtype=np.float64).copy()
    th[-1] = -np.inf  # the last exit always answers
    confident = conf >= th[:, None]  # (E, N)
    exit_taken = confident.argmax(axis=0)  # first True along exits
    pred = probs[exit_taken, np.arange(n)].argmax(axis=1)
    acc = float(100.0 * np.mean(pred == labels)) if labels is not None else float("nan")
    costs = np.zeros(n_exits) if costs is None else np.asarray(costs, dtype=np.float64)
    frac = np.bincount(exit_taken, minlength=n_exits) / max(n, 1)
    return EarlyExitResult(exit_taken, pred, acc, float(costs[exit_taken].mean()), [float(f) for f in frac])


def candidate_thresholds(conf: np.ndarray, steps: int = 100) -> np.ndarray:
    """Quantiles of one exit's confidences (every step of 1% of the samples), plus 'never'."""
    qs = np.quantile(conf, np.linspace(0.0, 1.0, steps + 1))
    return np.unique(np.concatenate([qs, [NEVER]]))


@dataclass(frozen=True)
class ThresholdFit:
    thresholds: list[float]
    accuracy: float  # early-exit accuracy on the fitting data
    target_accuracy: float
    mean_cost: float
    exit_fraction: list[float]
    feasible: bool  # False: even answering everything at the last exit misses the target


def _descend(probs: np.ndarray, labels: np.ndarray, costs, th: np.ndarray, target: float,
             candidates: list[np.ndarray], passes: int) -> tuple[np.ndarray, EarlyExitResult]:
    """Coordinate descent from the feasible set ``th``: for each shallow exit in turn, the candidate with the lowest
    mean cost that keeps ``target``, the others fixed; until nothing changes (at most ``passes`` rounds)."""
    best = simulate(probs, th, costs, labels)
    for _ in range(passes):
        changed = False
        for i in range(len(candidates)):
            for t in candidates[i]:  # ascending: earlier exits first, cheapest first
                trial = th.copy()
                trial[i] = t
                res = simulate(probs, trial, costs, labels)
                if res.accuracy >= target - 1e-9 and res.mean_cost < best.mean_cost - 1e-12:
                    th, best, changed = trial, res, True
                    break
        if not changed:
            break
    return th, best


def fit_thresholds(probs: np.ndarray, labels: np.ndarray, costs: list[float] | np.ndarray, *,
                   reference_accuracy: float, target_drop: float = 0.5, passes: int = 3,
                   starts: list[list[float]] | tuple = ()) -> ThresholdFit:
    """Per-exit thresholds whose early-exit accuracy stays within ``target_drop`` points of ``reference_accuracy``
    (the full vote) at the smallest mean cost.

    Coordinate descent (greedy, so a local optimum) from several feasible starting sets, keeping the cheapest
    result: "only the last exit answers", the cheapest feasible single threshold for every exit, and any of
    ``starts`` that meets the target (e.g. the fit for a tighter target, so a looser target never costs more). If
    the last exit alone already misses the target, the target becomes its accuracy (``feasible`` False) so early
    exit never costs accuracy beyond that.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    n_exits = probs.shape[0]
    last_only = np.full(n_exits, NEVER)
    last_only[-1] = 0.0
    start = simulate(probs, last_only, costs, labels)
    target = reference_accuracy - target_drop
    feasible = start.accuracy >= target - 1e-9
    if not feasible:
        target = start.accuracy
    conf = probs.max(axis=2)
    candidates = [candidate_thresholds(conf[i]) for i in range(n_exits - 1)]
    inits = [last_only]
    for t in np.linspace(0.0, 1.0, 101):  # the cheapest feasible global threshold
        th = np.full(n_exits, t)
        th[-1] = 0.0
        if simulate(probs, th, costs, labels).accuracy >= target - 1e-9:
            inits.append(th)
            break
    for s in starts:
        th = np.asarray(s, dtype=np.float64)
        if th.shape == (n_exits,) and simulate(probs, th, costs, labels).accuracy >= target - 1e-9:
            inits.append(th.copy())
    fits = [_descend(probs, labels, costs, th, target, candidates, passes) for th in inits]
    th, best = min(fits, key=lambda f: f[1].mean_cost)  # the first of equals: the established start wins ties
    return ThresholdFit([float(t) for t in th], best.accuracy, float(target), best.mean_cost, best.exit_fraction,
                        feasible)

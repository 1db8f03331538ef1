"""Early-exit thresholds certified to an accuracy budget: Learn-then-Test risk control on a fixed family.

The promise ``--target-drop ε`` makes is about new images, not the images the thresholds were chosen on. A
minimum-cost point fitted on a few hundred images keeps it on those images only (choosing the cheapest of many
candidates picks one whose luck was good). Here the promise becomes a guarantee, in the Learn-then-Test framework
(Angelopoulos, Bates, Candès, Jordan, Lei, "Learn then Test", 2021/2025), as CALM (Schuster et al., 2022) and "Fast
yet Safe" (Jazbec et al., 2024) apply it to early-exit networks:

* **Loss** of one image under a threshold set: 1 when early exit answers wrong where the reference (the bundle's
  best full answer: the deepest exit or a vote rule) answers right, else 0. Its mean bounds the accuracy drop
  against the reference from above; it is the risk to keep at or below ε.
* **Family**: one confidence threshold ``t`` for every exit but the last (the last always answers), on a grid fixed
  in advance (:data:`GRID`, it does not look at any data), ordered from safe (``t`` above 1: only the last exit
  answers) to aggressive (``t`` = 0: everything leaves at exit 0).
* **Test**: fixed-sequence testing along the family at level δ, with the exact binomial p-value of "risk > ε"
  given k losses in n images, ``P(Binomial(n, ε) ≤ k)``. Every set up to the first one that fails is certified;
  the cheapest certified one is kept (of equally cheap ones, the most cautious; a set that saves nothing is not
  an early exit, so the safe set stays and nothing counts as certified).
* **Guarantee**: with probability at least 1 − δ over the n certifying images, the kept set's expected accuracy drop
  against the reference on new images from the same distribution is at most ε.

Two extensions keep the guarantee: the **disagreement loss** (:data:`DISAGREEMENT`: no labels needed, so the site's
own frames certify) and a **learned path** of per-exit thresholds (:data:`PATH`: the order is learned on a third of
the images, the test runs on the other two thirds).

When even the first step of the family cannot be certified (too few images for ε at δ), the safe set is kept and
the certificate says how many images would be needed and which ε the data could certify.

:func:`point_thresholds` is the point fit, the minimum-cost one (:func:`edgekd.core.early_exit.fit_thresholds`) in
the same record, labelled ``fit: "point"``: a point estimate, not certified. :func:`early_exit_thresholds` chooses the
reference and runs either; :func:`manifest_record` is what the manifest stores under ``build.thresholds``, and
:func:`stored_certificate` / :func:`describe_thresholds` read it back (as run and profile show it). Torch-free (core).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from edgekd.core.early_exit import NEVER, fit_thresholds, simulate
from edgekd.core.stats import binomial_cdf
from edgekd.core.vote import full_answer, vote

METHOD = "learn-then-test: one global threshold on a fixed grid, fixed-sequence testing, exact binomial p-values"
POINT_METHOD = "point estimate, not certified: the cheapest per-exit thresholds within epsilon on these images"
#: ``Certificate.fit``: certified (Learn-then-Test) or the point fit (``edgekd build --fit``).
CERTIFIED, POINT = "certified", "point"
#: ``Certificate.loss``: with labels, an image counts against early exit when it answers wrong where the reference
#: answers right; without labels, whenever it answers otherwise than the reference. The second is at least the first
#: on every image, so a bound on it bounds the accuracy drop too: certification needs no label, only the site's own
#: frames, at the price of a looser bound (every disagreement counts, right or wrong).
LABELLED, DISAGREEMENT = "labelled", "disagreement"
#: ``Certificate.family``: one global threshold on :data:`GRID` (data-free order), or per-exit thresholds along a
#: path learned on a third of the images and tested in fixed sequence on the rest (Pareto Testing, Laufer-Goldshtein
#: et al. 2023: an order chosen on independent data keeps Learn-then-Test's guarantee).
GLOBAL, PATH = "global", "path"
FAMILIES = (GLOBAL, PATH)
PATH_LEARN_FRACTION = 1 / 3
PATH_SEED = 0  # the split of the certifying images into learn/test: fixed, not chosen by looking at them
NOT_CERTIFIED = "thresholds not certified"  # what a bundle without a stored record (or an old one) says
#: The threshold family, safe to aggressive: above 1 (never exit early), then confidences from 0.9999 down to 0,
#: dense near 1 where a trained network's confidences sit. Fixed in advance: it does not depend on any data.
GRID: tuple[float, ...] = tuple(sorted({NEVER, *[round(1.0 - 10.0 ** -float(e), 6) for e in np.linspace(4.0, 1.0, 61)],
                                        *[round(float(t), 4) for t in np.linspace(0.9, 0.0, 91)]}, reverse=True))


def p_value(losses: int, n: int, epsilon: float) -> float:
    """The exact binomial p-value of the null "the risk exceeds ``epsilon``" (a fraction) after ``losses`` in ``n``."""
    return binomial_cdf(losses, n, epsilon)


def images_needed(epsilon: float, delta: float) -> int:
    """The fewest images that can certify a risk of ``epsilon`` (fraction) at level ``delta``: with no loss at all,
    ``(1 - ε)^n <= δ``. ε = 0.005 at δ = 0.1 needs 460; any early exit that ever errs needs more."""
    return int(math.ceil(math.log(delta) / math.log1p(-epsilon)))


def certifiable_epsilon(n: int, delta: float) -> float:
    """The smallest risk (fraction) ``n`` loss-free images can certify at level ``delta``: ``1 - δ^(1/n)``."""
    return 1.0 - delta ** (1.0 / n) if n > 0 else 1.0


def reference_answer(probs: np.ndarray, name: str, vote_weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """(N,) predictions of the full answer ``name`` (``exit{E-1}`` or ``vote:RULE``) from (E, N, K) ``probs``: the
    reference chosen on some images, applied to others."""
    if name.startswith("vote:"):
        rule = name[len("vote:"):]
        return vote(probs, rule, np.asarray(vote_weights, dtype=np.float64) if rule == "weighted" else None)
    return np.asarray(probs)[-1].argmax(axis=1)


def reference_predictions(probs: np.ndarray, labels: np.ndarray, vote_weights: Optional[Sequence[float]] = None
                          ) -> tuple[str, np.ndarray, dict[str, float]]:
    """The reference early exit is certified against: the bundle's full answer on these labelled images as the
    paired test of :func:`edgekd.core.vote.full_answer` chooses it — the deepest exit (what early exit can reach),
    unless a vote rule is confidently better. ``probs`` (E, N, K) of the full graph. Returns (name, its (N,)
    predictions, top-1 % of every candidate). The weighted vote is a candidate only with ``vote_weights``."""
    chosen = full_answer(probs, labels, vote_weights)
    return chosen.name, chosen.predictions, chosen.scores


@dataclass(frozen=True)
class Certificate:
    """What certification found; stored under ``build.thresholds`` in the manifest (see :meth:`to_dict`)."""

    thresholds: List[float]  # per exit; the last is 0 (it always answers)
    certified: bool  # an early exit was certified; False: the safe set (only the last exit answers) is kept
    epsilon: float  # the budget, points of top-1 against the reference
    delta: Optional[float]  # 1 - confidence (None for the point fit)
    n: int  # images the certificate rests on
    reference: str  # the full answer the budget is measured against, e.g. "exit2" or "vote:weighted"
    reference_accuracy: Optional[float]  # its top-1 %, on these images (None: unlabelled images)
    accuracy: Optional[float]  # early exit's top-1 % at the kept thresholds, on these images (None: unlabelled)
    loss_rate: float  # points: images where early exit loses against the reference (see ``loss``), per 100
    upper_bound: Optional[float]  # points: the (1 - δ) upper confidence bound of that rate (Clopper-Pearson);
    # None for the point fit (a bound on a rate chosen by looking at it would not hold)
    mean_cost: float  # mean cost of the exits taken (MACs or latency, as asked)
    saving: float  # 1 - mean_cost / cost of the last exit: the share of the full cost saved
    exit_fraction: List[float]
    images_needed: Optional[int]  # the fewest loss-free images that could certify ε at δ (None: point fit)
    certifiable_epsilon: Optional[float]  # points: the smallest budget these n images could certify (no loss)
    method: str = METHOD
    fit: str = CERTIFIED  # CERTIFIED or POINT
    loss: str = LABELLED  # LABELLED (wrong where the reference is right) or DISAGREEMENT (differs from the reference)
    family: str = GLOBAL  # GLOBAL (one threshold for every exit) or PATH (per-exit thresholds along a learned path)
    n_learn: int = 0  # PATH: images the path was learned on (apart from the ``n`` it was tested on)
    oracle_saving: Optional[float] = None  # each image leaves at the first exit answering as the reference does

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Certificate:
        """The record :meth:`to_dict` wrote (other keys, such as the build's ``cost``, are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """One line for the terminal."""
        if self.fit == POINT:
            line = (f"point estimate, not certified: thresholds within {self.epsilon:g} points of {self.reference} on "
                    f"these {self.n} images (measured drop {self.loss_rate:.2f}), saving {100 * self.saving:.0f}% of "
                    "the cost; on new images they may lose more")
            if self.reference_accuracy - self.accuracy > self.epsilon + 1e-9:
                line += (f" (even the last exit alone is more than {self.epsilon:g} points below {self.reference}: "
                         "kept its accuracy instead)")
            return line
        conf = f"{100 * (1 - self.delta):g}%"
        if not self.certified:
            head = (f"no early exit certified within {self.epsilon:g} points of {self.reference} at {conf} confidence "
                    f"on {self.n} images: kept the safe set (last exit only)")
            if self.loss_rate > 0:
                head += f", which itself loses {self.loss_rate:.2f} points against {self.reference} here"
            if self.images_needed is not None and self.n < self.images_needed:
                return (f"{head}; certifying {self.epsilon:g} points needs at least {self.images_needed} images with "
                        f"no early-exit error, and these {self.n} can certify at best {self.certifiable_epsilon:.2f} "
                        "points (certify on more labelled images with `edgekd profile --write-thresholds --data`, "
                        "or allow a larger --target-drop)")
            return (f"{head}; even the most cautious early exit errs too often on these images (allow a larger "
                    "--target-drop, or certify on more labelled images with `edgekd profile --write-thresholds "
                    "--data`)")
        if self.family == PATH:
            th = "thresholds " + " / ".join(f"{t:.4g}" for t in self.thresholds[:-1])
        else:
            th = f"threshold {self.thresholds[0]:.4g}"
        oracle = "" if self.oracle_saving is None else f" (the oracle: {100 * self.oracle_saving:.0f}%)"
        what = "measured disagreement" if self.loss == DISAGREEMENT else "measured drop"
        unlabelled = (", unlabelled: the bound is on how often early exit answers otherwise than "
                      f"{self.reference}, which bounds the accuracy drop" if self.loss == DISAGREEMENT else "")
        return (f"certified: early exit within {self.epsilon:g} points of {self.reference} with {conf} confidence "
                f"({self.n} images{unlabelled}; {what} {self.loss_rate:.2f}, bound {self.upper_bound:.2f}); {th} "
                f"saves {100 * self.saving:.0f}% of the cost{oracle}")


def manifest_record(cert: Certificate, cost: str, data: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``build.thresholds`` (written by build and ``profile --write-thresholds``): the whole
    certificate (:meth:`Certificate.to_dict`; ``fit`` says certified or point), which costs it weighed (``cost``:
    ``macs`` or ``latency``) and the labelled images it rests on (``data``: ``source``, ``n``[, ``path``])."""
    return {**cert.to_dict(), "cost": cost, "data": dict(data)}


def stored_certificate(record: Any, thresholds: Optional[Sequence[float]] = None) -> Optional[Certificate]:
    """The :class:`Certificate` in a stored record (the manifest's ``build.thresholds``), or None: no record, the
    record of an edgekd from before certification (no ``fit``), a damaged one, or — with ``thresholds`` — one that
    covers other thresholds than those (the last exit's, which always answers, is not compared)."""
    if not isinstance(record, dict) or record.get("fit") not in (CERTIFIED, POINT):
        return None
    try:
        cert = Certificate.from_dict(record)
        cert.summary()  # every field it needs is there and of the right kind
    except (TypeError, ValueError, KeyError):
        return None
    if thresholds is not None:
        mine, used = list(cert.thresholds)[:-1], [float(t) for t in thresholds][:-1]
        if len(mine) != len(used) or any(abs(float(a) - b) > 1e-9 for a, b in zip(mine, used)):
            return None
    return cert


def describe_thresholds(record: Any, thresholds: Optional[Sequence[float]] = None) -> str:
    """The one-line summary of a stored record (see :func:`stored_certificate`); :data:`NOT_CERTIFIED` for a bundle
    without one (or with an old one), and when ``thresholds`` (those in use) are not the ones it covers."""
    cert = stored_certificate(record)
    if cert is None:
        return NOT_CERTIFIED
    if stored_certificate(record, thresholds) is None:
        return f"{NOT_CERTIFIED} (the thresholds in use are not those the manifest's certificate covers)"
    return cert.summary()


def _upper_bound(losses: int, n: int, delta: float) -> float:
    """The one-sided (1 - δ) Clopper-Pearson upper bound of a binomial rate (bisection on :func:`binomial_cdf`)."""
    if losses >= n:
        return 1.0
    lo, hi = 0.0, 1.0  # not losses / n: for δ > 0.5 the bound lies below the observed rate
    for _ in range(60):
        mid = (lo + hi) / 2
        if binomial_cdf(losses, n, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def oracle_saving(probs: np.ndarray, reference_pred: np.ndarray, costs: Sequence[float]) -> float:
    """The saving no threshold can beat on these images: each leaves at the first exit answering as the reference
    does (the last exit when none does). ``probs`` (E, N, K), ``reference_pred`` (N,), ``costs`` (E,)."""
    probs, costs = np.asarray(probs), np.asarray(costs, dtype=np.float64)
    same = probs.argmax(axis=2) == np.asarray(reference_pred)[None]  # (E, N)
    same[-1] = True
    return _saving(float(costs[same.argmax(axis=0)].mean()), costs) if probs.shape[1] else 0.0


def _learned_path(probs: np.ndarray, losses_of: Callable[[np.ndarray], np.ndarray], costs: np.ndarray,
                  grid: Sequence[float]) -> List[List[float]]:
    """Per-exit threshold vectors from safe (every exit at ``grid[0]``) to aggressive (every exit at ``grid[-1]``),
    one exit one grid step at a time: each step takes the move that saves the most cost per added loss on these
    (learning) images. ``losses_of(pred)`` → (N,) 0/1 losses of early exit's answers."""
    n_exits = probs.shape[0]
    steps = [0] * (n_exits - 1)

    def config(idx: Sequence[int]) -> List[float]:
        return [float(grid[k]) for k in idx] + [0.0]

    def score(idx: Sequence[int]) -> tuple[float, int]:
        res = simulate(probs, config(idx), costs)
        return float(res.mean_cost), int(losses_of(res.pred).sum())

    path = [config(steps)]
    cost, lost = score(steps)
    while any(k < len(grid) - 1 for k in steps):
        best = None
        for e in range(n_exits - 1):
            if steps[e] == len(grid) - 1:
                continue
            trial = steps[:e] + [steps[e] + 1] + steps[e + 1:]
            c, k = score(trial)
            value = (cost - c) / (max(k - lost, 0) + 1.0)  # cost saved per added loss (+1: no division by zero)
            if best is None or value > best[0]:
                best = (value, trial, c, k)
        _, steps, cost, lost = best
        path.append(config(steps))
    return path


def certify_thresholds(probs: np.ndarray, labels: Optional[np.ndarray], reference_pred: np.ndarray,
                       costs: Sequence[float], *, epsilon: float, delta: float = 0.1, reference: str = "reference",
                       grid: Sequence[float] = GRID, family: str = GLOBAL) -> Certificate:
    """Certify per-exit thresholds on ``n`` images (see the module docstring).

    ``probs`` (E, N, K): the built segment chain's per-exit probabilities (the numbers ``edgekd run`` decides on);
    ``labels`` (N,), or None for unlabelled images (the :data:`DISAGREEMENT` loss); ``reference_pred`` (N,): the
    reference's predictions (:func:`reference_predictions`, or the bundle's full answer on unlabelled images);
    ``costs`` (E,): cumulative cost of answering at each exit; ``epsilon`` in points; ``delta`` in (0, 1);
    ``family``: :data:`GLOBAL` or :data:`PATH`.
    """
    probs, reference_pred = np.asarray(probs), np.asarray(reference_pred)
    labels = None if labels is None else np.asarray(labels)
    n_exits, n = probs.shape[:2]
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not 0.0 < epsilon < 100.0:
        raise ValueError(f"epsilon must be in (0, 100) points, got {epsilon}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if n == 0:
        raise ValueError("certification needs images")
    eps = epsilon / 100.0
    costs = np.asarray(costs, dtype=np.float64)
    ref_right = None if labels is None else reference_pred == labels  # (N,)

    def losses_of(pred: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if labels is None:
            return pred != reference_pred[rows]
        return (pred != labels[rows]) & ref_right[rows]

    rows = np.arange(n)
    if family == PATH and n_exits > 2:
        order = np.random.default_rng(PATH_SEED).permutation(n)
        learn, rows = np.sort(order[:int(n * PATH_LEARN_FRACTION)]), np.sort(order[int(n * PATH_LEARN_FRACTION):])
        configs = _learned_path(probs[:, learn], lambda pred: losses_of(pred, learn), costs, grid)
    else:  # one threshold for every exit (with two exits the path is this one)
        learn = rows[:0]
        configs = [[float(t)] * (n_exits - 1) + [0.0] for t in grid]
    test = probs[:, rows]
    m = len(rows)

    def evaluate(th: List[float]):
        res = simulate(test, th, costs, None if labels is None else labels[rows])
        return th, res, int(losses_of(res.pred, rows).sum())

    kept = evaluate(configs[0])  # the safe set: only the last exit answers
    for th in configs:  # fixed-sequence testing: safe → aggressive, stop at the first failure
        th, res, losses = evaluate(th)
        if p_value(losses, m, eps) > delta:
            break
        if res.mean_cost < kept[1].mean_cost:  # strictly cheaper: a set that saves nothing stays the safe one
            kept = (th, res, losses)
    th, res, losses = kept
    certified = n_exits > 1 and any(t < grid[0] for t in th[:-1])  # one exit: nothing can leave early
    labelled = labels is not None
    return Certificate(
        thresholds=th, certified=bool(certified), epsilon=float(epsilon), delta=float(delta), n=int(m),
        reference=reference,
        reference_accuracy=float(100.0 * np.mean(ref_right[rows])) if labelled else None,
        accuracy=float(res.accuracy) if labelled else None,
        loss_rate=float(100.0 * losses / m), upper_bound=float(100.0 * _upper_bound(losses, m, delta)),
        mean_cost=float(res.mean_cost), saving=_saving(res.mean_cost, costs), exit_fraction=res.exit_fraction,
        images_needed=images_needed(eps, delta), certifiable_epsilon=float(100.0 * certifiable_epsilon(m, delta)),
        loss=LABELLED if labelled else DISAGREEMENT, family=PATH if len(learn) else GLOBAL, n_learn=int(len(learn)),
        oracle_saving=oracle_saving(probs, reference_pred, costs))


def _saving(mean_cost: float, costs: np.ndarray) -> float:
    """The share of the last exit's cost saved (0 when costs are unknown, i.e. all zero)."""
    full = float(costs[-1])
    return float(1.0 - mean_cost / full) if full > 0 else 0.0


def point_thresholds(probs: np.ndarray, labels: np.ndarray, reference_pred: np.ndarray, costs: Sequence[float], *,
                     epsilon: float, reference: str = "reference") -> Certificate:
    """The point fit in the certificate's record: the cheapest per-exit thresholds whose accuracy on these images
    stays within ``epsilon`` points of the reference's (:func:`edgekd.core.early_exit.fit_thresholds`). A point
    estimate, not certified (``fit`` :data:`POINT`, ``certified`` False, no δ and no bound): on new images it may
    lose more."""
    probs, labels, reference_pred = np.asarray(probs), np.asarray(labels), np.asarray(reference_pred)
    if epsilon < 0:
        raise ValueError(f"epsilon must be at least 0 points, got {epsilon}")
    n = int(labels.size)
    if n == 0:
        raise ValueError("fitting thresholds needs labelled images")
    costs = np.asarray(costs, dtype=np.float64)
    ref_right = reference_pred == labels
    ref_acc = float(100.0 * np.mean(ref_right))
    fit = fit_thresholds(probs, labels, costs, reference_accuracy=ref_acc, target_drop=epsilon)
    res = simulate(probs, fit.thresholds, costs, labels)
    losses = int(np.sum((res.pred != labels) & ref_right))
    return Certificate(
        thresholds=[float(t) for t in fit.thresholds], certified=False, epsilon=float(epsilon), delta=None, n=n,
        reference=reference, reference_accuracy=ref_acc, accuracy=float(res.accuracy),
        loss_rate=float(100.0 * losses / n), upper_bound=None, mean_cost=float(res.mean_cost),
        saving=_saving(res.mean_cost, costs), exit_fraction=res.exit_fraction, images_needed=None,
        certifiable_epsilon=None, method=POINT_METHOD, fit=POINT,
        oracle_saving=oracle_saving(probs, reference_pred, costs))


def early_exit_thresholds(probs_chain: np.ndarray, probs_full: np.ndarray, labels: Optional[np.ndarray],
                          costs: Sequence[float], *, epsilon: float, delta: float = 0.1, fit: str = CERTIFIED,
                          vote_weights: Optional[Sequence[float]] = None, family: str = GLOBAL,
                          reference: Optional[str] = None) -> Certificate:
    """What build and ``profile --write-thresholds`` store: the reference, then thresholds on the segment chain's
    ``probs_chain`` — certified (:func:`certify_thresholds`, in ``family``) or, with ``fit`` :data:`POINT`, the point
    estimate (:func:`point_thresholds`). With ``labels`` the reference is chosen on them
    (:func:`reference_predictions` of the full graph's ``probs_full``); without (None: the site's own unlabelled
    frames) it is ``reference``, the bundle's full answer (e.g. ``exit2``, ``vote:soft``: no test can choose one
    without labels), and the loss is :data:`DISAGREEMENT`."""
    if fit not in (CERTIFIED, POINT):
        raise ValueError(f"fit must be {CERTIFIED!r} or {POINT!r}, got {fit!r}")
    if labels is None:
        if fit == POINT or reference is None:
            raise ValueError("unlabelled images need the certified fit and the bundle's full answer as reference")
        name, ref_pred = reference, reference_answer(probs_full, reference, vote_weights)
    else:
        name, ref_pred, _ = reference_predictions(probs_full, labels, vote_weights)
    if fit == POINT:
        return point_thresholds(probs_chain, labels, ref_pred, costs, epsilon=epsilon, reference=name)
    return certify_thresholds(probs_chain, labels, ref_pred, costs, epsilon=epsilon, delta=delta, reference=name,
                              family=family)

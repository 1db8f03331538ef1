"""Statistics of accuracy on a finite labelled sample: exact binomial tails and the paired comparison of two models.

Two models answering the same n images are *paired*: what decides whether one is worse is not the two accuracies but
the images where they disagree. Of those, ``lost`` is the number the reference answers right and the other wrong,
``gained`` the reverse; the accuracy drop is ``(lost - gained) / n``, and every image where both agree adds nothing.

* :func:`mcnemar_p` is the exact McNemar test of "no drop at all" (a two-sided binomial test of ``lost`` among the
  ``lost + gained`` disagreements at one half).
* :func:`drop_interval` is the confidence interval of the drop: Tango's score interval for a difference of paired
  proportions (Tango, "Equivalence test and confidence interval for the difference in proportions for the paired-
  sample design", Statistics in Medicine 17, 1998). It stays sensible where the Wald interval does not: with no
  disagreement at all it is not ``[0, 0]`` but about ``[-3.8/n, 3.8/n]`` (95%).
* :func:`images_to_decide` is about how many images the same disagreement rates would need for that interval to
  clear a budget.

Derivation used here (so the code can be checked against it): cells ``p_lost``, ``p_gained``; the drop is
``d = p_lost - p_gained``. Under the null ``d = d0`` the maximum-likelihood ``q = p_gained`` solves
``2n q^2 + (d0 (2n - lost + gained) - (lost + gained)) q - gained d0 (1 - d0) = 0`` (the positive root), and the
score statistic is ``(lost - gained - n d0) / sqrt(n (2q + d0 - d0^2))``, decreasing in ``d0``; the interval is the set
of ``d0`` whose statistic lies within the normal quantile, found by bisection. Torch-free, numpy-free (core).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Optional, Tuple


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) <= k)``, exactly (summed in log space, so n in the hundred thousands is fine)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
             for j in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact two-sided McNemar p-value of "the two models are equally accurate", from the disagreements alone."""
    m = lost + gained
    if m == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(lost, gained), m, 0.5))


def _check_counts(lost: int, gained: int, n: int) -> None:
    if n <= 0 or lost < 0 or gained < 0 or lost + gained > n:
        raise ValueError(f"invalid paired counts: lost={lost}, gained={gained}, n={n}")


def _score(d0: float, lost: int, gained: int, n: int) -> float:
    """Tango's score statistic of the null "drop = d0" (a fraction in (-1, 1)); see the module docstring."""
    a = 2.0 * n
    b = d0 * (2 * n - lost + gained) - (lost + gained)
    c = -gained * d0 * (1.0 - d0)
    q = (-b + math.sqrt(max(b * b - 4.0 * a * c, 0.0))) / (2.0 * a)
    var = n * (2.0 * q + d0 - d0 * d0)
    diff = lost - gained - n * d0
    if var <= 0.0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def drop_interval(lost: int, gained: int, n: int, confidence: float = 0.95) -> Tuple[float, float]:
    """Two-sided ``confidence`` interval of the accuracy drop, in points (percent of images), from paired counts."""
    _check_counts(lost, gained, n)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)

    def root(target: float) -> float:  # the d0 in (-1, 1) where the score (decreasing in d0) crosses ``target``
        lo, hi = -1.0, 1.0
        for _ in range(80):
            mid = (lo + hi) / 2.0
            if _score(mid, lost, gained, n) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2.0

    return 100.0 * root(z), 100.0 * root(-z)


def images_to_decide(lost: int, gained: int, n: int, budget: float, confidence: float = 0.95,
                     limit: int = 10 ** 9) -> Optional[int]:
    """About how many images, at the disagreement rates seen in these ``n``, would put the drop's interval clear of
    ``budget`` (points) on one side: the same interval (:func:`drop_interval`) on counts scaled to a larger sample,
    the smallest such size found by doubling and bisection. None when the observed drop equals the budget (no
    sample size separates them) or more than ``limit`` images would be needed."""
    _check_counts(lost, gained, n)
    if (lost - gained) / n == budget / 100.0:
        return None

    def decided(size: int) -> bool:
        lo, hi = drop_interval(round(lost * size / n), round(gained * size / n), size, confidence)
        return hi <= budget or lo > budget

    if decided(n):
        return n
    small, big = n, 2 * n
    while not decided(big):
        if big > limit:
            return None
        small, big = big, 2 * big
    while big - small > max(1, small // 100):  # to within 1%: it is an estimate
        mid = (small + big) // 2
        if decided(mid):
            big = mid
        else:
            small = mid
    return big

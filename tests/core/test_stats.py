"""Accuracy statistics (edgekd.core.stats): the exact binomial tail, the exact McNemar test, Tango's paired interval
(checked by its coverage on simulated pairs and against a paired bootstrap) and the sample size that would decide."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.core.certify import p_value
from edgekd.core.stats import binomial_cdf, drop_interval, images_to_decide, mcnemar_p


def _direct_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(0, min(k, n) + 1))


@pytest.mark.parametrize("k, n, p", [(0, 10, 0.3), (3, 10, 0.3), (9, 10, 0.5), (5, 200, 0.05), (12, 460, 0.005),
                                     (40, 1000, 0.05), (100, 300, 0.4)])
def test_binomial_cdf_equals_a_direct_sum(k, n, p):
    assert binomial_cdf(k, n, p) == pytest.approx(_direct_cdf(k, n, p), rel=1e-9, abs=1e-300)
    assert p_value(k, n, p) == binomial_cdf(k, n, p)


def test_binomial_cdf_edges():
    assert binomial_cdf(-1, 10, 0.5) == 0.0
    assert binomial_cdf(10, 10, 0.5) == 1.0 and binomial_cdf(3, 10, 0.0) == 1.0 and binomial_cdf(3, 10, 1.0) == 0.0
    assert 0.0 <= binomial_cdf(50, 200_000, 0.001) < 1e-10  # large n: summed in log space, no overflow


def test_mcnemar_exact_values():
    # 7 lost, 0 gained: both tails of Binomial(7, 1/2) at 0 and 7, 2/128
    assert mcnemar_p(7, 0) == pytest.approx(2 / 128)
    assert mcnemar_p(0, 7) == pytest.approx(2 / 128)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(10, 2) == pytest.approx(2 * _direct_cdf(2, 12, 0.5))


def test_interval_of_the_issue_example_contains_the_budget():
    # 500 images, drop 1.4 points with 97.4% agreement: 13 disagreements, 10 lost and 3 gained
    lo, hi = drop_interval(10, 3, 500)
    assert lo < 1.0 < hi  # a 1-point budget cannot be told apart from the observed 1.4
    assert lo < 1.4 < hi and hi - lo > 1.0  # the paired standard error is near one point: the interval is wide
    need = images_to_decide(10, 3, 500, budget=1.0)
    assert need is not None and need > 500


def test_interval_is_sensible_without_disagreements():
    lo, hi = drop_interval(0, 0, 500)
    assert lo < 0.0 < hi and hi == pytest.approx(-lo)
    assert 0.5 < hi < 1.0  # about 3.84/n, not 0: no disagreement in 500 does not prove a zero drop


def test_interval_is_monotone_in_the_counts_and_narrows_with_n():
    base = drop_interval(20, 5, 1000)
    assert drop_interval(25, 5, 1000)[0] > base[0] and drop_interval(20, 10, 1000)[1] < base[1]
    big = drop_interval(200, 50, 10000)  # same rates, ten times the images
    assert big[1] - big[0] < (base[1] - base[0]) / 2.5


@pytest.mark.parametrize("p_lost, p_gained, n", [(0.02, 0.006, 500), (0.01, 0.01, 1000), (0.004, 0.0, 800),
                                                 (0.05, 0.03, 300)])
def test_interval_covers_the_true_drop(p_lost, p_gained, n):
    """Coverage on simulated paired samples: a 95% interval holds the true drop about 95% of the time."""
    rng = np.random.default_rng(0)
    true = 100.0 * (p_lost - p_gained)
    cells = rng.multinomial(n, [p_lost, p_gained, 1.0 - p_lost - p_gained], size=1500)
    hits = 0
    for lost, gained, _ in cells:
        lo, hi = drop_interval(int(lost), int(gained), n)
        hits += lo <= true <= hi
    assert 0.925 <= hits / len(cells) <= 0.985


def test_interval_agrees_with_a_paired_bootstrap():
    """Away from the edges the score interval and a paired bootstrap of the same counts agree within a tenth of
    a point (the bootstrap resamples images, i.e. the cells, with replacement)."""
    lost, gained, n = 60, 25, 2000
    rng = np.random.default_rng(1)
    boot = rng.multinomial(n, [lost / n, gained / n, 1 - (lost + gained) / n], size=40000)
    drops = 100.0 * (boot[:, 0] - boot[:, 1]) / n
    b_lo, b_hi = np.percentile(drops, [2.5, 97.5])
    lo, hi = drop_interval(lost, gained, n)
    assert abs(lo - b_lo) < 0.1 and abs(hi - b_hi) < 0.1


def test_images_to_decide():
    assert images_to_decide(10, 10, 500, budget=0.0) is None  # the drop equals the budget exactly
    need = images_to_decide(30, 10, 1000, budget=1.0)  # drop 2.0 against a 1.0 budget
    lo, _ = drop_interval(int(30 * need / 1000), int(10 * need / 1000), need)
    assert lo == pytest.approx(1.0, abs=0.15)  # at that size the interval's edge reaches the budget


@pytest.mark.parametrize("args", [(-1, 0, 10), (5, 6, 10), (0, 0, 0)])
def test_invalid_counts_are_refused(args):
    with pytest.raises(ValueError):
        drop_interval(*args)

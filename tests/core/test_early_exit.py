import numpy as np
import pytest

from edgekd.core.early_exit import NEVER, fit_thresholds, simulate
from edgekd.core.vote import softmax, vote


def _probs(seed=0, n=400, k=5):
    """Three exits of rising quality: deeper exits are right more often and more confident."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    out = []
    for quality in (1.0, 2.0, 4.0):
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), labels] += quality * rng.uniform(0, 2, n)
        out.append(softmax(logits))
    return np.stack(out), labels


def test_threshold_zero_answers_at_exit0_and_above_one_at_last():
    probs, labels = _probs()
    r0 = simulate(probs, [0.0, 0.0, 0.0], [1, 2, 3], labels)
    assert r0.exit_fraction == [1.0, 0.0, 0.0] and r0.mean_cost == 1.0
    assert r0.accuracy == pytest.approx(100 * np.mean(probs[0].argmax(1) == labels))
    r_last = simulate(probs, [NEVER, NEVER, 0.0], [1, 2, 3], labels)
    assert r_last.exit_fraction == [0.0, 0.0, 1.0]
    assert r_last.accuracy == pytest.approx(100 * np.mean(probs[2].argmax(1) == labels))


def test_samples_leave_at_first_confident_exit():
    probs = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.2, 0.8], [0.3, 0.7]]])  # (E=2, N=2, K=2)
    r = simulate(probs, [0.8, 0.0])
    assert r.exit_taken.tolist() == [0, 1] and r.pred.tolist() == [0, 1]


def test_fitted_thresholds_keep_the_target_and_save_cost():
    probs, labels = _probs()
    ref = 100 * np.mean(vote(probs, "soft") == labels)
    fit = fit_thresholds(probs, labels, [1.0, 2.0, 3.0], reference_accuracy=ref, target_drop=0.5)
    check = simulate(probs, fit.thresholds, [1.0, 2.0, 3.0], labels)
    assert check.accuracy == pytest.approx(fit.accuracy)
    assert fit.accuracy >= fit.target_accuracy - 1e-9
    if fit.feasible:
        assert fit.target_accuracy == pytest.approx(ref - 0.5)
    assert fit.mean_cost <= 3.0 and fit.thresholds[-1] == 0.0
    # a looser target can only lower the cost
    loose = fit_thresholds(probs, labels, [1.0, 2.0, 3.0], reference_accuracy=ref, target_drop=20.0)
    assert loose.mean_cost <= fit.mean_cost and loose.mean_cost < 3.0


def _grid_optimum(probs, labels, costs, target):
    """Brute force over a grid of (t0, t1): the cheapest set that keeps ``target``."""
    best = None
    for t0 in np.linspace(0, 1, 41):
        for t1 in np.linspace(0, 1, 41):
            res = simulate(probs, [t0, t1, 0.0], costs, labels)
            if res.accuracy >= target - 1e-9 and (best is None or res.mean_cost < best[1]):
                best = ([t0, t1, 0.0], res.mean_cost)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_is_never_worse_than_a_single_global_threshold_or_a_given_start(seed):
    probs, labels = _probs(seed=seed)
    costs = [1.0, 2.0, 3.0]
    ref = 100 * np.mean(vote(probs, "soft") == labels)
    fit = fit_thresholds(probs, labels, costs, reference_accuracy=ref, target_drop=2.0)
    for t in np.linspace(0, 1, 101):  # every feasible global threshold costs at least as much
        res = simulate(probs, [t, t, 0.0], costs, labels)
        if res.accuracy >= fit.target_accuracy - 1e-9:
            assert fit.mean_cost <= res.mean_cost + 1e-12
    optimum, cost = _grid_optimum(probs, labels, costs, fit.target_accuracy)
    seeded = fit_thresholds(probs, labels, costs, reference_accuracy=ref, target_drop=2.0, starts=[optimum])
    assert seeded.mean_cost <= cost + 1e-12 and seeded.accuracy >= seeded.target_accuracy - 1e-9
    assert seeded.mean_cost <= fit.mean_cost + 1e-12
    # a start that misses the target is ignored, never returned
    bad = fit_thresholds(probs, labels, costs, reference_accuracy=ref, target_drop=2.0, starts=[[0.0, 0.0, 0.0]])
    assert bad.accuracy >= bad.target_accuracy - 1e-9

"""Certified early-exit thresholds (edgekd.core.certify): the exact binomial tail, the image counts, fixed-sequence
testing, the safe set, the reference choice, the point fit's label and the stored record read back."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.core.certify import (
    CERTIFIED,
    GRID,
    NOT_CERTIFIED,
    POINT,
    Certificate,
    _upper_bound,
    certifiable_epsilon,
    certify_thresholds,
    describe_thresholds,
    early_exit_thresholds,
    images_needed,
    manifest_record,
    p_value,
    reference_predictions,
    stored_certificate,
)
from edgekd.core.early_exit import NEVER, simulate
from edgekd.core.stats import binomial_cdf
from edgekd.device.options import FITS

K = 4  # classes


def _probs(pred: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """(N, K) probabilities whose argmax is ``pred`` with max probability ``conf`` (the rest shared evenly)."""
    n = len(pred)
    p = np.tile(((1.0 - conf) / (K - 1))[:, None], (1, K))
    p[np.arange(n), pred] = conf
    return p


def test_images_needed_and_certifiable_epsilon():
    assert images_needed(0.005, 0.1) == 460
    assert (1 - 0.005) ** 460 <= 0.1 < (1 - 0.005) ** 459  # the fewest loss-free images with p-value <= δ
    assert images_needed(0.05, 0.1) == 45
    assert certifiable_epsilon(460, 0.1) <= 0.005 < certifiable_epsilon(459, 0.1)
    assert certifiable_epsilon(0, 0.1) == 1.0


@pytest.mark.parametrize("k, n, delta", [(0, 100, 0.1), (7, 400, 0.1), (30, 1000, 0.05), (50, 100, 0.7)])
def test_upper_bound_is_the_clopper_pearson_bound(k, n, delta):
    ub = _upper_bound(k, n, delta)
    assert binomial_cdf(k, n, ub) == pytest.approx(delta, abs=1e-6)
    if delta > 0.5:  # the bound then lies below the observed rate; a search starting at k / n would miss it
        assert ub < k / n


def _trap(n_a: int, n_b: int, n: int = 1000):
    """Two exits, the reference always right. A: exit 0 confident (0.97) and wrong; B: exit 0 unsure (0.5) and
    right, the last exit wrong; the rest: exit 0 unsure (0.3) and right. Loss by threshold t: above 0.97 n_b,
    in (0.5, 0.97] n_a + n_b, at 0.5 and below n_a."""
    labels = np.zeros(n, dtype=np.int64)
    a, b = slice(0, n_a), slice(n_a, n_a + n_b)
    pred0 = labels.copy()
    pred0[a] = 1
    conf0 = np.full(n, 0.3)
    conf0[a], conf0[b] = 0.97, 0.5
    pred1 = labels.copy()
    pred1[b] = 2
    probs = np.stack([_probs(pred0, conf0), _probs(pred1, np.full(n, 0.9))])
    return probs, labels


def test_fixed_sequence_stops_at_the_first_failure():
    probs, labels = _trap(n_a=30, n_b=20)
    costs = [1.0, 2.0]
    cert = certify_thresholds(probs, labels, labels, costs, epsilon=5.0, delta=0.1)
    # a set further along would pass on its own (30 losses in 1000 at ε = 5%) and save half the cost ...
    later = simulate(probs, [0.3, 0.0], costs, labels)
    assert p_value(int(np.sum(later.pred != labels)), 1000, 0.05) <= 0.1 and later.mean_cost == 1.0
    # ... but the sequence stopped at the first set that fails (60 losses), so only the safe set is certified
    assert p_value(50, 1000, 0.05) > 0.1
    assert not cert.certified and cert.thresholds == [NEVER, 0.0] and cert.exit_fraction == [0.0, 1.0]
    assert cert.loss_rate == pytest.approx(2.0) and cert.saving == 0.0
    assert "no early exit certified" in cert.summary() and "errs too often" in cert.summary()
    # without the trap the same data certifies that cheaper set
    probs, labels = _trap(n_a=30, n_b=0)
    free = certify_thresholds(probs, labels, labels, costs, epsilon=5.0, delta=0.1)
    assert free.certified and free.thresholds[0] <= 0.3 and free.mean_cost == 1.0
    assert free.upper_bound <= 5.0 and free.loss_rate == pytest.approx(3.0)
    assert free.summary().startswith("certified: early exit within 5 points of reference with 90% confidence")


def _perfect(n: int):
    """Three exits; exit 0 always right and sure: everything may leave there."""
    labels = np.arange(n) % K
    probs = np.stack([_probs(labels, np.full(n, 0.99))] * 3)
    return probs, labels


def test_the_safe_set_is_kept_when_there_are_too_few_images():
    probs, labels = _perfect(400)  # fewer than the 460 that ε = 0.5 points at δ = 0.1 needs, even with no error
    cert = certify_thresholds(probs, labels, labels, [1.0, 2.0, 3.0], epsilon=0.5, delta=0.1, reference="exit2")
    assert not cert.certified and cert.thresholds == [GRID[0], GRID[0], 0.0] and cert.exit_fraction[-1] == 1.0
    assert cert.images_needed == 460 and cert.certifiable_epsilon == pytest.approx(100 * (1 - 0.1 ** (1 / 400)))
    line = cert.summary()
    assert "no early exit certified within 0.5 points of exit2 at 90% confidence on 400 images" in line
    assert "kept the safe set" in line and "at least 460 images" in line and "at best 0.57 points" in line
    assert "\n" not in line
    more = certify_thresholds(*_perfect(500), _perfect(500)[1], [1.0, 2.0, 3.0], epsilon=0.5, delta=0.1)
    assert more.certified and more.exit_fraction[0] == 1.0 and more.saving == pytest.approx(2 / 3)
    assert more.thresholds == [0.99, 0.99, 0.0]  # of equally cheap sets, the first (most cautious) one


def test_one_exit_is_never_an_early_exit():
    labels = np.arange(600) % K
    probs = _probs(labels, np.full(600, 0.99))[None]
    cert = certify_thresholds(probs, labels, labels, [1.0], epsilon=1.0, delta=0.1)
    assert not cert.certified and cert.thresholds == [0.0]


def test_bad_arguments():
    probs, labels = _perfect(10)
    for kwargs in ({"epsilon": 0.0}, {"epsilon": 100.0}, {"epsilon": 1.0, "delta": 1.0}, {"epsilon": 1.0, "delta": 0}):
        with pytest.raises(ValueError):
            certify_thresholds(probs, labels, labels, [1, 2, 3], **kwargs)


def test_reference_is_the_deepest_exit_unless_a_vote_is_confidently_better():
    def sample(n, wrong_deep):
        labels = np.zeros(n, dtype=np.int64)
        sure = np.full(n, 0.6)
        last = np.where(np.arange(n) < wrong_deep, 1, 0)  # exit 2 wrong where exits 0 and 1 are right
        return np.stack([_probs(labels, sure), _probs(labels, sure), _probs(last, sure)]), labels

    # 2 of 8 images: both votes are 25 points ahead, but 8 images cannot tell that from noise
    probs, labels = sample(8, 2)
    name, pred, scores = reference_predictions(probs, labels)
    assert scores == {"exit2": 75.0, "vote:soft": 100.0, "vote:hard": 100.0}  # weighted: only with weights
    assert name == "exit2"
    np.testing.assert_array_equal(pred, probs[-1].argmax(axis=1))
    # 40 of 400: confidently ahead; the two votes tie and soft comes first
    probs, labels = sample(400, 40)
    name, pred, _ = reference_predictions(probs, labels)
    assert name == "vote:soft"
    np.testing.assert_array_equal(pred, labels)
    # only the weighted vote (leaning on exit 0) is right, on 400 images: it wins
    n = 400
    labels, ones = np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    probs = np.stack([_probs(labels, np.full(n, 0.9)), _probs(ones, np.full(n, 0.9)), _probs(ones, np.full(n, 0.4))])
    name, pred, scores = reference_predictions(probs, labels, [0.8, 0.1, 0.1])
    assert scores == {"exit2": 0.0, "vote:soft": 0.0, "vote:hard": 0.0, "vote:weighted": 100.0}
    assert name == "vote:weighted"
    assert reference_predictions(probs, labels)[0] == "exit2"  # without weights no vote beats it: the deepest exit


def test_point_fit_is_labelled_not_certified_and_certified_fit_names_its_reference():
    probs, labels = _perfect(300)
    point = early_exit_thresholds(probs, probs, labels, [1.0, 2.0, 3.0], epsilon=0.5, fit=POINT)
    assert point.fit == POINT and not point.certified and point.delta is None and point.upper_bound is None
    assert point.thresholds[-1] == 0.0 and point.exit_fraction[0] == 1.0  # on these images everything may leave
    assert point.summary().startswith("point estimate, not certified: ")
    cert = early_exit_thresholds(probs, probs, labels, [1.0, 2.0, 3.0], epsilon=5.0, delta=0.1)
    assert cert.fit == CERTIFIED and cert.certified and cert.reference == "exit2"
    assert (CERTIFIED, POINT) == tuple(FITS)  # the CLI's choices are the values the record holds
    with pytest.raises(ValueError):
        early_exit_thresholds(probs, probs, labels, [1.0, 2.0, 3.0], epsilon=5.0, fit="guess")


def test_the_stored_record_reads_back():
    probs, labels = _perfect(500)
    cert = certify_thresholds(probs, labels, labels, [1.0, 2.0, 3.0], epsilon=0.5, delta=0.1)
    record = manifest_record(cert, "macs", {"source": "val_sample", "n": 500})
    assert record["fit"] == "certified" and record["cost"] == "macs" and record["data"]["n"] == 500
    assert Certificate.from_dict(record) == cert
    assert describe_thresholds(record) == cert.summary()
    assert describe_thresholds(record, cert.thresholds) == cert.summary()
    assert stored_certificate(record, [0.5, 0.5, 0.0]) is None
    assert describe_thresholds(record, [0.5, 0.5, 0.0]).startswith(NOT_CERTIFIED + " (the thresholds in use")
    old = {"cost": "macs", "target_drop": 0.5, "vote_accuracy": 90.0, "feasible": True}  # before certification
    for r in (None, old, {"fit": "certified"}, "certified"):
        assert describe_thresholds(r) == NOT_CERTIFIED and stored_certificate(r) is None


def test_the_disagreement_loss_needs_no_labels_and_counts_every_other_answer():
    n = 600
    labels = np.zeros(n, dtype=np.int64)
    # exit 0 confident everywhere; it answers 1 on the first 30 images, where the deepest exit answers 0
    first = np.where(np.arange(n) < 30, 1, 0)
    probs = np.stack([_probs(first, np.full(n, 0.95)), _probs(labels, np.full(n, 0.6))])
    ref = probs[-1].argmax(axis=1)
    labelled = certify_thresholds(probs, labels, ref, [1, 2], epsilon=8.0, delta=0.1)
    free = certify_thresholds(probs, None, ref, [1, 2], epsilon=8.0, delta=0.1)
    assert free.loss == "disagreement" and labelled.loss == "labelled"
    assert free.loss_rate == labelled.loss_rate == 5.0  # here every disagreement is also an error
    assert free.accuracy is None and free.reference_accuracy is None
    assert "unlabelled" in free.summary() and free.certified
    # a disagreement where exit 0 is right counts without labels, never with them
    labels_right = first.copy()
    assert certify_thresholds(probs, labels_right, ref, [1, 2], epsilon=8.0, delta=0.1).loss_rate == 0.0
    assert certify_thresholds(probs, None, ref, [1, 2], epsilon=8.0, delta=0.1).loss_rate == 5.0


def test_oracle_saving_leaves_at_the_first_exit_answering_as_the_reference():
    from edgekd.core.certify import oracle_saving

    labels = np.array([0, 1, 2, 0])
    exit0, exit1, exit2 = np.array([0, 0, 0, 1]), np.array([0, 1, 0, 1]), np.array([0, 1, 2, 0])
    probs = np.stack([_probs(e, np.full(4, 0.9)) for e in (exit0, exit1, exit2)])
    # image 0 leaves at exit 0 (cost 1), image 1 at exit 1 (2), images 2 and 3 at exit 2 (4)
    assert oracle_saving(probs, labels, [1, 2, 4]) == pytest.approx(1 - (1 + 2 + 4 + 4) / 4 / 4)


def test_the_path_family_learns_on_a_third_and_certifies_on_the_rest():
    rng = np.random.default_rng(0)
    n, k = 900, 4
    labels = rng.integers(0, k, n)
    probs = np.stack([_probs(np.where(rng.random(n) < acc, labels, (labels + 1) % k), rng.uniform(0.3, 1.0, n))
                      for acc in (0.6, 0.8, 0.95)])
    cert = certify_thresholds(probs, labels, probs[-1].argmax(1), [1, 2, 3], epsilon=5.0, delta=0.1,
                              family="path")
    assert cert.family == "path" and cert.n_learn == n // 3 and cert.n == n - n // 3
    assert len(cert.thresholds) == 3 and cert.thresholds[-1] == 0.0
    two = certify_thresholds(probs[1:], labels, probs[-1].argmax(1), [2, 3], epsilon=5.0, delta=0.1, family="path")
    assert two.family == "global" and two.n == n  # with two exits the path is the global family

"""The certificate keeps its promise on a real student's outputs; the old point fit does not.

The pool is a 4,000-image sample of a real CIFAR-10 multi-exit ResNet-20's per-exit probabilities on test images
(the exported bundle's segment chain on ONNX Runtime; written by ``scripts/bench_certify.py --fixture``, see
tests/fixtures/README.md). Over many random calibration/test splits, thresholds are chosen on the calibration part
and judged on the test part: the certified ones may exceed the budget ε on test in at most δ of the splits (plus a
binomial slack for the finite number of splits); the point fit, chosen the old way on the same calibration parts,
exceeds it far more often. ``scripts/bench_certify.py`` runs the larger version (10,000 images, 100 splits).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.certify import early_exit_thresholds, reference_answer
from edgekd.core.early_exit import simulate

POOL = Path(__file__).resolve().parents[1] / "fixtures" / "cifar10-resnet20-chain.npz"
SPLITS = 40
N_CAL = 2000
EPSILON = 2.0  # points
DELTA = 0.1


@pytest.fixture(scope="module")
def pool():
    with np.load(POOL) as f:
        return f["chain"].astype(np.float32), f["labels"].astype(np.int64), f["macs"].astype(np.float64)


def _slack(splits: int, delta: float, z: float = 3.0) -> float:
    """How far above δ an honest violation rate may land by chance over ``splits`` splits (3 standard errors)."""
    return z * math.sqrt(delta * (1 - delta) / splits)


def test_the_pool_is_a_real_student(pool):
    chain, labels, macs = pool
    assert chain.shape == (3, 4000, 10) and labels.shape == (4000,)
    top1 = [float(np.mean(p.argmax(1) == labels)) for p in chain]
    assert 0.3 < top1[0] < top1[-1] < 0.95  # deeper exits are better, far from chance and from perfect
    assert np.all(np.diff(macs) > 0)


def test_certified_thresholds_keep_the_budget_on_test_and_the_point_fit_does_not(pool):
    chain, labels, macs = pool
    rng = np.random.default_rng(0)
    violations = {"certified": 0, "point": 0}
    saved = {"certified": [], "point": []}
    for _ in range(SPLITS):
        perm = rng.permutation(labels.size)
        cal, test = perm[:N_CAL], perm[N_CAL:]
        # what `edgekd build --fit certified|point` stores, fitted on the calibration part (the chain's outputs stand
        # for the full graph's, which they equal up to float rounding); the reference is chosen there too
        fits = {fit: early_exit_thresholds(chain[:, cal], chain[:, cal], labels[cal], macs, epsilon=EPSILON,
                                           delta=DELTA, fit=fit) for fit in violations}
        ref_test_acc = 100.0 * np.mean(reference_answer(chain[:, test], fits["certified"].reference) == labels[test])
        for fit, record in fits.items():
            res = simulate(chain[:, test], record.thresholds, macs, labels[test])
            violations[fit] += (ref_test_acc - res.accuracy) > EPSILON
            saved[fit].append(1.0 - res.mean_cost / macs[-1])
    rate = {fit: v / SPLITS for fit, v in violations.items()}
    assert rate["certified"] <= DELTA + _slack(SPLITS, DELTA), rate
    assert rate["point"] > rate["certified"] + 0.2, rate  # the old fit breaks its promise far more often
    assert np.mean(saved["certified"]) > 0.05, saved  # and the certificate still saves a useful share of the cost


@pytest.mark.parametrize("family", ["global", "path"])
def test_label_free_certificates_keep_their_budget_on_held_out_images(pool, family):
    """Certified on unlabelled calibration images (the disagreement loss against the deepest exit), judged on the
    test part: the disagreement rate — and so the accuracy drop, which it bounds — exceeds ε in at most δ of the
    splits (plus the binomial slack)."""
    chain, labels, macs = pool
    rng = np.random.default_rng(1)
    over = {"disagreement": 0, "drop": 0}
    saved = []
    for _ in range(SPLITS):
        perm = rng.permutation(labels.size)
        cal, test = perm[:N_CAL], perm[N_CAL:]
        cert = early_exit_thresholds(chain[:, cal], chain[:, cal], None, macs, epsilon=EPSILON, delta=DELTA,
                                     family=family, reference="exit2")
        assert cert.loss == "disagreement" and cert.accuracy is None and cert.family == family
        res = simulate(chain[:, test], cert.thresholds, macs, labels[test])
        deepest = chain[2, test].argmax(1)
        over["disagreement"] += 100.0 * np.mean(res.pred != deepest) > EPSILON
        over["drop"] += 100.0 * np.mean(deepest == labels[test]) - res.accuracy > EPSILON
        saved.append(1.0 - res.mean_cost / macs[-1])
    for what, count in over.items():
        assert count / SPLITS <= DELTA + _slack(SPLITS, DELTA), (what, count)
    assert np.mean(saved) > 0.05  # and it does let images leave early

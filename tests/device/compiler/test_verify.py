"""Build verification (edgekd.device.compiler.verify): the paired verdict per exit and for the vote on constructed
predictions where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.core.stats import drop_interval
from edgekd.device.compiler.verify import OVER, UNDECIDED, WITHIN, Verification, compare, verdict_line

K = 10


def _probs(pred: np.ndarray) -> np.ndarray:
    """(N, K) one-hot-ish probabilities whose argmax is ``pred``."""
    p = np.full((len(pred), K), 0.01, dtype=np.float32)
    p[np.arange(len(pred)), pred] = 0.91
    return p


def _pair(n: int, lost: int, gained: int, seed: int = 0):
    """Labels, reference and built (E=1, N, K) probs: the reference is right on 70%; the built model loses ``lost``
    images the reference had right and gains ``gained`` it had wrong."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    ref = labels.copy()
    wrong = rng.permutation(n)[: int(0.3 * n)]
    ref[wrong] = (labels[wrong] + 1) % K
    built = ref.copy()
    right_idx = np.setdiff1d(np.arange(n), wrong)
    built[right_idx[:lost]] = (labels[right_idx[:lost]] + 2) % K
    built[wrong[:gained]] = labels[wrong[:gained]]
    return labels, _probs(ref)[None], _probs(built)[None]


def test_the_issue_example_is_undecided_and_says_how_many_images_would_tell():
    labels, ref, built = _pair(500, lost=10, gained=3)  # 1.4 points, 97.4% agreement
    rep = compare(built, ref, labels, "soft", None, max_drop=1.0)
    row = rep.rows[0]
    assert row.drop == pytest.approx(1.4) and row.agreement == pytest.approx(97.4)
    assert (row.lost, row.gained) == (10, 3)
    assert row.verdict == UNDECIDED and rep.verdict == UNDECIDED
    assert list(row.interval) == pytest.approx(list(drop_interval(10, 3, 500)))
    assert row.images_to_decide > 500
    line = verdict_line(rep, "int8", 1.0)
    assert "cannot be told apart" in line and f"{row.images_to_decide:,}" in line


def test_a_large_drop_is_over_and_a_tiny_one_within():
    labels, ref, built = _pair(2000, lost=120, gained=10)  # 5.5 points
    rep = compare(built, ref, labels, "soft", None, max_drop=1.0)
    assert rep.verdict == OVER and rep.rows[0].interval[0] > 1.0
    assert "confidently" in verdict_line(rep, "int8", 1.0)
    labels, ref, built = _pair(2000, lost=3, gained=2)
    rep = compare(built, ref, labels, "soft", None, max_drop=1.0)
    assert rep.verdict == WITHIN and rep.rows[0].interval[1] <= 1.0
    assert rep.rows[0].images_to_decide is None


def test_the_same_drop_is_decided_by_sample_size():
    verdicts = []
    for n in (300, 3000, 30000):  # the same 2.5-point drop, with ten times more images each time
        labels, ref, built = _pair(n, lost=n * 3 // 100, gained=n // 200)
        verdicts.append(compare(built, ref, labels, "soft", None, max_drop=1.0).verdict)
    assert verdicts == [UNDECIDED, OVER, OVER]


def test_the_vote_row_and_the_worst_verdict():
    labels, ref1, built1 = _pair(1000, lost=0, gained=0, seed=1)
    _, ref2, built2 = _pair(1000, lost=80, gained=5, seed=1)  # exit1 clearly worse
    ref, built = np.concatenate([ref1, ref2]), np.concatenate([built1, built2])  # (2, N, K)
    rep = compare(built, ref, labels, "soft", None, max_drop=1.0)
    assert [r.name for r in rep.rows] == ["exit0", "exit1", "vote:soft"]
    assert rep.rows[0].verdict == WITHIN and rep.rows[1].verdict == OVER
    assert rep.verdict == OVER and rep.n == 1000 and rep.confidence == 0.95


def test_the_report_round_trips_through_the_json_build_keeps():
    labels, ref, built = _pair(500, lost=10, gained=3)
    rep = compare(built, ref, labels, "soft", None, max_drop=1.0)
    data = rep.to_json()
    assert list(data) == ["rows", "max_drop", "n", "verdict", "confidence", "method"]
    assert list(data["rows"][0]) == ["name", "reference_top1", "built_top1", "drop", "agreement", "lost", "gained",
                                     "interval", "p_value", "verdict", "images_to_decide"]
    assert isinstance(data["rows"][0]["interval"], list)
    assert Verification.from_json({**data, "max_drop_allowed": 1.0}) == rep

import numpy as np
import pytest

from edgekd.core.errors import ConfigError
from edgekd.core.vote import accuracy, fit_vote_weights, softmax, vote, vote_scores


def test_soft_vote_is_mean_of_probabilities():
    probs = np.array([[[0.6, 0.4]], [[0.1, 0.9]], [[0.7, 0.3]]])  # (E=3, N=1, K=2)
    np.testing.assert_allclose(vote_scores(probs, "soft"), [[1.4 / 3, 1.6 / 3]])
    assert vote(probs, "soft")[0] == 1


def test_hard_vote_majority_and_tie_break_by_summed_probability():
    # majority: exits 0 and 2 say class 0 even though exit 1 is very confident in class 1
    probs = np.array([[[0.6, 0.4]], [[0.01, 0.99]], [[0.55, 0.45]]])
    assert vote(probs, "hard")[0] == 0
    assert vote(probs, "soft")[0] == 1
    # tie (one vote each): class with the larger summed probability wins
    tie = np.array([[[0.51, 0.49, 0.0]], [[0.0, 0.9, 0.1]]])
    assert vote(tie, "hard")[0] == 1


def test_weighted_vote_and_fitted_weights_prefer_the_good_exit():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    good = np.full((400, 4), 0.05)
    good[np.arange(400), labels] = 0.85
    bad = softmax(rng.normal(size=(400, 4)))
    probs = np.stack([bad, good])  # (2, 400, 4)
    w = fit_vote_weights(probs, labels)
    assert w.shape == (2,) and w.sum() == pytest.approx(1.0) and w[1] > 0.9
    assert accuracy(vote(probs, "weighted", w), labels) == 100.0
    np.testing.assert_allclose(vote_scores(probs, "weighted", np.array([0.0, 1.0])), good)


def test_bad_rule_and_weights_raise():
    probs = np.ones((2, 3, 4)) / 4
    with pytest.raises(ConfigError):
        vote(probs, "median")
    with pytest.raises(ConfigError):
        vote(probs, "weighted")
    with pytest.raises(ConfigError):
        vote(probs, "weighted", np.array([1.0, -1.0]))


def test_full_answer_needs_a_vote_to_beat_the_deepest_exit_beyond_its_paired_interval():
    from edgekd.core.vote import full_answer

    def sample(n, deep_wrong, first_wrong=0):
        labels = np.zeros(n, dtype=np.int64)
        right = np.tile([0.7, 0.3], (n, 1))
        deep, first = right.copy(), right.copy()
        deep[:deep_wrong] = [0.3, 0.7]
        first[n - first_wrong:] = [0.3, 0.7]
        return np.stack([first, right, deep]), labels

    small = full_answer(*sample(12, 3))
    assert small.name == "exit2" and small.answer == "deepest"
    assert small.scores["vote:soft"] - small.scores["exit2"] == 25.0  # ahead, but within noise
    low, high = small.gains["vote:soft"]
    assert low <= 0 < 25.0 <= high + 1e-9
    large = full_answer(*sample(600, 60))
    assert large.name == "vote:soft" and large.answer == "vote" and large.gains["vote:soft"][0] > 0
    np.testing.assert_array_equal(large.predictions, np.zeros(600))
    # a vote that is right where the deepest exit is, and wrong elsewhere, never answers
    assert full_answer(*sample(600, 0, first_wrong=300), [1.0, 0.0, 0.0]).name == "exit2"

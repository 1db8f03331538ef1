"""Cascade answers (ZTW-style geometric ensembles of exits 0..i): the identity reproduces the exits, fitting never
makes a level's validation NLL worse than its exit alone, and a level gains where earlier exits carry signal."""

from __future__ import annotations

import numpy as np

from edgekd.core.cascade import cascade_probs, fit_cascade


def _nll(p: np.ndarray, labels: np.ndarray) -> float:
    return -float(np.mean(np.log(p[np.arange(len(labels)), labels])))


def _noisy_exits(n=600, k=5, seed=0):
    """Three exits that each see the true class with independent noise: together they know more than any alone."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    probs = []
    for strength in (1.0, 1.2, 1.5):
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), labels] += strength
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(probs), labels


def test_identity_weights_give_the_exits_themselves():
    probs, _ = _noisy_exits()
    np.testing.assert_allclose(cascade_probs(probs, np.eye(3)), probs, atol=1e-9)


def test_fitted_levels_never_lose_to_their_exit_alone_and_gain_from_earlier_exits():
    probs, labels = _noisy_exits()
    w = fit_cascade(probs, labels)
    assert np.all(w >= 0) and np.allclose(w, np.tril(w))
    q = cascade_probs(probs, w)
    for i in range(3):
        assert _nll(q[i], labels) <= _nll(probs[i], labels) + 1e-9
    assert _nll(q[2], labels) < _nll(probs[2], labels) - 0.05  # independent evidence: a clear gain
    assert np.all(w[2, :2] > 0)
    # held-out images from the same distribution: the fitted deepest level is also more accurate
    test, test_labels = _noisy_exits(seed=1)
    qt = cascade_probs(test, w)
    assert np.mean(qt[2].argmax(1) == test_labels) > np.mean(test[2].argmax(1) == test_labels)

"""Cascade answers: exit i answers with a combination of exits 0..i, in numpy (no torch), so the device could compute
it where the chain has those exits' probabilities anyway.

Zero Time Waste (Wołczyk et al., 2021) reuses earlier exits' predictions in each later one: a geometric ensemble
``q_i ∝ Π_{j ≤ i} p_j^{w_ij}`` with non-negative weights fitted per exit on held-out data. An early answer can then
be better than exit i alone, and early exit decides on ``max q_i`` instead of ``max p_i``.

Not yet part of the bundle contract: issue 20 keeps it only if it measurably helps the certified saving (the TSKD
study in ``scripts/bench_accuracy.py`` measures it); until then the study is its only caller.
"""

from __future__ import annotations

import numpy as np

from edgekd.core.vote import softmax

LOG_FLOOR = 1e-8  # probabilities are floored here before the log: a zero would make one exit veto a class


def cascade_probs(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(E, N, K) probabilities → (E, N, K) cascade probabilities: level i is ``softmax(Σ_{j≤i} w_ij · log p_j)``.
    ``weights`` (E, E), lower triangular (entries above the diagonal are ignored); the identity gives ``probs``."""
    logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), LOG_FLOOR))  # (E, N, K)
    w = np.tril(np.asarray(weights, dtype=np.float64))
    return np.stack([softmax(np.tensordot(w[i, :i + 1], logp[:i + 1], axes=1)) for i in range(len(logp))])


def _nll_and_grad(w: np.ndarray, logp: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of ``softmax(Σ_j w_j log p_j)`` and its gradient in ``w``; ``logp`` (J, N, K)."""
    q = softmax(np.tensordot(w, logp, axes=1))  # (N, K)
    idx = np.arange(len(labels))
    nll = -float(np.mean(np.log(np.maximum(q[idx, labels], 1e-300))))
    expected = np.einsum("nk,jnk->jn", q, logp)  # (J, N) E_q[log p_j]
    grad = -np.mean(logp[:, idx, labels] - expected, axis=1)  # (J,)
    return nll, grad


def fit_cascade(probs: np.ndarray, labels: np.ndarray, *, iters: int = 200) -> np.ndarray:
    """(E, E) lower-triangular non-negative weights minimising each level's validation NLL (a convex problem in the
    weights), by projected gradient descent with backtracking from the identity (each exit alone)."""
    logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), LOG_FLOOR))  # (E, N, K)
    labels = np.asarray(labels, dtype=np.int64)
    n_exits = len(logp)
    weights = np.eye(n_exits)
    for i in range(n_exits):
        w = weights[i, :i + 1].copy()
        nll, grad = _nll_and_grad(w, logp[:i + 1], labels)
        step = 1.0
        for _ in range(iters):
            while step > 1e-8:
                trial = np.maximum(w - step * grad, 0.0)
                if not trial.any():
                    step /= 2
                    continue
                trial_nll, trial_grad = _nll_and_grad(trial, logp[:i + 1], labels)
                if trial_nll <= nll - 1e-4 * float(grad @ (w - trial)):
                    break
                step /= 2
            else:
                break
            if nll - trial_nll < 1e-10:
                w, nll = trial, trial_nll
                break
            w, nll, grad, step = trial, trial_nll, trial_grad, min(1.0, step * 2)
        weights[i, :i + 1] = w
    return weights

"""Pure loss functions. Each takes tensors and returns a scalar; weighting happens in the objective."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy of (B, K) logits against (B,) integer labels."""
    return F.cross_entropy(logits, target)


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton's distillation term T²·KL(p_T ‖ p_S) at temperature T, averaged over the batch.

    ``teacher_logits`` is treated as a constant target (the caller detaches it). The T² factor keeps the
    gradient magnitude independent of T.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)  # (B, K)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)  # (B,)
    return kl.mean() * temperature**2


def hint_l2(features: Tensor, target_features: Tensor) -> Tensor:
    """Mean squared distance between (B, D) features and (constant) target features, averaged over B and D.

    Averaging over D (rather than summing) keeps the term on the order of the other losses for any width.
    """
    return (features - target_features).pow(2).mean()


def top1_correct(logits: Tensor, target: Tensor) -> Tensor:
    """Number of correct top-1 predictions (a 0-dim tensor)."""
    return (logits.argmax(dim=1) == target).sum()


__all__ = ["cross_entropy", "kd_kl", "hint_l2", "top1_correct"]

"""Evaluation of a multi-exit model: per-exit probabilities, per-exit top-1 and the three vote rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edgekd.core.vote import VOTE_RULES, accuracy, fit_vote_weights, softmax, vote


def exit_logits(output: Any) -> list[torch.Tensor]:
    """Per-exit logits from a model output: a MultiExitOutput, a list of logits, or one logits tensor."""
    if isinstance(output, torch.Tensor):
        return [output]
    logits = getattr(output, "logits", output)
    return list(logits)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 256,
                  device: torch.device | str = "cpu", workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode over ``dataset``: (E, N, K) float32 probabilities and (N,) int64 labels."""
    was_training = model.training
    model.eval()
    per_exit: list[list[np.ndarray]] = []
    labels = []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers):
        logits = exit_logits(model(x.to(device)))
        if not per_exit:
            per_exit = [[] for _ in logits]
        for store, z in zip(per_exit, logits):
            store.append(softmax(z.float().cpu().numpy()))  # (B, K)
        labels.append(np.asarray(y, dtype=np.int64))
    model.train(was_training)
    probs = np.stack([np.concatenate(chunks) for chunks in per_exit]).astype(np.float32)  # (E, N, K)
    return probs, np.concatenate(labels)


def exit_metrics(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Per-exit top-1 and every vote rule, in percent. ``weights`` None: fit them on these probabilities."""
    if weights is None:
        weights = fit_vote_weights(probs, labels)
    return {
        "exits": [accuracy(p.argmax(axis=1), labels) for p in probs],
        "vote": {rule: accuracy(vote(probs, rule, weights), labels) for rule in VOTE_RULES},
        "vote_weights": [float(w) for w in weights],
        "n": int(labels.size),
    }

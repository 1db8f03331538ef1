"""Seeded index splits: the validation set carved from a train pool, and the train/test holdout of a single tree.

Both use only ``np.random.default_rng(seed)`` (never a global RNG), so the same seed gives the same indices on
every machine and in every process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.core.errors import ConfigError, DataError


@dataclass
class SplitInfo:
    """Which images of the train pool were carved off as the validation set.

    seed, fraction: the arguments of :func:`carve_validation`.
    n_train_total: size of the train pool before carving.
    val_indices: sorted int64 indices into the train pool.
    """

    seed: int
    fraction: float
    n_train_total: int
    val_indices: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        self.val_indices = np.asarray(self.val_indices, dtype=np.int64)

    def train_indices(self) -> np.ndarray:
        """Sorted int64 indices of the pool that stay in the train part, shape (n_train_total - n_val,)."""
        keep = np.ones(self.n_train_total, dtype=bool)
        keep[self.val_indices] = False
        return np.flatnonzero(keep).astype(np.int64)

    def sha256(self) -> str:
        """Hex sha256 of the validation indices as little-endian int64 (stable across platforms)."""
        return hashlib.sha256(self.val_indices.astype("<i8").tobytes()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: indices as a list of Python ints, plus their hash."""
        return {
            "seed": int(self.seed),
            "fraction": float(self.fraction),
            "n_train_total": int(self.n_train_total),
            "val_indices": [int(i) for i in self.val_indices],
            "sha256": self.sha256(),
        }


def carve_validation(n_total: int, fraction: float, seed: int) -> SplitInfo:
    """Pick ``round(fraction * n_total)`` pool indices (at least 1, leaving at least 1 for training)."""
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {fraction}")
    if n_total < 2:
        raise DataError(f"need at least 2 training images to carve a validation set, got {n_total}")
    n_val = min(max(1, int(round(fraction * n_total))), n_total - 1)
    perm = np.random.default_rng(seed).permutation(n_total)  # (n_total,)
    return SplitInfo(seed=int(seed), fraction=float(fraction), n_train_total=int(n_total),
                     val_indices=np.sort(perm[:n_val]))


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test split of ``labels`` (N,): about ``fraction`` of each class goes to test.

    Every class keeps at least one image in train. Returns sorted int64 (train_idx, test_idx).
    """
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_test = min(int(round(fraction * len(members))), len(members) - 1)
        test.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test)).astype(np.int64) if test else np.zeros(0, np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[test_idx] = False
    return np.flatnonzero(keep).astype(np.int64), test_idx

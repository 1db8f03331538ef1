"""torch Datasets over in-memory arrays or image files, driven by an :class:`InputSpec`.

Items are ``(x, y)``: x a (C, H, W) float32 tensor (augmented when the dataset has a :class:`TrainAugment`, else the
exact eval transform), y an int label (collated to int64). Every dataset also offers ``raw(i)``, the uint8
(H, W, C) image at spec size before normalisation, and ``labels`` (int64), for calibration sets.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch.utils.data import Dataset

from edgekd.core.labelled import decode_image
from edgekd.core.preprocess import normalize, resize_to_spec
from edgekd.core.spec import InputSpec
from edgekd.training.data.transforms import TrainAugment


class SpecDataset(Dataset):
    """Common item logic; subclasses provide ``raw(i)`` and optionally ``_augment_input(i)``."""

    def __init__(self, labels: np.ndarray, spec: InputSpec, augment: TrainAugment | None) -> None:
        self._labels = np.asarray(labels, dtype=np.int64)  # (N,)
        self.spec = spec
        self.augment = augment

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels, in item order."""
        return self._labels

    def _index(self, i: int) -> int:
        """Normalise a (possibly negative, possibly numpy) index; out of range → IndexError."""
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} items")
        return i % n

    def raw(self, i: int) -> np.ndarray:
        """(H, W, C) uint8 image at spec size, spec channels, before normalisation."""
        raise NotImplementedError

    def _augment_input(self, i: int) -> np.ndarray:
        """The uint8 image the train augmentation starts from (default: the spec-size image)."""
        return self.raw(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._index(i)
        image = self.augment(self._augment_input(i)) if self.augment is not None else self.raw(i)
        x = normalize(image, self.spec)  # (C, H, W) float32
        return torch.from_numpy(x), int(self._labels[i])


class ArrayDataset(SpecDataset):
    """Items ``indices`` of an in-memory pool already at spec size: images (N, H, W, C) uint8, labels (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None, spec: InputSpec,
                 augment: TrainAugment | None = None) -> None:
        indices = np.arange(len(labels), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        super().__init__(np.asarray(labels)[indices], spec, augment)
        self.images = images  # shared pool, not copied
        self.indices = indices  # (N,) int64 positions in the pool

    def raw(self, i: int) -> np.ndarray:
        return self.images[self.indices[self._index(i)]]


class FileDataset(SpecDataset):
    """Image files decoded lazily by the core reader (as stored, BGR → spec channels); train augmentation starts
    from the full decoded image for large inputs (random-resized-crop) and from the spec-size image for small ones."""

    def __init__(self, paths: list[str], labels: np.ndarray, spec: InputSpec,
                 augment: TrainAugment | None = None) -> None:
        super().__init__(labels, spec, augment)
        self.paths = list(paths)

    def decode(self, i: int) -> np.ndarray:
        """(H0, W0, C) uint8 in spec channels at the file's own size; unreadable → DataError naming the file."""
        return decode_image(self.paths[self._index(i)], self.spec.channels)

    def raw(self, i: int) -> np.ndarray:
        return resize_to_spec(self.decode(i), self.spec)

    def _augment_input(self, i: int) -> np.ndarray:
        if self.augment is not None and not self.augment.small:
            return self.decode(i)
        return self.raw(i)

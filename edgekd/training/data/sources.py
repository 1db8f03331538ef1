"""Resolving a ``source`` string to raw data: digits, CIFAR-10/100, ``.npz`` parts or an image folder.

A :class:`RawSource` holds the train pool and test split either in memory (uint8 (N, H, W, C) at native size) or as
file lists (image folders, decoded lazily), plus the defaults the loader needs and the source's reload record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.labelled import FileList, is_npz_source, npz_paths, read_npz, read_npz_classes
from edgekd.training.data.folder import scan_folder
from edgekd.training.data.split import holdout_split

TEST_FRACTION = 0.2  # test share of sources without their own test split (digits, single-tree folders)
NAMED_SOURCES = ("digits", "cifar10", "cifar100", "folder")


@dataclass
class ArrayPool:
    """In-memory images (N, H, W, C) uint8 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RawSource:
    """What a source provides before any resizing or normalisation."""

    kind: str  # digits | cifar10 | cifar100 | npz | folder
    classes: list[str]
    train: ArrayPool | FileList  # the pool the validation set is carved from
    test: ArrayPool | FileList | None
    size: tuple[int, int]  # default (height, width)
    channels: int  # default channel count
    hflip: bool  # default for horizontal-flip augmentation
    info: dict[str, Any] = field(default_factory=dict)  # path(s)/root/test-split record for the source dict
    skipped: list[str] = field(default_factory=list)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, ArrayPool)


def load_digits_arrays() -> tuple[ArrayPool, ArrayPool]:
    """scikit-learn's bundled 8x8 digits as uint8 0..255 (N, 8, 8, 1), split 80/20 with a fixed seed-0 permutation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (1797, 8, 8, 1)
    labels = bunch.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(labels))
    n_test = int(round(TEST_FRACTION * len(labels)))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return ArrayPool(images[train], labels[train]), ArrayPool(images[test], labels[test])


def _digits() -> RawSource:
    train, test = load_digits_arrays()
    info = {"test_split": {"fraction": TEST_FRACTION, "seed": 0}}
    return RawSource("digits", [str(i) for i in range(10)], train, test, (32, 32), 1, False, info)


def _cifar(kind: str, root: str | None, download: bool) -> RawSource:
    """torchvision's CIFAR-10/100 under ``root`` (default ./data); downloads only when ``download``."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if kind == "cifar10" else CIFAR100
    root = str(Path(root or "./data").resolve())
    try:
        train, test = (cls(root, train=t, download=download) for t in (True, False))
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted ..."
        raise DataError(f"{kind} not found under {root}: pass --download or point --data-root at it ({exc})"
                        .replace("\n", " ")) from None
    pools = [ArrayPool(np.asarray(d.data, dtype=np.uint8), np.asarray(d.targets, dtype=np.int64))
             for d in (train, test)]
    return RawSource(kind, list(train.classes), pools[0], pools[1], (32, 32), 3, True, {"root": root})


def _npz(source: str) -> RawSource:
    """Archive part(s) with x_train/y_train, x_test/y_test (may be empty) and classes, via the core reader."""
    paths = npz_paths(source)
    classes = read_npz_classes(paths)
    x_train, y_train = read_npz(paths, ("x_train",), num_classes=len(classes))  # (N, H, W, C) uint8, (N,) int64
    x_test, y_test = read_npz(paths, ("x_test",), num_classes=len(classes))  # (M, H, W, C) uint8, (M,) int64
    if len(x_train) == 0:
        raise DataError(f"no training images in {', '.join(paths)}")
    test = ArrayPool(x_test, y_test) if len(y_test) else None
    channels = 1 if x_train.shape[3] == 1 else 3
    size = (int(x_train.shape[1]), int(x_train.shape[2]))
    return RawSource("npz", classes, ArrayPool(x_train, y_train), test, size, channels, True, {"paths": paths})


def _folder(root: str, seed: int, skip_bad: bool) -> RawSource:
    scan = scan_folder(root, skip_bad)
    info: dict[str, Any] = {"path": str(Path(root).resolve()), "layout": scan.layout}
    train, test = scan.train, scan.test
    if test is None:
        train_idx, test_idx = holdout_split(train.labels, TEST_FRACTION, seed)
        train, test = train.subset(train_idx), (train.subset(test_idx) if len(test_idx) else None)
        info["test_split"] = {"fraction": TEST_FRACTION, "seed": int(seed)}
    return RawSource("folder", scan.classes, train, test, (224, 224), 3, True, info, scan.skipped)


def open_raw_source(source: str, *, root: str | None, download: bool, seed: int, skip_bad: bool) -> RawSource:
    """Dispatch on ``source``: a named source, an existing directory, or npz file(s)."""
    source = str(source)
    if source == "digits":
        return _digits()
    if source in ("cifar10", "cifar100"):
        return _cifar(source, root, download)
    if source == "folder":
        if not root:
            raise DataError("source 'folder' needs root (--data-root) pointing at an image folder")
        return _folder(root, seed, skip_bad)
    if Path(source).is_dir():
        return _folder(source, seed, skip_bad)
    if is_npz_source(source):
        return _npz(source)
    if Path(source).exists():
        raise DataError(f"unsupported data file (expected .npz): {source}")
    if "/" in source or "\\" in source or "." in source:
        raise DataError(f"data path not found: {source}")
    raise DataError(f"unknown data source {source!r}: use one of {', '.join(NAMED_SOURCES)}, "
                    "an image folder, or .npz file(s)")

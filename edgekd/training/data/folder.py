"""ImageFolder layouts for training on top of the core listing (:func:`edgekd.core.labelled.list_class_tree`), and
the up-front validation of every file that ``--skip-bad`` turns from an error into a list of skipped files.

Layouts: ``root/train/<class>/*`` with ``root/val/<class>/*`` (or ``root/test/``) as the test split, or a single
tree ``root/<class>/*`` (also ``root/train/`` alone) whose test split is carved with the seed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.images import read_image
from edgekd.core.labelled import FileList, list_class_tree

TEST_DIRS = ("val", "test")


def is_readable(path: str) -> bool:
    """Fast validity check: a 1/8-scale grayscale decode succeeds, or, for an image too small to shrink (under 8 px
    a side decodes to nothing at 1/8 scale), the full decode does."""
    try:
        read_image(path, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    except DataError:
        try:
            read_image(path, cv2.IMREAD_GRAYSCALE)
        except DataError:
            return False
    return True


def find_unreadable(paths: list[str]) -> list[str]:
    """Paths (in input order) that OpenCV cannot decode; checked in parallel threads (cv2 releases the GIL)."""
    workers = min(32, os.cpu_count() or 1)
    if len(paths) < 64 or workers == 1:
        ok = [is_readable(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ok = list(pool.map(is_readable, paths, chunksize=64))
    return [p for p, good in zip(paths, ok) if not good]


def drop_unreadable(files: FileList, skip_bad: bool, skipped: list[str]) -> FileList:
    """Validate every file; raise on the first unreadable one, or (``skip_bad``) drop it and append to ``skipped``."""
    bad = find_unreadable(files.paths)
    if not bad:
        return files
    if not skip_bad:
        raise DataError(f"cannot read image: {bad[0]}")
    skipped += bad
    bad_set = set(bad)
    keep = np.array([p not in bad_set for p in files.paths], dtype=bool)
    return files.subset(np.flatnonzero(keep))


def check_classes_nonempty(files: FileList, tree: Path, classes: list[str]) -> None:
    """After skipping, every train class must still have an image."""
    counts = np.bincount(files.labels, minlength=len(classes))
    for name, count in zip(classes, counts):
        if count == 0:
            raise DataError(f"class folder has no readable images: {tree / name}")


@dataclass
class FolderScan:
    """Result of scanning an image-folder root."""

    classes: list[str]
    train: FileList
    test: FileList | None  # None for a single tree (the loader carves a test split with the seed)
    layout: str  # "train/val", "train/test" or "single"
    skipped: list[str]


def scan_folder(root: str | Path, skip_bad: bool = False) -> FolderScan:
    """Find the layout under ``root``, list and validate every image."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data path not found: {root}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_name = next((d for d in TEST_DIRS if train_dir != root and (root / d).is_dir()), None)
    classes, train = list_class_tree(train_dir)
    if len(classes) < 2:
        raise DataError(f"need at least 2 class folders in {train_dir}, found {len(classes)}")
    test = None
    if test_name:
        test = list_class_tree(root / test_name, classes, known_as="among the train classes")[1]
    skipped: list[str] = []
    train = drop_unreadable(train, skip_bad, skipped)
    check_classes_nonempty(train, train_dir, classes)
    if test is not None:
        test = drop_unreadable(test, skip_bad, skipped)
    layout = f"train/{test_name}" if test_name else "single"
    return FolderScan(classes, train, test if test else None, layout, skipped)

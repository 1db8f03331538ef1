"""ImageFolder trees: listing class folders, validating every file up front, decoding with OpenCV.

Layouts: ``root/train/<class>/*`` with ``root/val/<class>/*`` (or ``root/test/``) as the test split, or a single
tree ``root/<class>/*`` (also ``root/train/`` alone) whose test split is carved with the seed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.images import is_image_file, read_image

TEST_DIRS = ("val", "test")


def is_readable(path: str) -> bool:
    """Fast validity check: a 1/8-scale grayscale decode succeeds."""
    try:
        read_image(path, cv2.IMREAD_REDUCED_GRAYSCALE_8)
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


def _visible_dirs(path: Path) -> list[str]:
    """Sorted names of the non-hidden subdirectories of ``path``."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    """Sorted image files under ``folder`` (recursive, hidden entries skipped)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and is_image_file(name):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


@dataclass
class FileList:
    """Image paths with their int64 labels, shape (N,)."""

    paths: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> FileList:
        """The entries at ``indices``, in that order."""
        return FileList([self.paths[i] for i in indices], self.labels[indices])


def list_tree(tree: Path, classes: list[str] | None = None) -> tuple[list[str], FileList]:
    """List ``tree/<class>/*``. With ``classes`` (the train classes) every folder must be one of them.

    Returns (class names, files); an empty class folder is a ``DataError`` naming it.
    """
    names = _visible_dirs(tree)
    if not names:
        raise DataError(f"no class folders in {tree}")
    if classes is None:
        classes = names
    index = {c: i for i, c in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for name in names:
        if name not in index:
            raise DataError(f"class folder {tree / name} is not one of the train classes")
        found = _image_files(tree / name)
        if not found:
            raise DataError(f"class folder has no images: {tree / name}")
        paths += found
        labels += [index[name]] * len(found)
    return classes, FileList(paths, np.asarray(labels, dtype=np.int64))


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
    classes, train = list_tree(train_dir)
    if len(classes) < 2:
        raise DataError(f"need at least 2 class folders in {train_dir}, found {len(classes)}")
    test = list_tree(root / test_name, classes)[1] if test_name else None
    skipped: list[str] = []
    train = drop_unreadable(train, skip_bad, skipped)
    check_classes_nonempty(train, train_dir, classes)
    if test is not None:
        test = drop_unreadable(test, skip_bad, skipped)
    layout = f"train/{test_name}" if test_name else "single"
    return FolderScan(classes, train, test if test else None, layout, skipped)

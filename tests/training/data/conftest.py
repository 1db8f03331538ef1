"""Fixtures for edgekd.training.data tests: tiny image folders and npz archives written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def write_image(path: Path, rng: np.random.Generator, height: int, width: int, gray: bool) -> Path:
    """Write a random PNG (grayscale or 3-channel BGR) of the given size; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width) if gray else (height, width, 3)
    assert cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
    return path


def fill_tree(tree: Path, classes: list[str], per_class: int, seed: int) -> list[Path]:
    """Write ``per_class`` images of varying rectangular sizes, alternating gray and RGB, into tree/<class>/."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in classes:
        for i in range(per_class):
            h, w = int(rng.integers(9, 40)), int(rng.integers(9, 40))
            paths.append(write_image(tree / c / f"img{i:02d}.png", rng, h, w, gray=i % 2 == 0))
    return paths


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """root/train/{ant,bee,cat}/ (6 images each) and root/val/{ant,bee,cat}/ (2 each)."""
    root = tmp_path / "imgs"
    fill_tree(root / "train", ["cat", "ant", "bee"], 6, seed=1)
    fill_tree(root / "val", ["cat", "ant", "bee"], 2, seed=2)
    return root


@pytest.fixture
def single_tree(tmp_path: Path) -> Path:
    """root/{a,b}/ with 10 images each, no train/val split."""
    root = tmp_path / "tree"
    fill_tree(root, ["a", "b"], 10, seed=3)
    return root


def make_arrays(n_train: int, n_test: int, seed: int, shape: tuple[int, ...] = (12, 12, 3),
                n_classes: int = 3) -> dict[str, np.ndarray]:
    """Random npz content: uint8 images of ``shape`` per item and labels in range(n_classes)."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": rng.integers(0, n_classes, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": rng.integers(0, n_classes, n_test).astype(np.uint8),
        "classes": np.array([f"class{i}" for i in range(n_classes)]),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Save ``arrays`` with np.savez_compressed; returns the path."""
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def arrays():
    """Factory fixture: ``arrays(n_train, n_test, seed, shape=..., n_classes=...)`` → npz content dict."""
    return make_arrays


@pytest.fixture
def npz(tmp_path: Path):
    """Factory fixture: ``npz(name, arrays)`` writes tmp_path/name and returns its path."""
    return lambda name, content: write_npz(tmp_path / name, content)


@pytest.fixture
def image_writer():
    """Factory fixture: ``image_writer(path, rng, height, width, gray)`` writes a random PNG."""
    return write_image

"""``.npz`` image archives: one file or several parts (keys x_train, y_train, x_test, y_test, classes).

Parts are concatenated in order (a glob is expanded in sorted order). Images are (N, H, W) gray or (N, H, W, 3)
RGB uint8; float arrays in [0, 1] are scaled to uint8, and (N, C, H, W) arrays are moved to channels-last.
"""

from __future__ import annotations

import glob
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.core.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes")
_GLOB_CHARS = set("*?[")


def looks_like_npz(source: str) -> bool:
    """True if ``source`` names npz files: ends in .npz, is a glob, or is a comma-separated list."""
    return source.lower().endswith(".npz") or "," in source or bool(_GLOB_CHARS & set(source))


def npz_paths(source: str) -> list[str]:
    """Expand a path, a glob or a comma-separated list of either into absolute file paths, in order."""
    paths: list[str] = []
    for item in (s.strip() for s in source.split(",")):
        if not item:
            continue
        if _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise DataError(f"no files match {item}")
            paths += matches
        elif not Path(item).is_file():
            raise DataError(f"data path not found: {item}")
        else:
            paths.append(item)
    if not paths:
        raise DataError(f"no npz files in source {source!r}")
    return [str(Path(p).resolve()) for p in paths]


def _as_images(x: np.ndarray, path: str, key: str) -> np.ndarray:
    """Any accepted image array → (N, H, W, C) uint8 with C in (1, 3, 4)."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{path}: {key} must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
    if x.shape[3] not in (1, 3, 4) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) → (N, H, W, C)
    if x.shape[3] not in (1, 3, 4):
        raise DataError(f"{path}: {key} must have 1 or 3 channels, got shape {x.shape}")
    if x.dtype == np.uint8 or x.size == 0:
        return x.astype(np.uint8, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if np.issubdtype(x.dtype, np.floating):
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: float {key} must be in [0, 1], got values in [{lo:g}, {hi:g}]")
        return np.round(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer) and lo >= 0 and hi <= 255:
        return x.astype(np.uint8)
    raise DataError(f"{path}: {key} must be uint8 (or float in [0, 1]), got {x.dtype}")


def _as_labels(y: np.ndarray, n_images: int, n_classes: int, path: str, key: str) -> np.ndarray:
    """Check labels (N,) against image count and class list → int64."""
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:  # (N, 1) or (1, N) → (N,)
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"{path}: {key} must be 1-D, got shape {y.shape}")
    if len(y) != n_images:
        raise DataError(f"{path}: {key} has {len(y)} labels but x_{key[2:]} has {n_images} images")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(y == np.round(y)):
            raise DataError(f"{path}: {key} must hold integer labels, got {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: {key}[{i}] = {y[i]} is outside the {n_classes} classes")
    return y.astype(np.int64)


@dataclass
class NpzPart:
    """The checked content of one archive."""

    classes: list[str]
    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, H, W, C) uint8
    y_test: np.ndarray  # (M,) int64


def read_part(path: str) -> NpzPart:
    """Load and validate one archive; every problem is a ``DataError`` naming the file (and key)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing key '{missing[0]}' (need {', '.join(NPZ_KEYS)})")
            raw = {k: z[k] for k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read npz file: {path} ({exc})".replace("\n", " ")) from None
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(raw["classes"]).reshape(-1)]
    if len(classes) < 2:
        raise DataError(f"{path}: 'classes' must list at least 2 class names, got {len(classes)}")
    x_train = _as_images(raw["x_train"], path, "x_train")
    x_test = _as_images(raw["x_test"], path, "x_test") if raw["x_test"].size else x_train[:0]
    y_train = _as_labels(raw["y_train"], len(x_train), len(classes), path, "y_train")
    y_test = _as_labels(raw["y_test"], len(x_test), len(classes), path, "y_test")
    return NpzPart(classes, x_train, y_train, x_test, y_test)


def _concat(arrays: list[np.ndarray], paths: list[str], key: str) -> np.ndarray:
    """Concatenate non-empty image arrays of one key; differing image shapes are a ``DataError``."""
    shapes = {a.shape[1:] for a in arrays if len(a)}
    if len(shapes) > 1:
        raise DataError(f"{key} image shapes differ between parts {', '.join(paths)}: {sorted(shapes)}")
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def read_npz(paths: list[str]) -> NpzPart:
    """Read every part and concatenate each key in part order; class lists must agree."""
    parts = [read_part(p) for p in paths]
    for path, part in zip(paths[1:], parts[1:]):
        if part.classes != parts[0].classes:
            raise DataError(f"{path}: classes {part.classes} differ from {paths[0]}: {parts[0].classes}")
    x_train = _concat([p.x_train for p in parts if len(p.x_train)] or [parts[0].x_train], paths, "x_train")
    x_test = _concat([p.x_test for p in parts if len(p.x_test)] or [parts[0].x_test], paths, "x_test")
    y_train = np.concatenate([p.y_train for p in parts])
    y_test = np.concatenate([p.y_test for p in parts])
    return NpzPart(parts[0].classes, x_train, y_train, x_test, y_test)

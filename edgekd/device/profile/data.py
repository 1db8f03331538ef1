"""Labelled images for ``edgekd profile --data``: an ImageFolder tree or an ``.npz``, at the bundle's input size.

* A folder with one sub-folder per class (``DATA/<class name>/*.jpg``, ImageFolder style). Sub-folder names must
  be class names of the bundle (its manifest's ``class_names``); images are read with OpenCV (BGR) and go through
  the runtime's colour conversion and resize.
* An ``.npz`` with ``images`` (N, H, W[, C]) uint8 in RGB order and ``labels`` (N,) class indices (``x_test`` /
  ``y_test`` are accepted too).

Both give (N, H, W, C) uint8 at the spec size plus (N,) int64 labels, the same layout as a bundle's
``val_sample.npz``, so accuracy is computed exactly as for the bundle's own sample. Torch-free (device side).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.images import is_image_file, read_image
from edgekd.core.preprocess import resize_to_spec, to_spec_channels
from edgekd.core.spec import InputSpec

_NPZ_KEYS = (("images", "labels"), ("x_test", "y_test"), ("x", "y"))


def _subset(n: int, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` items: all of them, or a fixed-seed random subset in order."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def _read(path: Path, spec: InputSpec) -> np.ndarray:
    return resize_to_spec(to_spec_channels(read_image(path), spec.channels, bgr=True), spec)


def _from_folder(root: Path, spec: InputSpec, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders (expected {root}/<class name>/<images>)")
    index = {name: i for i, name in enumerate(spec.class_names)}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise DataError(f"{root}: sub-folder(s) {', '.join(unknown[:5])} are not classes of this bundle "
                        f"({', '.join(spec.class_names[:10])}{', …' if len(spec.class_names) > 10 else ''})")
    files, labels = [], []
    for c in classes:
        found = sorted(p for p in (root / c).rglob("*") if is_image_file(p) and p.is_file())
        files += found
        labels += [index[c]] * len(found)
    if not files:
        raise DataError(f"no images found under {root}")
    keep = _subset(len(files), limit)
    images = np.stack([_read(files[i], spec) for i in keep])  # (N, H, W, C)
    return images, np.asarray(labels, dtype=np.int64)[keep]


def _from_npz(path: Path, spec: InputSpec, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    with f:
        keys = next(((i, l) for i, l in _NPZ_KEYS if i in f.files and l in f.files), None)
        if keys is None:
            raise DataError(f"{path} needs 'images' and 'labels' arrays (has {', '.join(f.files) or 'none'})")
        raw, labels = f[keys[0]], f[keys[1]]
    if raw.dtype != np.uint8 or raw.ndim not in (3, 4) or len(raw) == 0:
        raise DataError(f"{path}:{keys[0]} must be uint8 images (N, H, W[, C]), got {raw.dtype} {raw.shape}")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(raw) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}:{keys[1]} must hold one integer label per image ({len(raw)}), "
                        f"got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= spec.num_classes:
        raise DataError(f"{path}: labels must lie in 0..{spec.num_classes - 1} (the bundle's classes), "
                        f"got {labels.min()}..{labels.max()}")
    keep = _subset(len(raw), limit)
    images = np.stack([resize_to_spec(to_spec_channels(raw[i], spec.channels), spec) for i in keep])
    return images, labels.astype(np.int64)[keep]


def load_labelled(path: str | Path, spec: InputSpec, *, limit: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(N, H, W, C) uint8 images at spec size, (N,) labels, and a description for the report."""
    path = Path(path)
    if path.is_dir():
        images, labels = _from_folder(path, spec, limit)
        kind = "folder"
    elif path.is_file() and path.suffix == ".npz":
        images, labels = _from_npz(path, spec, limit)
        kind = "npz"
    else:
        raise DataError(f"--data must be a class-per-folder image directory or an .npz file: {path}")
    return images, labels, {"source": kind, "path": str(path), "n": int(labels.size)}

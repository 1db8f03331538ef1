"""Calibration images from ``--calib-data DIR|NPZ``, brought to the bundle's input size by the runtime's own
preprocessing (channel conversion + resize); normalisation happens where they are fed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.images import is_image_file, read_image
from edgekd.core.preprocess import resize_to_spec, to_spec_channels
from edgekd.core.spec import InputSpec



def load_calib_images(path: str | Path, spec: InputSpec, limit: int = 1024) -> np.ndarray:
    """(N, H, W, C) uint8 at spec size from an image directory (recursive) or an npz (``images`` or ``x_train``)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if is_image_file(p) and p.is_file())[:limit]
        if not files:
            raise DataError(f"no images found under {path}")
        images = []
        for f in files:
            images.append(resize_to_spec(to_spec_channels(read_image(f), spec.channels, bgr=True), spec))
        return np.stack(images)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path) as f:
            key = next((k for k in ("images", "x_train", "x_test") if k in f.files), None)
            if key is None:
                raise DataError(f"{path} has no 'images' (or 'x_train') array")
            raw = f[key][:limit]
        if raw.dtype != np.uint8 or raw.ndim not in (3, 4):
            raise DataError(f"{path}:{key} must be uint8 images (N, H, W[, C]), got {raw.dtype} {raw.shape}")
        return np.stack([resize_to_spec(to_spec_channels(img, spec.channels), spec) for img in raw])
    raise DataError(f"calibration data not found (a directory of images or an .npz): {path}")

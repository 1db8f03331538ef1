"""The evaluation transform, in numpy/OpenCV only, driven by an :class:`InputSpec`.

Training uses these functions for its evaluation transform (and for resizing stored images), and the runtime uses
the very same functions on camera frames, so a model sees identical pixels in both places.

Steps: colour conversion → resize (area interpolation when shrinking, linear when enlarging) → optional centre
crop → scale to [0, 1] → subtract mean, divide by std → HWC to CHW.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.spec import InputSpec


def to_spec_channels(image: np.ndarray, channels: int, *, bgr: bool = False) -> np.ndarray:
    """Convert an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 image to (H, W, channels) RGB or gray.

    ``bgr`` says the 3/4-channel input is in OpenCV's BGR(A) order (camera frames, ``cv2.imread``).
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"expected an image of shape (H, W[, 1|3|4]), got {image.shape}")
    c = image.shape[2]
    if c == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    elif c == 3 and bgr:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize keeping (H, W, C); area interpolation when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    shrinking = height * width < h * w
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out[:, :, None] if out.ndim == 2 else out


def resize_to_spec(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Geometric part of the eval transform: (H0, W0, C) uint8 → (spec.height, spec.width, C) uint8."""
    if spec.resize == "stretch":
        return _resize(image, spec.width, spec.height)
    # center-crop: scale so the crop (crop_ratio of the resized shorter side) exactly covers the input size.
    h, w = image.shape[:2]
    scale = max(spec.height / (h * spec.crop_ratio), spec.width / (w * spec.crop_ratio))
    new_h, new_w = max(spec.height, round(h * scale)), max(spec.width, round(w * scale))
    image = _resize(image, new_w, new_h)
    top, left = (new_h - spec.height) // 2, (new_w - spec.width) // 2
    return image[top : top + spec.height, left : left + spec.width]


def normalize(image: np.ndarray, spec: InputSpec, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, C) uint8 → (C, H, W) float32, scaled to [0, 1] and standardised; writes into ``out`` if given."""
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)
    chw = image.transpose(2, 0, 1)  # (C, H, W)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    np.subtract(chw, mean[:, None, None], out=out, dtype=np.float32)
    out *= inv_std[:, None, None]
    return out


def preprocess(image: np.ndarray, spec: InputSpec, *, bgr: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Full eval transform of one uint8 image into a (C, H, W) float32 network input."""
    image = to_spec_channels(image, spec.channels, bgr=bgr)
    return normalize(resize_to_spec(image, spec), spec, out=out)

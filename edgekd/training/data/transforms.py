"""Train-time augmentation on uint8 (H, W, C) images (random pad-crop, random-resized-crop, horizontal flip).

Randomness comes only from torch's global RNG (``torch.randint``/``torch.rand``): the trainer reseeds torch per
epoch for exact resume and DataLoader workers get derived torch seeds. Never numpy's or Python's global RNG.

The evaluation transform is not here: datasets apply exactly :mod:`edgekd.core.preprocess` (``normalize`` of
``resize_to_spec(to_spec_channels(img))``), what the runtime applies to camera frames.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from edgekd.core.preprocess import resize_to_spec
from edgekd.core.spec import InputSpec

SMALL_INPUT = 64  # below this many pixels (shorter side) inputs are "small": stretch + pad-crop augmentation


def is_small(height: int, width: int) -> bool:
    """True for inputs whose shorter side is below :data:`SMALL_INPUT` pixels."""
    return min(height, width) < SMALL_INPUT


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high) from torch's global RNG."""
    return int(torch.randint(low, high, (1,)).item())


def _uniform(low: float, high: float) -> float:
    """Uniform float in [low, high) from torch's global RNG."""
    return low + (high - low) * float(torch.rand(1, dtype=torch.float64).item())


def random_pad_crop(image: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    """Zero-pad by (pad_h, pad_w) on every side, then take a random crop of the original size. (H, W, C) → same."""
    h, w = image.shape[:2]
    sy = _randint(0, 2 * pad_h + 1) - pad_h  # out[y, x] = image[y + sy, x + sx]
    sx = _randint(0, 2 * pad_w + 1) - pad_w
    out = np.zeros_like(image)
    y0, y1 = max(0, -sy), min(h, h - sy)
    x0, x1 = max(0, -sx), min(w, w - sx)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = image[y0 + sy : y1 + sy, x0 + sx : x1 + sx]
    return out


def random_hflip(image: np.ndarray, p: float = 0.5) -> np.ndarray:
    """Mirror left-right with probability ``p``. (H, W, C) → same, contiguous."""
    if float(torch.rand(1).item()) < p:
        return np.ascontiguousarray(image[:, ::-1])
    return image


def rrc_box(height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (top, left, h, w): 10 random tries, then a centre-crop fallback."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(*scale)
        aspect = math.exp(_uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h + 1), _randint(0, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    h, w = min(h, height), min(w, width)
    return (height - h) // 2, (width - w) // 2, h, w


class TrainAugment:
    """Train transform on a uint8 image (H0, W0, C) already in the spec's channels → (spec.H, spec.W, C) uint8.

    Small inputs: eval resize to spec size (if needed), random crop with zero padding of max(1, size // 8) px.
    Large inputs: random-resized-crop of the given (original) image straight to spec size.
    Then a horizontal flip with p=0.5 when ``hflip``.
    """

    def __init__(self, spec: InputSpec, hflip: bool) -> None:
        self.spec = spec
        self.hflip = bool(hflip)
        self.small = is_small(spec.height, spec.width)
        self.pad = (max(1, spec.height // 8), max(1, spec.width // 8))
        self._stretch = dataclasses.replace(spec, resize="stretch", crop_ratio=1.0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H0, W0, C) uint8 → (H, W, C) uint8 at spec size."""
        if self.small:
            if image.shape[:2] != (self.spec.height, self.spec.width):
                image = resize_to_spec(image, self.spec)
            image = random_pad_crop(image, *self.pad)
        else:
            top, left, h, w = rrc_box(*image.shape[:2])
            image = resize_to_spec(image[top : top + h, left : left + w], self._stretch)
        if self.hflip:
            image = random_hflip(image)
        return image

    def __repr__(self) -> str:
        kind = f"pad-crop{self.pad}" if self.small else "random-resized-crop"
        return f"TrainAugment({kind}, hflip={self.hflip})"

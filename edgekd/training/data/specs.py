"""Building the :class:`InputSpec`: input geometry from the options, per-channel mean/std from the train part."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgekd.core.errors import ConfigError
from edgekd.core.spec import MIN_STD, RESIZE_POLICIES
from edgekd.training.data.transforms import is_small

CROP_RATIO = 0.875  # ImageNet-style centre crop for large inputs
Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), one value per channel, [0, 1] scale


def parse_size(image_size: int | str | tuple[int, int] | list[int] | None,
               default: tuple[int, int]) -> tuple[int, int]:
    """``None`` → default; an int or "32" → square; (h, w) or "48x64" (height x width) → as is."""
    if image_size is None:
        return default
    if isinstance(image_size, str):
        parts = image_size.lower().replace(" ", "").split("x")
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            raise ConfigError(f"image size must be N or HxW (e.g. 32 or 48x64), got {image_size!r}")
        image_size = int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        h = w = int(image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        h, w = (int(v) for v in image_size)
    else:
        raise ConfigError(f"image_size must be an int or (height, width), got {image_size!r}")
    if h < 1 or w < 1:
        raise ConfigError(f"image_size must be positive, got {h}x{w}")
    return h, w


def resize_policy(height: int, width: int, resize: str | None, is_folder: bool) -> tuple[str, float]:
    """(policy, crop_ratio): explicit ``resize`` wins; else centre-crop for image folders at ≥ 64 px, else stretch.

    ``center-crop`` keeps :data:`CROP_RATIO` of the image at ≥ 64 px and 1.0 (aspect-preserving crop) below.
    """
    if resize is None:
        resize = "center-crop" if is_folder and not is_small(height, width) else "stretch"
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    if resize == "stretch":
        return resize, 1.0
    return resize, (1.0 if is_small(height, width) else CROP_RATIO)


def check_channels(channels: int) -> int:
    """1 or 3, else :class:`ConfigError`."""
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    return int(channels)


class ChannelStats:
    """Exact per-channel mean/std of uint8 pixels, accumulated as 256-bin histograms (no float copies)."""

    def __init__(self, channels: int) -> None:
        self.hist = np.zeros((channels, 256), dtype=np.int64)  # (C, 256) pixel-value counts

    def add(self, images: np.ndarray) -> None:
        """Accumulate a (..., C) uint8 array (one image (H, W, C) or a batch (N, H, W, C))."""
        flat = images.reshape(-1, images.shape[-1])  # (P, C)
        for c in range(self.hist.shape[0]):
            self.hist[c] += np.bincount(flat[:, c], minlength=256)

    def result(self) -> Stats:
        """(mean, std) per channel on the [0, 1] scale; a constant channel gets std 1.0 (no division by ~0)."""
        values = np.arange(256, dtype=np.float64) / 255.0
        n = self.hist.sum(axis=1).astype(np.float64)  # (C,)
        if np.any(n == 0):
            raise ConfigError("cannot compute normalisation statistics from zero pixels")
        mean = (self.hist * values).sum(axis=1) / n
        var = (self.hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
        std = np.sqrt(var)
        std = np.where(std < MIN_STD, 1.0, std)
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def array_stats(images: np.ndarray, indices: np.ndarray, chunk: int = 4096) -> Stats:
    """Exact (mean, std) of ``images[indices]``; images (N, H, W, C) uint8 at spec size."""
    stats = ChannelStats(images.shape[-1])
    for start in range(0, len(indices), chunk):
        stats.add(images[indices[start : start + chunk]])
    return stats.result()


def image_stats(images: Iterable[np.ndarray], channels: int) -> Stats:
    """(mean, std) over an iterable of (H, W, C) uint8 images (e.g. a seeded sample of decoded files)."""
    stats = ChannelStats(channels)
    for image in images:
        stats.add(image)
    return stats.result()

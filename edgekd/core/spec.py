"""InputSpec: what a network expects as input, computed once from the training data and carried everywhere.

It travels in checkpoints and in the bundle manifest, so the runtime can reproduce the evaluation transform
without torch and without guessing. See :mod:`edgekd.core.preprocess` for the transform itself.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekd.core.errors import ConfigError

RESIZE_POLICIES = ("stretch", "center-crop")
COLOR_ORDERS = ("rgb", "gray")
#: The largest input side edgekd accepts (pixels). Classifiers for edge devices take 32-512 px; a spec of 10^9 px
#: (a tampered manifest) would otherwise ask for gigabytes per frame before any graph could refuse it.
MAX_INPUT_SIDE = 8192
#: The smallest std a spec may hold: a channel less varied than this is constant (training gives it std 1.0).
MIN_STD = 1e-6


def _is_real(x: Any) -> bool:
    """A real number (Python's or numpy's), not a bool and not a string."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and type(x).__name__ != "bool_"


def _numbers(name: str, values: Any) -> tuple:
    """``values`` as a tuple of floats; a one-line :class:`ConfigError` when it is not a list of finite numbers."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{name} must be a list of numbers, got {values!r}")
    values = tuple(values)
    if not all(_is_real(v) for v in values):
        raise ConfigError(f"{name} must be a list of numbers, got {list(values)!r}")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be a list of numbers, got {list(values)!r}") from None
    return out


@dataclass(frozen=True)
class InputSpec:
    """Input contract of a model.

    height, width: network input size in pixels.
    channels: 1 (grayscale) or 3 (RGB, in ``color_order``).
    mean, std: per-channel normalisation applied to pixel values scaled to [0, 1].
    resize: ``stretch`` resizes the whole image to (height, width); ``center-crop`` resizes so the crop of
        ``crop_ratio`` of the shorter side covers the input, then takes the centre crop (ImageNet style).
    crop_ratio: fraction of the resized image kept by ``center-crop`` (1.0 keeps everything).
    class_names: label order of the classifier.
    """

    height: int
    width: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    resize: str = "stretch"
    crop_ratio: float = 1.0
    color_order: str = field(default="")
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if not self.color_order:
            object.__setattr__(self, "color_order", "gray" if self.channels == 1 else "rgb")
        object.__setattr__(self, "mean", _numbers("mean", self.mean))
        object.__setattr__(self, "std", _numbers("std", self.std))
        if isinstance(self.class_names, (str, bytes)) or not hasattr(self.class_names, "__iter__"):
            raise ConfigError(f"class names must be a list of strings, got {self.class_names!r}")
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, self.height, self.width)

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line reason if any field is out of range."""
        sides = (self.height, self.width)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sides):
            raise ConfigError(f"input size must be positive integers, got {self.height}x{self.width}")
        if max(sides) > MAX_INPUT_SIDE:
            raise ConfigError(f"input size {self.height}x{self.width} is larger than {MAX_INPUT_SIDE} px a side")
        if isinstance(self.channels, bool) or self.channels not in (1, 3):
            raise ConfigError(f"input channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"mean/std need {self.channels} values, got {len(self.mean)}/{len(self.std)}")
        if any(not math.isfinite(s) or s < MIN_STD for s in self.std):  # (1e-300 is 0 in float32: NaN everywhere)
            raise ConfigError(f"std values must be finite and at least {MIN_STD} (pixels are on the [0, 1] scale; "
                              f"less is zero in float32 or divides to infinity), got {self.std}")
        if any(not math.isfinite(m) for m in self.mean):
            raise ConfigError(f"mean values must be finite, got {self.mean}")
        if not isinstance(self.resize, str) or self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"resize policy must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if not _is_real(self.crop_ratio) or not 0.0 < self.crop_ratio <= 1.0:
            raise ConfigError(f"crop_ratio must be in (0, 1], got {self.crop_ratio}")
        if not isinstance(self.color_order, str) or self.color_order not in COLOR_ORDERS or (self.color_order == "gray") != (self.channels == 1):
            raise ConfigError(f"color order {self.color_order!r} does not fit {self.channels} channel(s)")
        if not isinstance(self.layout, str) or self.layout != "NCHW":
            raise ConfigError(f"only NCHW layout is supported, got {self.layout!r}")
        if len(self.class_names) < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {len(self.class_names)}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ConfigError("class names must be unique")
        if any(not name.strip() for name in self.class_names):  # a class a log or a folder could not name
            raise ConfigError("class names must not be empty")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/pickle-safe dict (lists instead of tuples)."""
        d = asdict(self)
        for key in ("mean", "std", "class_names"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Build and validate from :meth:`to_dict` output; unknown or missing keys are a :class:`ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"input spec must be a mapping, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"input spec has unknown keys: {sorted(unknown)}")
        required = {"height", "width", "channels", "mean", "std", "class_names"}
        missing = required - set(d)
        if missing:
            raise ConfigError(f"input spec is missing keys: {sorted(missing)}")
        names = d["class_names"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
            raise ConfigError("input spec class_names must be a list of strings")
        try:
            return cls(**d)
        except TypeError as exc:  # e.g. mean given as a number
            raise ConfigError(f"input spec has a field of the wrong type: {exc}") from None

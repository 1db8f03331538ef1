"""Camera frame → network input, with the training evaluation transform and no per-frame output allocation.

:class:`Preprocessor` applies exactly :mod:`edgekd.core.preprocess` — the functions training uses for its
evaluation transform — to OpenCV frames: gray (H, W) / (H, W, 1), BGR (H, W, 3) or BGRA (H, W, 4), uint8, any
size. Colour conversion and resizing are OpenCV calls on the frame; the last step (scale, standardise, HWC → CHW)
writes straight into one (1, C, H, W) float32 buffer owned by the preprocessor and reused for every frame.
"""

from __future__ import annotations

import numpy as np

from edgekd.core.errors import DataError
from edgekd.core.preprocess import normalize, resize_to_spec, to_spec_channels
from edgekd.core.spec import InputSpec


class Preprocessor:
    """``pre(frame)`` → the (1, C, H, W) float32 network input for ``spec``.

    Frames are in OpenCV channel order (BGR / BGRA), as cameras, ``cv2.VideoCapture`` and ``cv2.imread`` give
    them; gray frames go through as they are. The returned array is the preprocessor's own buffer: the next call
    overwrites it, so copy it to keep it.
    """

    def __init__(self, spec: InputSpec):
        self.spec = spec
        self.buffer = np.empty((1, *spec.shape), dtype=np.float32)  # (1, C, H, W), reused for every frame

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise DataError(f"a frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise DataError(f"frames must be uint8 images, got dtype {frame.dtype}")
        if frame.size == 0:
            raise DataError(f"empty frame of shape {frame.shape}")
        image = to_spec_channels(frame, self.spec.channels, bgr=True)  # (H0, W0, C) RGB or gray
        image = resize_to_spec(image, self.spec)  # (H, W, C)
        normalize(image, self.spec, out=self.buffer[0])  # (C, H, W) into the buffer
        return self.buffer

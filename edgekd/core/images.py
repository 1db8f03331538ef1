"""Image files: which extensions count as images, and one decoder every reader uses.

Training data folders, ``--calib-data``, ``--data`` for profile and ``edgekd run`` on files all read images through
:func:`read_image`, so they accept the same files and fail with the same one-line error. Torch-free (core).
"""

from __future__ import annotations

import os
import stat

import cv2
import numpy as np

from edgekd.core.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm",
                              ".pnm"})


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _read_regular_file(path: str | os.PathLike) -> np.ndarray:
    """The bytes of the regular file at ``path``. Opened without blocking and checked before a byte is read: a FIFO
    (or a device) named like an image would block for ever or never end; it is :class:`DataError` instead."""
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(f"cannot read image: {path} (not a regular file)")
        return np.frombuffer(f.read(), dtype=np.uint8)


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode one file with OpenCV (gray, BGR or BGRA as stored with the default ``flags``), as uint8: 16-bit
    images are scaled down. Works for non-ASCII paths. Any failure → :class:`DataError` naming the file."""
    try:
        buf = _read_regular_file(path)
        image = cv2.imdecode(buf, flags) if buf.size else None
    except (OSError, cv2.error, ValueError) as exc:
        raise DataError(f"cannot read image: {path} ({type(exc).__name__})") from None
    if image is None or image.size == 0:
        raise DataError(f"cannot read image: {path}")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255 / 65535)
    if image.dtype != np.uint8:
        raise DataError(f"cannot read image: {path} (unsupported pixel type {image.dtype})")
    return image

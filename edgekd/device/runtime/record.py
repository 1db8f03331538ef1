"""``edgekd run --record-frames DIR``: keep frames of the site itself, to certify early exit on them later without
labels (``edgekd profile BUNDLE --data DIR --write-thresholds``; :data:`edgekd.core.certify.DISAGREEMENT`).

Frames are stored as the source gave them (lossless PNG, full size), so certification reads them through the very
preprocessing ``edgekd run`` applies. Each file appears whole or not at all (atomic writes). A certificate treats its
images as independent draws from the scene: consecutive video frames are near-copies, so record sparsely
(``--record-every``) over the hours and lighting the device will see.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edgekd.core.atomic import atomic_write
from edgekd.core.writable import check_writable
from edgekd.core.errors import ConfigError, EdgekdError

#: The most frames one run records (about 1 GB of 640x480 PNGs); a certificate needs hundreds to thousands.
RECORD_MAX = 10_000
NAME = "frame-{:06d}.png"


class FrameRecorder:
    """Writes every ``every``-th frame it is given into ``folder`` (created; it must be new or empty, so a
    recording never mixes with other images), up to :data:`RECORD_MAX` frames."""

    def __init__(self, folder: str | os.PathLike, every: int = 1) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"--record-every must be a whole number of frames ≥ 1, got {every!r}")
        self.folder, self.every = Path(folder), every
        check_writable(self.folder, "--record-frames", directory=True)
        if self.folder.exists() and (not self.folder.is_dir() or any(self.folder.iterdir())):
            raise ConfigError(f"--record-frames {self.folder} must be a new or empty folder (recordings never mix "
                              "with other images)")
        self.seen = 0
        self.saved = 0

    @property
    def full(self) -> bool:
        return self.saved >= RECORD_MAX

    def add(self, frame: np.ndarray) -> None:
        """Record ``frame`` (H, W), (H, W, 3) BGR or (H, W, 4) BGRA uint8 if it is its turn."""
        self.seen += 1
        if (self.seen - 1) % self.every or self.full:
            return
        ok, png = cv2.imencode(".png", frame)
        if not ok:
            raise EdgekdError(f"cannot encode frame {self.seen} as PNG for --record-frames")
        if self.saved == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / NAME.format(self.saved), lambda f: f.write(png.tobytes()))
        self.saved += 1

    def summary(self) -> str:
        """One line for the run's summary: how many frames, where, and what to do with them."""
        cap = f" (stopped at the cap of {RECORD_MAX})" if self.full else ""
        return (f"{self.saved} frames in {self.folder}{cap}; certify early exit on them with `edgekd profile BUNDLE "
                f"--data {self.folder} --write-thresholds`")

"""What a run produces besides predictions: the overlay, the annotated video, the JSONL log, live statistics.

The video and the log are written under temporary names beside their paths (:class:`edgekd.core.atomic.PendingFile`)
and renamed onto them when the run ends well with at least one frame in them (:func:`end_outputs`): a run that fails
(a write error included: a full disk, ``ulimit -f``) leaves the existing files as they were and removes its
temporaries, and a killed run never leaves half a file under the name asked for (its temporary is removed by the next
run writing the same path).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgekd.core.atomic import PendingFile
from edgekd.core.errors import EdgekdError

WINDOW = "edgekd"


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any frame (gray, BGR, BGRA) as BGR for drawing and video."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image.copy()


def render(image: np.ndarray, pred: Any, fps: float) -> np.ndarray:
    """The overlay: class and confidence, the exit that answered, frames per second."""
    out = to_bgr(image)
    scale = max(0.4, min(out.shape[:2]) / 400)
    lines = [f"{pred.class_name} {100 * pred.confidence:.1f}%", f"exit {pred.exit}  {fps:.1f} FPS"]
    for k, text in enumerate(lines):
        org = (8, int((k + 1) * 24 * scale) + 4)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def display_available() -> bool:
    """A window can open: a display server is set and this OpenCV has a GUI backend (pip's headless build has none)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    info = cv2.getBuildInformation()
    gui = [ln for ln in info.splitlines() if ln.strip().startswith("GUI:")]
    return bool(gui) and "NONE" not in gui[0].upper()


def _write_problem(path: Path, exc: OSError) -> EdgekdError:
    """A write error of an output as one line naming the file asked for (not its temporary)."""
    return EdgekdError(f"cannot write {path}: {exc.strerror or exc}")


def _why_unwritten(tmp: Path) -> str | None:
    """Why OpenCV's video writer, which reports no write error, may have left ``tmp`` cut short: a full disk (under
    64 KiB left) or the process's file-size limit (``ulimit -f``) met; None when neither is seen."""
    with contextlib.suppress(OSError, AttributeError):
        st = os.statvfs(tmp.parent)
        if st.f_bavail * st.f_frsize < 64 * 1024:
            return os.strerror(errno.ENOSPC)
    with contextlib.suppress(OSError, ValueError, AttributeError, ImportError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit - 64 * 1024:
            return os.strerror(errno.EFBIG)
    return None


class VideoOutput:
    """An annotated video; every frame is resized to the first frame's size (the writer needs one size). Written
    under a temporary name with the same extension (OpenCV picks the container by it), renamed by :meth:`commit`.

    OpenCV's writer says nothing when a write fails (a full disk, ``ulimit -f``): :meth:`finish` reopens the
    temporary and counts its frames, and a video that does not hold every frame written is an error, never a
    replacement of the old file."""

    def __init__(self, path: str | Path, fps: float = 30.0):
        self.path, self.fps, self.writer, self.size = Path(path), fps, None, None
        self.pending: PendingFile | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.pending = PendingFile(self.path, keep_suffix=True)
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self.pending.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                self.pending.discard()
                raise EdgekdError(f"cannot write video {self.path} (unsupported container or codec)")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def finish(self) -> None:
        """Close the writer and check the temporary holds every frame; then make it durable. Raises a one-line
        error naming the video (the temporary removed) when it does not."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        capture = cv2.VideoCapture(str(self.pending.tmp))
        try:
            readable = capture.isOpened() and capture.read()[0]
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if readable else 0
        finally:
            capture.release()
        # a cut file does not open (no index, no moov atom) or counts short; some backends only estimate the count
        short = not readable or 0 < count < self.frames - max(1, self.frames // 100)
        if short:
            reason = _why_unwritten(self.pending.tmp) or "the video writer left an unreadable file (is the disk full?)"
            self.pending.discard()
            raise EdgekdError(f"cannot write video {self.path}: {reason}; the old file (if any) is kept")
        try:
            self.pending.sync()
        except OSError as exc:
            raise _write_problem(self.path, exc) from None

    def commit(self) -> None:
        """Put the video at its path (nothing happens when no frame was written)."""
        self.finish()
        if self.pending is not None:
            try:
                self.pending.commit()
            except OSError as exc:
                raise _write_problem(self.path, exc) from None

    def close(self) -> None:
        """Finish and commit this video alone (:func:`end_outputs` ends a run's outputs together)."""
        end_outputs([self], ok=True)

    def discard(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(cv2.error):
                self.writer.release()
            self.writer = None
        if self.pending is not None:
            self.pending.discard()


class JsonlOutput:
    """One JSON record per frame; flushed about once a second by the loop, put at its path by :meth:`commit` (an
    existing file is replaced only by a log with at least one record, and never after a failed write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pending = PendingFile(path)
        self.file = self.pending.open("w")
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record, allow_nan=False) + "\n")  # strict JSON: a NaN is a bug, never a line
        except OSError as exc:
            raise _write_problem(self.path, exc) from None
        self.records += 1

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            raise _write_problem(self.path, exc) from None

    def finish(self) -> None:
        """Close and fsync the log (a failure: one line naming it, the temporary removed)."""
        if not self.records:
            return
        try:
            self.pending.sync()
        except OSError as exc:
            raise _write_problem(self.path, exc) from None

    def commit(self) -> None:
        if not self.records:
            self.pending.discard()
            return
        try:
            self.pending.commit()
        except OSError as exc:
            raise _write_problem(self.path, exc) from None

    def discard(self) -> None:
        self.pending.discard()

    def close(self) -> None:
        """Finish and commit this log alone (:func:`end_outputs` ends a run's outputs together)."""
        end_outputs([self], ok=True)


def end_outputs(outputs: list, ok: bool) -> None:
    """End a run's outputs together: after a failure (``ok`` false) every temporary is removed and every old file
    kept; else each is finished (closed, checked, fsynced) before any is renamed, so a write error in one leaves
    all the old files as they were."""
    if not ok:
        for out in outputs:
            out.discard()
        return
    try:
        for out in outputs:
            out.finish()
    except BaseException:
        for out in outputs:
            out.discard()
        raise
    for out in outputs:
        out.commit()


def percentile(values: deque | list, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


@dataclass
class RunStats:
    """Running statistics: frame count, exit histogram, latencies (recent window for p50/p99), FPS."""

    n_exits: int
    frames: int = 0
    start: float = field(default_factory=time.perf_counter)
    exits: list[int] = field(default_factory=list)
    network_ms: deque = field(default_factory=lambda: deque(maxlen=1000))
    e2e_ms: deque = field(default_factory=lambda: deque(maxlen=1000))

    def __post_init__(self) -> None:
        self.exits = [0] * self.n_exits

    def add(self, pred: Any, e2e_ms: float) -> None:
        self.frames += 1
        self.exits[pred.exit] += 1
        self.network_ms.append(pred.timings["network"])
        self.e2e_ms.append(e2e_ms)

    @property
    def fps(self) -> float:
        return self.frames / max(time.perf_counter() - self.start, 1e-9)

    def line(self) -> str:
        hist = " ".join(f"e{i}:{n}" for i, n in enumerate(self.exits))
        return (f"{self.frames} frames  {self.fps:.1f} FPS  exits [{hist}]  network p50 "
                f"{percentile(self.network_ms, 50):.2f} / p99 {percentile(self.network_ms, 99):.2f} ms  "
                f"end-to-end p50 {percentile(self.e2e_ms, 50):.2f} / p99 {percentile(self.e2e_ms, 99):.2f} ms")

    def summary(self) -> dict[str, Any]:
        return {"frames": self.frames, "fps": self.fps, "exit_histogram": list(self.exits),
                "network_ms": {"p50": percentile(self.network_ms, 50), "p99": percentile(self.network_ms, 99)},
                "end_to_end_ms": {"p50": percentile(self.e2e_ms, 50), "p99": percentile(self.e2e_ms, 99)}}

"""Frame sources for ``edgekd run``: cameras, CSI cameras, network streams, videos, images, folders and globs.

:func:`open_source` turns ``--camera N`` / ``--source URI`` into a :class:`FrameSource`, a context manager that
iterates :class:`Frame` objects. Two kinds:

* live sources (camera, ``csi://N``, ``rtsp://``/``http(s)://`` streams) are read on a background thread that keeps
  only the newest frame — the consumer always gets the latest picture, never a backlog (stale frames are counted in
  ``stats["dropped"]``). A stream that drops is reopened with exponential back-off.
* files (a video, an image, a folder of images, a glob) are read in order, every frame, in the caller's thread, so
  a run over them is reproducible. ``loop=True`` repeats them forever.

Frames are yielded as read (gray, BGR or BGRA, any size); conversion to the model's input happens in the pipeline.
"""

from __future__ import annotations

import glob
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

from edgekd.core.errors import DataError, EdgekdError
from edgekd.core.images import is_image_file, read_image

STREAM_SCHEMES = {"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp"}
MAX_BACKOFF = 10.0  # seconds: the longest wait between two reopen attempts
CSI_PIPELINE = ("nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width=1280, height=720, "
                "framerate=30/1, format=NV12 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
                "video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


@dataclass
class Frame:
    image: np.ndarray  # (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA uint8, as read (OpenCV order)
    index: int  # 0-based frame number from this source (gaps on a live source are dropped frames)
    timestamp: float  # time.monotonic() when read (live) / when yielded (files)
    source: str  # file name or URI, for logs


class FrameSource:
    """A context manager and iterator of :class:`Frame`; ``stats`` counts frames, dropped, reopened, failed_reads."""

    live = False

    def __init__(self, name: str):
        self.name = name
        self.stats = {"frames": 0, "dropped": 0, "reopened": 0, "failed_reads": 0}

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _usable(image: np.ndarray | None) -> bool:
    return image is not None and image.size > 0


def _open_capture(capture: Callable[..., Any], args: tuple, what: str, hint: str) -> Any:
    cap = capture(*args)
    if not cap.isOpened():
        cap.release()
        raise EdgekdError(f"cannot open {what}: {hint}")
    return cap


class ImageFiles(FrameSource):
    """One image or a sorted list of them; an unreadable file is skipped and counted in ``failed_reads``."""

    def __init__(self, name: str, paths: list[str], loop: bool = False):
        super().__init__(name)
        self.paths, self.loop = paths, loop

    def __iter__(self) -> Iterator[Frame]:
        while True:
            read = 0
            for path in self.paths:
                image = _read_image(path)
                if not _usable(image):
                    self.stats["failed_reads"] += 1
                    continue
                read += 1
                yield self._emit(image, path)
            if not read:
                raise DataError(f"no readable image in {self.name}")
            if not self.loop:
                return

    def _emit(self, image: np.ndarray, path: str) -> Frame:
        frame = Frame(image, self.stats["frames"], time.monotonic(), path)
        self.stats["frames"] += 1
        return frame


def _read_image(path: str) -> np.ndarray | None:
    """The image as stored (gray, BGR or BGRA, uint8), or None when it cannot be read (it is skipped)."""
    try:
        return read_image(path)
    except DataError:
        return None


class VideoFile(FrameSource):
    """A video file, every frame in order; with ``loop`` it is reopened at its end, forever."""

    def __init__(self, path: str, loop: bool = False, capture: Callable[..., Any] = cv2.VideoCapture):
        super().__init__(path)
        self.loop, self.capture = loop, capture
        self._cap = self._open()

    def _open(self) -> Any:
        return _open_capture(self.capture, (self.name,), f"video {self.name}",
                             "not a video or image this OpenCV can read")

    def __iter__(self) -> Iterator[Frame]:
        if not self._cap.isOpened():  # iterated again
            self._cap = self._open()
        while True:
            read = 0
            try:
                while True:
                    ok, image = self._cap.read()
                    if not ok:
                        break  # the end of the file
                    if not _usable(image):
                        self.stats["failed_reads"] += 1
                        continue
                    read += 1
                    frame = Frame(image, self.stats["frames"], time.monotonic(), self.name)
                    self.stats["frames"] += 1
                    yield frame
            finally:
                self._cap.release()
            if not read:
                raise DataError(f"no frame could be read from {self.name}")
            if not self.loop:
                return
            self._cap = self._open()

    def close(self) -> None:
        self._cap.release()


class LiveSource(FrameSource):
    """A camera or stream read on a background thread that keeps only the newest frame.

    ``read()`` returning False means the stream dropped: with ``reconnect`` the capture is reopened after
    ``backoff``, 2 × ``backoff``, … seconds; ``max_retries`` consecutive failures end the run with an
    :class:`EdgekdError`. Without ``reconnect`` a drop simply ends the stream.
    """

    live = True

    def __init__(self, name: str, open_capture: Callable[[], Any], *, reconnect: bool = True,
                 max_retries: int = 10, backoff: float = 0.5):
        super().__init__(name)
        self.reconnect, self.max_retries, self.backoff = reconnect, max_retries, backoff
        self._open = open_capture
        self._cap = open_capture()  # fail now, at open_source(), when it cannot be opened at all
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._done = False
        self._error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._capture_loop, name=f"edgekd-capture {self.name}",
                                            daemon=True)
            self._thread.start()
        while True:
            with self._cond:
                while self._latest is None and not self._done:
                    self._cond.wait(0.5)
                frame, self._latest = self._latest, None
            if frame is None:  # the capture thread has finished
                if self._error is not None:
                    raise self._error
                return
            self.stats["frames"] += 1
            yield frame

    def _capture_loop(self) -> None:
        try:
            self._read_until_stopped()
        except EdgekdError as exc:
            self._error = exc
        except Exception as exc:  # an OpenCV error mid-stream: hand it to the consumer as one line
            self._error = EdgekdError(" ".join(f"reading {self.name} failed: {exc}".split()))
        finally:
            self._cap.release()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _read_until_stopped(self) -> None:
        index = failures = 0
        while not self._stop.is_set():
            ok, image = self._cap.read()
            if ok and _usable(image):
                failures = 0
                frame = Frame(image, index, time.monotonic(), self.name)
                index += 1
                with self._cond:
                    if self._latest is not None:
                        self.stats["dropped"] += 1  # the consumer never saw it and never will
                    self._latest = frame
                    self._cond.notify()
            elif ok:
                self.stats["failed_reads"] += 1
            elif not self.reconnect:
                return
            else:  # the stream dropped: reopen it with exponential back-off
                self._cap.release()
                while True:
                    failures += 1
                    if failures > self.max_retries:
                        raise EdgekdError(f"lost {self.name}: could not reopen it after {self.max_retries} tries")
                    if self._stop.wait(min(self.backoff * 2 ** (failures - 1), MAX_BACKOFF)):
                        return
                    try:
                        self._cap = self._open()
                    except EdgekdError:
                        continue
                    self.stats["reopened"] += 1
                    break

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)  # a read blocked inside OpenCV may outlive this; the thread is a daemon
        else:
            self._cap.release()
        with self._cond:
            self._done = True
            self._cond.notify_all()


def has_gstreamer() -> bool:
    """This OpenCV was built with GStreamer (pip's opencv-python* wheels are not)."""
    match = re.search(r"^\s*GStreamer:\s*(\w+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper() == "YES"


def _camera(device: int | str, capture: Callable[..., Any]) -> Callable[[], Any]:
    api = [cv2.CAP_V4L2] if sys.platform.startswith("linux") and hasattr(cv2, "CAP_V4L2") else []
    path = f"/dev/video{device}" if isinstance(device, int) else device
    hint = (f"{path} does not exist" if sys.platform.startswith("linux") and not os.path.exists(path)
            else "is it connected, and not in use by another program?")
    return lambda: _open_capture(capture, (device, *api), f"camera {device}", hint)


def open_source(spec: str | int, *, loop: bool = False, reconnect: bool | None = None, max_retries: int = 10,
                backoff: float = 0.5, capture: Callable[..., Any] = cv2.VideoCapture) -> FrameSource:
    """The frame source for ``spec``: a camera index, ``/dev/videoN``, ``csi://N``, a stream URL, a video, an
    image, a folder of images or a glob pattern.

    ``loop`` repeats files and folders forever. ``reconnect`` (default: on for live sources) reopens a live source
    that drops, at most ``max_retries`` consecutive times, waiting ``backoff`` seconds doubled each try; it does not
    apply to files. ``capture`` makes the ``cv2.VideoCapture``-like objects (tests inject their own).
    """
    live = dict(reconnect=True if reconnect is None else reconnect, max_retries=max_retries, backoff=backoff)
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        return LiveSource(f"camera {int(text)}", _camera(int(text), capture), **live)
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "v4l2" or text.startswith("/dev/video"):
        device = rest if scheme else text
        return LiveSource(f"camera {device}", _camera(int(device) if device.isdigit() else device, capture), **live)
    if scheme == "csi":
        if not rest.isdigit():
            raise EdgekdError(f"bad CSI camera {text!r}: expected csi://N, N the sensor id (csi://0)")
        if not has_gstreamer():
            raise EdgekdError(f"{text} needs OpenCV with GStreamer, and pip's opencv-python* has none: "
                              "pip uninstall opencv-python opencv-python-headless, sudo apt install python3-opencv "
                              "(JetPack's OpenCV) and use a venv made with --system-site-packages")
        pipeline = CSI_PIPELINE.format(sensor=int(rest))
        return LiveSource(text, lambda: _open_capture(capture, (pipeline, cv2.CAP_GSTREAMER), f"camera {text}",
                                                      "is the sensor connected and nvargus-daemon running?"), **live)
    if scheme in STREAM_SCHEMES:
        return LiveSource(text, lambda: _open_capture(capture, (text,), f"stream {text}",
                                                      "is the URL right and the server reachable?"), **live)
    if scheme == "file":
        text = rest
    elif scheme:
        raise EdgekdError(f"unknown source scheme {scheme}:// in {text!r} (use a path, N, /dev/videoN, csi://N, "
                          "rtsp://, http(s)://)")
    return _open_files(text, loop, capture)


def _open_files(text: str, loop: bool, capture: Callable[..., Any]) -> FrameSource:
    path = Path(text).expanduser()
    if path.is_dir():
        images = sorted(str(p) for p in path.iterdir() if p.is_file() and is_image_file(p))
        if not images:
            raise DataError(f"no images in folder {text}")
        return ImageFiles(text, images, loop)
    if path.is_file():
        if is_image_file(path):
            return ImageFiles(text, [str(path)], loop)
        return VideoFile(str(path), loop, capture)
    if any(c in text for c in "*?["):
        images = sorted(p for p in glob.glob(os.path.expanduser(text))
                        if os.path.isfile(p) and is_image_file(p))
        if not images:
            raise DataError(f"no images match {text}")
        return ImageFiles(text, images, loop)
    raise DataError(f"no such file, folder or camera: {text}")


def prefetched(frames: Iterable[Frame], depth: int = 4,
               prepare: Callable[[np.ndarray], Any] | None = None) -> Iterator[tuple[Frame, Any]]:
    """Iterate ``frames`` with decoding (and ``prepare(frame.image)``, e.g. preprocessing) moved to a background
    thread: yields ``(frame, prepared)`` for every frame, in order, at most ``depth`` ahead. Files gain the overlap
    of decode and inference that live sources get from their capture thread; an error in the reader reaches the
    consumer; leaving the loop early stops the reader."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def reader() -> None:
        try:
            for frame in frames:
                item_ = (frame, prepare(frame.image) if prepare is not None else None)
                while not stop.is_set():
                    try:
                        q.put(item_, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: Any = done
        except BaseException as exc:  # handed to the consumer, which raises it
            item = exc
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=reader, name="edgekd-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()  # the reader checks ``stop`` between frames; the caller may release the source after this

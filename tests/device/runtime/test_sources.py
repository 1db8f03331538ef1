"""Frame sources on real files written here: a small MJPG video, image folders, globs, and live sources whose
capture plays that video through a wrapper that drops the stream (reconnect) or outpaces the consumer (newest only)."""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekd.core.errors import EdgekdError
from edgekd.device.runtime.sources import Frame, has_gstreamer, open_source

N_FRAMES = 20


def number(image: np.ndarray) -> int:
    """The frame number encoded in a test video frame (uniform gray level 10 × n)."""
    return int(round(float(image.mean()) / 10))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    assert writer.isOpened()
    for n in range(N_FRAMES):
        writer.write(np.full((48, 64, 3), 10 * n, np.uint8))
    writer.release()
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    """Four readable images of distinct shapes (BGR, gray, BGRA, odd-sized JPEG), one corrupt PNG, one text file."""
    cv2.imwrite(str(tmp_path / "000.png"), np.full((17, 33, 3), 50, np.uint8))
    cv2.imwrite(str(tmp_path / "001.png"), np.full((21, 13), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "002.png"), np.full((9, 11, 4), 150, np.uint8))
    cv2.imwrite(str(tmp_path / "003.jpg"), np.full((31, 7, 3), 200, np.uint8))
    (tmp_path / "004.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


SHAPES = [(17, 33, 3), (21, 13), (9, 11, 4), (31, 7, 3)]


def test_video_yields_every_frame_in_order_then_stops(video):
    with open_source(str(video)) as src:
        frames = list(src)
    assert not src.live
    assert [number(f.image) for f in frames] == list(range(N_FRAMES))
    assert [f.index for f in frames] == list(range(N_FRAMES))
    assert all(isinstance(f, Frame) and f.image.shape == (48, 64, 3) and f.source == str(video) for f in frames)
    assert src.stats["frames"] == N_FRAMES and src.stats["failed_reads"] == 0


def test_video_loop_repeats(video):
    with open_source(str(video), loop=True) as src:
        frames = list(islice(src, 2 * N_FRAMES + 5))
    assert [number(f.image) for f in frames] == [i % N_FRAMES for i in range(2 * N_FRAMES + 5)]
    assert [f.index for f in frames] == list(range(2 * N_FRAMES + 5))


def test_folder_in_sorted_order_skipping_unreadable(folder):
    with open_source(str(folder)) as src:
        frames = list(src)
    assert [f.image.shape for f in frames] == SHAPES
    assert all(f.image.dtype == np.uint8 for f in frames)
    assert [Path(f.source).name for f in frames] == ["000.png", "001.png", "002.png", "003.jpg"]
    assert src.stats["failed_reads"] == 1 and src.stats["frames"] == 4


def test_folder_loop(folder):
    with open_source(str(folder), loop=True) as src:
        frames = list(islice(src, 10))
    assert [f.image.shape for f in frames] == (SHAPES * 3)[:10]
    assert src.stats["failed_reads"] == 2  # once per pass


def test_glob(folder):
    with open_source(str(folder / "00*.png")) as src:
        frames = list(src)
    assert [f.image.shape for f in frames] == SHAPES[:3]
    assert src.stats["failed_reads"] == 1


def test_single_image(folder):
    with open_source(str(folder / "002.png")) as src:
        frames = list(src)
    assert len(frames) == 1 and frames[0].image.shape == (9, 11, 4) and int(frames[0].image[0, 0, 3]) == 150
    with open_source(str(folder / "002.png"), loop=True) as src:
        assert len(list(islice(src, 3))) == 3


def test_missing_path_and_empty_folder(tmp_path):
    for spec in (tmp_path / "nope.mp4", tmp_path / "frames" / "*.png"):
        with pytest.raises(EdgekdError, match="nope.mp4|frames") as err:
            open_source(str(spec))
        assert "\n" not in str(err.value)
    with pytest.raises(EdgekdError, match="no images in folder"):
        open_source(str(tmp_path))
    with pytest.raises(EdgekdError, match="unknown source scheme"):
        open_source("ftp://example.com/x.mp4")


def test_unreadable_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(EdgekdError, match="cannot open video .*bad.mp4"):
        open_source(str(bad))


@pytest.mark.parametrize("spec", [99, "99", "/dev/video99"])
def test_unopenable_camera(spec):
    with pytest.raises(EdgekdError, match="cannot open camera") as err:
        open_source(spec)
    assert "99" in str(err.value) and "\n" not in str(err.value)


def test_csi_needs_gstreamer():
    if has_gstreamer():
        pytest.skip("this OpenCV has GStreamer: csi://0 would try to open a real sensor")
    with pytest.raises(EdgekdError, match="GStreamer") as err:
        open_source("csi://0")
    message = str(err.value)
    assert "\n" not in message and "python3-opencv" in message and "--system-site-packages" in message


class FlakyCapture:
    """A real VideoCapture on the test video, paced like a camera; ``read`` returns False once at ``drop_at``."""

    def __init__(self, path: Path, state: dict, period: float = 0.01):
        self.cap, self.state, self.period, self.n = cv2.VideoCapture(str(path)), state, period, 0
        state["opened"] += 1

    def isOpened(self) -> bool:
        return self.cap.isOpened()

    def read(self):
        time.sleep(self.period)
        if self.n == self.state["drop_at"] and not self.state["dropped"]:
            self.state["dropped"] = True
            return False, None
        self.n += 1
        return self.cap.read()

    def release(self) -> None:
        self.cap.release()


def test_live_source_reopens_after_a_drop(video):
    state = {"opened": 0, "drop_at": 5, "dropped": False}
    with open_source("rtsp://camera.test/stream", capture=lambda *a: FlakyCapture(video, state),
                     backoff=0.01) as src:
        assert src.live
        frames = list(islice(src, 12))
    numbers = [number(f.image) for f in frames]
    assert src.stats["reopened"] == 1 and state["opened"] == 2
    restart = next(i for i in range(1, len(numbers)) if numbers[i] < numbers[i - 1])
    assert max(numbers[:restart]) <= 4  # frame 5 was never delivered: the stream dropped there
    assert numbers[:restart] == sorted(numbers[:restart]) and numbers[restart:] == sorted(numbers[restart:])
    assert all(b > a for a, b in zip([f.index for f in frames], [f.index for f in frames][1:]))


def test_live_source_without_reconnect_ends_at_the_drop(video):
    state = {"opened": 0, "drop_at": 5, "dropped": False}
    with open_source("rtsp://camera.test/stream", capture=lambda *a: FlakyCapture(video, state, 0.002),
                     reconnect=False) as src:
        frames = list(src)
    assert 1 <= len(frames) <= 5 and src.stats["reopened"] == 0 and state["opened"] == 1


def test_live_source_gives_up_after_max_retries(video, tmp_path):
    calls = []

    def capture(*args):  # the first open plays the video; the stream never comes back after it ends
        calls.append(args)
        return cv2.VideoCapture(str(video if len(calls) == 1 else tmp_path / "gone.avi"))

    with open_source("http://camera.test/video", capture=capture, max_retries=3, backoff=0.001) as src:
        with pytest.raises(EdgekdError, match="lost http://camera.test/video.*3 tries") as err:
            for _ in src:
                pass
    assert "\n" not in str(err.value) and len(calls) == 4 and src.stats["reopened"] == 0


class FastCapture:
    """The test video played in a loop much faster than it is consumed, every frame stamped with its read count."""

    def __init__(self, path: Path):
        self.path, self.cap, self.count = path, cv2.VideoCapture(str(path)), 0

    def isOpened(self) -> bool:
        return self.cap.isOpened()

    def read(self):
        time.sleep(0.001)
        ok, image = self.cap.read()
        if not ok:
            self.cap.release()
            self.cap = cv2.VideoCapture(str(self.path))
            ok, image = self.cap.read()
        image[0, 0] = (self.count >> 16 & 255, self.count >> 8 & 255, self.count & 255)
        self.count += 1
        return ok, image

    def release(self) -> None:
        self.cap.release()


def test_live_source_keeps_only_the_newest_frame(video):
    ages, frames = [], []
    with open_source(0, capture=lambda *a: FastCapture(video)) as src:
        for frame in src:
            ages.append(time.monotonic() - frame.timestamp)
            frames.append(frame)
            if len(frames) == 8:
                break
            time.sleep(0.05)  # a slow consumer
    stamps = [int(f.image[0, 0, 0]) << 16 | int(f.image[0, 0, 1]) << 8 | int(f.image[0, 0, 2]) for f in frames]
    assert stamps == [f.index for f in frames]  # the index counts every frame read, delivered or not
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # never out of order
    assert src.stats["dropped"] > 0 and src.stats["frames"] == 8
    assert max(s - a for a, s in zip(stamps, stamps[1:])) > 1  # stale frames were skipped, not queued
    assert max(ages[1:]) < 0.04  # each frame handed over was fresh, not one waiting since the last take


def test_prefetched_keeps_order_prepares_on_the_reader_and_passes_errors_on():
    import threading

    from edgekd.device.runtime.sources import prefetched

    main = threading.get_ident()

    def frames(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise EdgekdError("frame source broke")
            yield Frame(np.full((2, 2), i, np.uint8), i, float(i), "gen")

    seen = list(prefetched(frames(30), depth=3, prepare=lambda img: (int(img[0, 0]), threading.get_ident())))
    assert [f.index for f, _ in seen] == list(range(30))
    assert all(p[0] == f.index and p[1] != main for f, p in seen)
    got = []
    with pytest.raises(EdgekdError, match="broke"):
        for f, _ in prefetched(frames(10, fail_at=6)):
            got.append(f.index)
    assert got == list(range(6))
    stream = prefetched(frames(1000), depth=2)
    assert next(stream)[0].index == 0
    stream.close()  # leaving early stops the reader thread
    assert not any(t.name == "edgekd-prefetch" and t.is_alive() for t in threading.enumerate())

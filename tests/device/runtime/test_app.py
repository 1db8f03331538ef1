"""`edgekd run` end to end on a tiny built bundle: a video file and an image folder the tests write, every mode,
every output, a source that drops mid-stream, unusual frames, and no torch."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.manifest import load_manifest
from edgekd.core.preprocess import preprocess
from edgekd.core.vote import softmax, vote
from edgekd.device.compiler import build_bundle
from edgekd.device.runners import make_runner
from edgekd.device.runtime import app as run_app
from edgekd.device.runtime.app import RunOptions, run_stream
from edgekd.device.runtime.sources import open_source
from tests.helpers import assert_cli_runs_without_torch

N_FRAMES = 24


@pytest.fixture(scope="module")
def built(tiny_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "int8"
    build_bundle(tiny_bundle, precision="int8", out=out, cache_dir=None, max_drop=100.0)
    return out


@pytest.fixture(scope="module")
def frames(built) -> list[np.ndarray]:
    """Validation digits as 64x48 BGR frames (what a camera would deliver)."""
    with np.load(load_manifest(built).file("val_sample")) as f:
        images = f["images"][:N_FRAMES]
    return [cv2.resize(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), (64, 48), interpolation=cv2.INTER_NEAREST)
            for img in images]


@pytest.fixture(scope="module")
def video(frames, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "digits.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _decoded(video: Path) -> list[np.ndarray]:
    cap, out = cv2.VideoCapture(str(video)), []
    while True:
        ok, img = cap.read()
        if not ok:
            return out
        out.append(img)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_early_exit_on_video_logs_every_frame_and_respects_thresholds(built, video, tmp_path):
    jsonl, mp4 = tmp_path / "log.jsonl", tmp_path / "out.mp4"
    result = CliRunner().invoke(app, ["run", str(built), "--source", str(video), "--mode", "early-exit",
                                      "--headless", "--jsonl", str(jsonl), "--output", str(mp4)])
    assert result.exit_code == 0, result.output
    recs = _records(jsonl)
    assert [r["index"] for r in recs] == list(range(N_FRAMES))
    m = load_manifest(built)
    for r in recs:
        assert r["exit"] == m.num_exits - 1 or r["confidence"] >= m.thresholds[r["exit"]]
        assert {"timestamp", "label", "class_name", "pre_ms", "network_ms", "post_ms"} <= set(r)
    assert len(_decoded(mp4)) == N_FRAMES
    assert "answered at exit" in result.output


def test_full_vote_on_image_folder_equals_full_graph_vote(built, frames, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    jsonl = tmp_path / "log.jsonl"
    summary = run_stream(built, str(folder), RunOptions(mode="full-vote", display="off", jsonl=str(jsonl)))
    assert summary["frames"] == N_FRAMES
    m = load_manifest(built)
    x = np.stack([preprocess(f, m.spec, bgr=True) for f in frames])  # (N, C, H, W)
    with make_runner("onnxruntime", m.full_graph()) as runner:
        out = runner.infer({"image": x})
    probs = np.stack([softmax(out[f"logits{i}"]) for i in range(m.num_exits)])
    if m.full_answer == "deepest":  # what export's paired test chose for the tiny model: either is checked
        expected = probs[-1].argmax(axis=1)
    else:
        expected = vote(probs, m.vote_rule, np.asarray(m.vote_weights) if m.vote_weights else None)
    assert [r["label"] for r in _records(jsonl)] == expected.tolist()


def test_fixed_exit_mode_and_max_frames(built, video, tmp_path):
    jsonl = tmp_path / "k.jsonl"
    summary = run_stream(built, str(video), RunOptions(mode="exit", exit=1, display="off", jsonl=str(jsonl),
                                                       max_frames=5))
    assert summary["frames"] == 5 and summary["exit_histogram"][1] == 5
    assert {r["exit"] for r in _records(jsonl)} == {1}


def test_reader_thread_stops_before_the_video_is_released(built, video, monkeypatch):
    """Leaving the loop early (--max-frames) must stop the prefetch reader before the capture is released: OpenCV
    crashes when a capture is released while another thread is inside read()."""
    import threading

    from edgekd.device.runtime import sources

    alive_at_close = []
    original = sources.VideoFile.close

    def close(self):
        alive_at_close.append(any(t.name == "edgekd-prefetch" and t.is_alive() for t in threading.enumerate()))
        original(self)

    monkeypatch.setattr(sources.VideoFile, "close", close)
    for _ in range(3):
        summary = run_stream(built, str(video), RunOptions(mode="exit", exit=0, display="off", max_frames=2))
        assert summary["frames"] == 2
    assert alive_at_close == [False, False, False]


class DropsOnce:
    """A real capture of the test video that reports one failed read at frame 10, as a dropped camera would."""

    opened = 0

    def __init__(self, path: str, *args):
        type(self).opened += 1
        self.cap = cv2.VideoCapture(path)
        self.reads = 0

    def isOpened(self):
        return self.cap.isOpened()

    def read(self):
        self.reads += 1
        if type(self).opened == 1 and self.reads == 10:
            return False, None
        return self.cap.read()

    def release(self):
        self.cap.release()

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_live_source_that_drops_is_reopened_and_the_run_completes(built, video, monkeypatch):
    factory = functools.partial(lambda path, *a: DropsOnce(path, *a), str(video))
    monkeypatch.setattr(run_app, "open_source",
                        lambda spec, **kw: open_source(0, capture=lambda *a: factory(), **kw))
    summary = run_stream(built, 0, RunOptions(display="off", max_frames=30))
    assert summary["source"]["reopened"] >= 1
    assert summary["frames"] == 30


def test_unusual_frames_gray_bgra_odd_sizes(built, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a_gray.png"), rng.integers(0, 255, (37, 51), dtype=np.uint8))
    cv2.imwrite(str(folder / "b_bgra.png"), rng.integers(0, 255, (9, 13, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "c_big.jpg"), rng.integers(0, 255, (301, 173, 3), dtype=np.uint8))
    summary = run_stream(built, str(folder), RunOptions(display="off"))
    assert summary["frames"] == 3


def test_bad_sources_are_clean_errors(built, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["run", str(built), "--source", str(tmp_path / "missing.mp4"), "--headless"])
    assert r.exit_code == 2 and "missing.mp4" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["run", str(built), "--headless"])
    assert r.exit_code == 2 and "--camera" in r.output
    r = runner.invoke(app, ["run", str(tmp_path), "--source", "x.png", "--headless"])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_run_never_imports_torch(built, video, tmp_path):
    assert_cli_runs_without_torch(["run", str(built), "--source", str(video), "--headless",
                                   "--jsonl", str(tmp_path / "x.jsonl")])


@pytest.mark.parametrize("mode", ["early-exit", "full-vote"])
@pytest.mark.parametrize("kind", ["video", "folder"])
def test_both_modes_on_both_source_kinds_log_every_frame(built, video, frames, tmp_path, mode, kind):
    source = video
    if kind == "folder":
        source = tmp_path / "imgs"
        source.mkdir()
        for i, f in enumerate(frames):
            cv2.imwrite(str(source / f"{i:03d}.png"), f)
    jsonl = tmp_path / "log.jsonl"
    summary = run_stream(built, str(source), RunOptions(mode=mode, display="off", jsonl=str(jsonl)))
    recs = _records(jsonl)
    assert summary["frames"] == len(recs) == N_FRAMES and summary["mode"] == mode
    assert [r["index"] for r in recs] == list(range(N_FRAMES))
    if mode == "full-vote":
        assert {r["exit"] for r in recs} == {load_manifest(built).num_exits - 1}

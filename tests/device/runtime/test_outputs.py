"""`edgekd run`'s files (--jsonl, --output) never destroy what is on disk: a run that fails before its first frame
leaves an existing log as it was, a killed run leaves no half-written log under the name asked for, and neither
option may point at a file the run reads (the bundle's manifest or graphs, the source) or at the other.

Torch-free: the bundle is the committed fixture exported by an earlier edgekd (tests/fixtures/bundle-abf6d4b)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


@pytest.fixture
def bundle(tmp_path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(FIXTURE, dest)
    return dest


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:02d}.png"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return folder


def _run(*args: str):
    return CliRunner().invoke(app, ["run", *map(str, args), "--headless"])


def test_a_source_that_fails_before_its_first_frame_leaves_the_log_as_it_was(bundle, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_text("not an image")
    log = tmp_path / "log.jsonl"
    log.write_text('{"yesterday": 1}\n')
    r = _run(bundle, "--source", bad, "--jsonl", log)
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    assert log.read_text() == '{"yesterday": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "bundle", "log.jsonl"]


def test_a_complete_run_replaces_the_log_and_leaves_no_temporary(bundle, images, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("old\n")
    r = _run(bundle, "--source", images, "--jsonl", log)
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [rec["index"] for rec in records] == list(range(6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "frames", "log.jsonl"]


@pytest.mark.parametrize("flag", ["--jsonl", "--output"])
@pytest.mark.parametrize("target", ["manifest.json", "full.onnx", "source"])
def test_an_output_may_not_overwrite_what_the_run_reads(bundle, images, tmp_path, flag, target):
    victim = images / "00.png" if target == "source" else bundle / target
    source = victim if target == "source" else images
    before = victim.read_bytes()
    r = _run(bundle, "--source", source, flag, victim)
    assert r.exit_code == 2 and "refusing to overwrite" in r.output and "Traceback" not in r.output, r.output
    assert victim.read_bytes() == before


@pytest.mark.parametrize("flag", ["--jsonl", "--output"])
@pytest.mark.parametrize("kind", ["folder", "glob"])
def test_an_output_may_not_overwrite_a_frame_of_a_folder_or_glob_source(bundle, images, flag, kind):
    """Issue 24, item 3: only the --source path itself was guarded; a frame under a folder (or matched by a glob)
    was overwritten by the log."""
    victim = images / "03.png"
    before = victim.read_bytes()
    r = _run(bundle, "--source", images if kind == "folder" else images / "*.png", flag, victim)
    assert r.exit_code == 2 and "refusing to overwrite" in r.output and "Traceback" not in r.output, r.output
    assert victim.read_bytes() == before


def test_output_and_jsonl_may_not_be_the_same_file(bundle, images, tmp_path):
    r = _run(bundle, "--source", images, "--jsonl", tmp_path / "x.mp4", "--output", tmp_path / "x.mp4")
    assert r.exit_code == 2 and "same file" in r.output
    assert not (tmp_path / "x.mp4").exists()


def test_the_video_is_written_under_its_own_name_only_when_complete(bundle, images, tmp_path):
    video = tmp_path / "out.mp4"
    r = _run(bundle, "--source", images, "--output", video)
    assert r.exit_code == 0, r.output
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "frames", "out.mp4"]


def test_a_killed_run_leaves_the_log_as_it_was_and_the_next_run_cleans_up(bundle, images, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("old\n")
    args = [sys.executable, "-m", "edgekd", "run", str(bundle), "--source", str(images), "--loop", "--headless",
            "--jsonl", str(log)]
    proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not any(p.name.startswith(".log.jsonl.edgekd-") and p.stat().st_size > 0 for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)  # frames are being logged (flushed about once a second)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert log.read_text() == "old\n"
    r = _run(bundle, "--source", images, "--jsonl", log)
    assert r.exit_code == 0, r.output
    assert len(log.read_text().splitlines()) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "frames", "log.jsonl"]

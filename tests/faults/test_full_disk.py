"""A full disk and a file-size limit under `edgekd run`'s outputs: the old `--output` video and `--jsonl` log stay as
they were, the temporaries go, and the one line names the file (exit 2). A write error is never followed by a
commit (issue 24, items 1, 2 and 5).

Real faults, not injected ones: a small tmpfs (mounting needs root with CAP_SYS_ADMIN; elsewhere these tests skip
and say so) and RLIMIT_FSIZE (``ulimit -f``). Torch-free: the bundle is the committed fixture."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import mount_tmpfs, unmount

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def _edgekd(*args, cwd: Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=preexec)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-3000:])
    return lines[0]


def _clip(path: Path, frames: int = 8) -> Path:
    """A short noisy clip (noise: the encoded video grows with every frame)."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KiB tmpfs: (mount, work dir holding the clip)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount_tmpfs(mnt, "200k")
    try:
        work = tmp_path / "work"
        work.mkdir()
        _clip(work / "clip.avi")
        yield mnt, work
    finally:
        unmount(mnt)


def _run(work: Path, *outputs, preexec=None) -> subprocess.CompletedProcess:
    return _edgekd("run", FIXTURE, "--source", work / "clip.avi", "--headless", "--loop", "--max-frames", "3000",
                   *outputs, cwd=work, preexec=preexec)


def _hidden(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("which", ["--output", "--jsonl", "both"])
def test_a_full_disk_keeps_the_old_outputs_and_removes_the_temporaries(small_disk, which):
    mnt, work = small_disk
    old = {mnt / "v.mp4": b"old video " * 100, mnt / "log.jsonl": b'{"old": 1}\n' * 100}
    for path, data in old.items():
        path.write_bytes(data)
    args = {"--output": ["--output", mnt / "v.mp4"], "--jsonl": ["--jsonl", mnt / "log.jsonl"],
            "both": ["--output", mnt / "v.mp4", "--jsonl", mnt / "log.jsonl"]}[which]
    line = _one_error_line(_run(work, *args))
    assert "space" in line.lower() and ".tmp" not in line, line
    assert any(str(p) in line for p in old), line  # names the file asked for, not its temporary
    for path, data in old.items():
        assert path.read_bytes() == data, path
    assert _hidden(mnt) == []


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


@pytest.mark.parametrize("which", ["--jsonl", "--output"])
def test_a_file_size_limit_is_one_line_and_keeps_the_old_output(tmp_path, which):
    work = tmp_path
    _clip(work / "clip.avi")
    path = work / ("log.jsonl" if which == "--jsonl" else "v.mp4")
    path.write_bytes(b'{"old": 1}\n' * 100)
    for _ in range(3):  # it used to depend on timing: a cut log renamed into place in 2 runs of 3
        line = _one_error_line(_run(work, which, path, preexec=_limit_file_size))
        assert str(path) in line and ".tmp" not in line, line
        assert path.read_bytes() == b'{"old": 1}\n' * 100
        assert _hidden(work) == []


@pytest.fixture
def immutable(tmp_path):
    """An existing log no one may write, root included (chattr +i; skipped where the file system has no such flag)."""
    log = tmp_path / "log.jsonl"
    log.write_text('{"old": 1}\n')
    r = subprocess.run(["chattr", "+i", str(log)], capture_output=True, text=True)
    if r.returncode != 0 or os.access(log, os.W_OK):
        pytest.skip(f"cannot make a file immutable here ({(r.stderr or 'still writable').strip()})")
    try:
        yield log
    finally:
        subprocess.run(["chattr", "-i", str(log)], capture_output=True)


def test_a_read_only_existing_log_is_refused_before_the_run_and_leaves_no_temporary(tmp_path, immutable):
    _clip(tmp_path / "clip.avi")
    r = _edgekd("run", FIXTURE, "--source", tmp_path / "clip.avi", "--headless", "--jsonl", immutable, cwd=tmp_path)
    line = _one_error_line(r)
    assert "read-only" in line and str(immutable) in line and ".tmp" not in line, line
    assert immutable.read_text() == '{"old": 1}\n'
    assert _hidden(tmp_path) == []

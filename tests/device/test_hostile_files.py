"""Hostile files and settings a device command meets (issue 24): each is one line ``error: …`` naming what is
wrong, exit 2, before any work, and never a hang. Every case runs the real command in a child process (stderr as
a user sees it), with a timeout standing in for a hang. Torch-free: the bundle is the committed fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def _edgekd(*args, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _one_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-3000:])
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (16, 16), dtype=np.uint8))
    return folder


# -- item 8: EDGEKD_THREADS under --threads' bound ------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "1.5", "100000", "5000", "-5", "0"])
def test_a_bad_edgekd_threads_is_one_line_for_run(tmp_path, frames, value):
    r = _edgekd("run", FIXTURE, "--source", frames, "--headless", cwd=tmp_path, env={"EDGEKD_THREADS": value},
                timeout=60)  # 100000 threads used to hang the run
    _one_line(r, "EDGEKD_THREADS", "1024")


@pytest.mark.parametrize("command", ["profile", "build"])
@pytest.mark.parametrize("value", ["abc", "5000"])
def test_a_bad_edgekd_threads_is_one_line_for_profile_and_build(tmp_path, command, value):
    args = {"profile": ["profile", FIXTURE, "--out", tmp_path / "report", "--iterations", "2", "--warmup", "0"],
            "build": ["build", FIXTURE, "--precision", "fp32", "--out", tmp_path / "built"]}[command]
    r = _edgekd(*args, cwd=tmp_path, env={"EDGEKD_THREADS": value}, timeout=60)
    _one_line(r, "EDGEKD_THREADS")
    assert not (tmp_path / "report").exists() and not (tmp_path / "built").exists()


def test_a_good_edgekd_threads_still_runs(tmp_path, frames):
    r = _edgekd("run", FIXTURE, "--source", frames, "--headless", cwd=tmp_path, env={"EDGEKD_THREADS": " 2 "})
    assert r.returncode == 0, r.stderr[-2000:]

"""A read-only file system (a device's read-only root, a write-protected SD card): a bundle on it runs, profiles and
builds elsewhere (reading needs no write: nothing tries to tidy or lock it), and every output asked of it is one line
``error: …read-only file system``, exit 2, with nothing written.

Real mounts: a tmpfs is mounted, filled, then remounted read-only. That takes root with CAP_SYS_ADMIN; elsewhere the
tests skip and say so. Torch-free: the bundle is the committed fixture (tests/fixtures/bundle-abf6d4b)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekd.core.manifest import load_manifest
from tests.helpers import mount_tmpfs, unmount

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def _edgekd(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def mounted(tmp_path):
    """A tmpfs holding the fixture bundle and a short clip, remounted read-only; yields (mount, work dir)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    mount_tmpfs(mnt, "64m")
    try:
        shutil.copytree(str(FIXTURE), str(mnt / "bundle"))
        writer = cv2.VideoWriter(str(mnt / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
        for n in range(8):
            writer.write(np.full((48, 64, 3), 20 * n, np.uint8))
        writer.release()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        work = tmp_path / "work"
        work.mkdir()
        yield mnt, work
    finally:
        unmount(mnt)


def test_a_bundle_on_a_read_only_file_system_runs_profiles_and_builds_elsewhere(mounted):
    mnt, work = mounted
    before = _tree(mnt)
    load_manifest(mnt / "bundle")
    r = _edgekd("run", mnt / "bundle", "--source", mnt / "clip.avi", "--headless", "--jsonl", work / "log.jsonl",
                cwd=work)
    assert r.returncode == 0 and len((work / "log.jsonl").read_text().splitlines()) == 8, r.stderr[-2000:]
    r = _edgekd("profile", mnt / "bundle", "--out", work / "report", "--iterations", "2", "--warmup", "0", cwd=work)
    assert r.returncode == 0 and (work / "report" / "report.json").exists(), r.stderr[-2000:]
    r = _edgekd("build", mnt / "bundle", "--precision", "fp32", "--out", work / "built", cwd=work)
    assert r.returncode == 0 and load_manifest(work / "built").precision == "fp32", r.stderr[-2000:]
    assert _tree(mnt) == before


@pytest.mark.parametrize("case", ["build --out", "profile --out", "run --jsonl", "run --output",
                                  "profile --write-thresholds"])
def test_an_output_on_a_read_only_file_system_is_one_line_and_nothing_is_written(mounted, case):
    mnt, work = mounted
    src, clip = mnt / "bundle", mnt / "clip.avi"
    args = {
        "build --out": ["build", src, "--precision", "fp32", "--out", mnt / "out"],
        "profile --out": ["profile", src, "--out", mnt / "report", "--iterations", "2", "--warmup", "0"],
        "run --jsonl": ["run", src, "--source", clip, "--headless", "--jsonl", mnt / "log.jsonl"],
        "run --output": ["run", src, "--source", clip, "--headless", "--output", mnt / "out.avi"],
        # the manifest --write-thresholds rewrites lies on the read-only mount
        "profile --write-thresholds": ["profile", src, "--write-thresholds", "--fit", "point", "--target-drop", "5",
                                       "--out", work / "report", "--iterations", "2", "--warmup", "0"],
    }[case]
    before = _tree(mnt)
    r = _edgekd(*args, cwd=work)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-3000:])
    assert "read-only file system" in lines[0].lower() and ".tmp" not in lines[0], lines[0]  # names what was asked
    assert _tree(mnt) == before

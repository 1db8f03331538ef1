"""`profile B1 B2 --write-thresholds` checks every bundle and certifies every one before it writes any manifest, and
holds each bundle's lock (the one `build` takes on its --out) while it reads, certifies and writes: a second writer
fails at once instead of the last one silently winning (issue 24, item 4). Torch-free: the committed fixture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekd.core.destination import DestinationLock

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def _edgekd(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def data(tmp_path) -> Path:
    """A class tree of the fixture's classes ("0".."9"), 16x16 gray PNGs."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / str(c) / f"{i}.png"), rng.integers(0, 256, (16, 16), dtype=np.uint8))
    return root


def _write_args(*bundles, data: Path, out: Path) -> list:
    return ["profile", *bundles, "--write-thresholds", "--fit", "point", "--target-drop", "5", "--data", data,
            "--out", out, "--iterations", "2", "--warmup", "0"]


def test_a_bundle_that_fails_leaves_every_manifest_as_it_was(tmp_path, data):
    b1, b2 = tmp_path / "b1", tmp_path / "b2"
    shutil.copytree(FIXTURE, b1)
    shutil.copytree(FIXTURE, b2)
    m2 = json.loads((b2 / "manifest.json").read_text())
    names = [chr(ord("a") + i) for i in range(10)]  # classes --data does not have: b2 fails after b1 is certified
    m2["class_names"] = m2["input_spec"]["class_names"] = names
    (b2 / "manifest.json").write_text(json.dumps(m2, indent=2))
    before = {b: (b / "manifest.json").read_bytes() for b in (b1, b2)}
    r = _edgekd(*_write_args(b1, b2, data=data, out=tmp_path / "report"), cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert {b: (b / "manifest.json").read_bytes() for b in (b1, b2)} == before
    r = _edgekd(*_write_args(b1, data=data, out=tmp_path / "report"), cwd=tmp_path)  # b1 alone: written
    assert r.returncode == 0 and (b1 / "manifest.json").read_bytes() != before[b1], r.stderr[-2000:]


def test_write_thresholds_into_a_bundle_another_edgekd_is_writing_fails_at_once(tmp_path, data):
    b = tmp_path / "b"
    shutil.copytree(FIXTURE, b)
    before = (b / "manifest.json").read_bytes()
    with DestinationLock(b):  # what a concurrent build --force or --write-thresholds of b holds
        r = _edgekd(*_write_args(b, data=data, out=tmp_path / "report"), cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "being written by another edgekd" in lines[0], r.stderr[-2000:]
    assert (b / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "data"]  # no report, no lock file left behind

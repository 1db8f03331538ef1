"""Training options that used to be accepted silently (issue 24, item 15): a teacher trained at one input size fed
images of another, and a run whose --out lies in the --data folder it reads (with --force it would replace it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _train(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", "train", *map(str, args)], cwd=str(cwd),
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _one_line(r: subprocess.CompletedProcess, needle: str) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-3000:])
    assert needle in lines[0], lines[0]
    return lines[0]


COMMON = ["--data", "digits", "--batch-size", "64", "--seed", "0", "--model", "resnet8", "--epochs", "1",
          "--no-export"]


def test_a_teacher_trained_at_another_input_size_is_refused(tmp_path):
    r = _train(*COMMON, "--image-size", "8", "--method", "ce", "--out", tmp_path / "teacher", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _train(*COMMON, "--image-size", "12", "--method", "tskd", "--teacher", tmp_path / "teacher" / "best.pt",
               "--out", tmp_path / "student", cwd=tmp_path)
    _one_line(r, "8x8")
    assert not (tmp_path / "student").exists()


@pytest.mark.parametrize("where", ["the data folder", "a folder inside it"])
def test_an_out_inside_the_data_folder_is_refused(tmp_path, where):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(data / c / f"{i}.png"), rng.integers(0, 256, (8, 8), dtype=np.uint8))
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    out = data if where == "the data folder" else data / "a" / "run"
    r = _train("--data", data, "--image-size", "8", "--epochs", "1", "--out", out, "--force", cwd=tmp_path)
    _one_line(r, "overlap")
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before

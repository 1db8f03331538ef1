"""Hostile files and settings a device command meets (issue 24): each is one line ``error: …`` naming what is
wrong, exit 2, before any work, and never a hang. Every case runs the real command in a child process (stderr as
a user sees it), with a timeout standing in for a hang. Torch-free: the bundle is the committed fixture."""

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

from edgekd.core.manifest import sha256_file
from tests.helpers import memory_available_now, write_npz_declaring

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


# -- item 11: npz archives that declare more memory than there is --------------------------------------------------
@pytest.fixture
def bomb(tmp_path) -> Path:
    """Images (N, 16, 16, 1) uint8 and labels declaring twice the memory available now: a zip bomb to a reader."""
    n = 2 * memory_available_now() // 256 + 1
    return write_npz_declaring(tmp_path / "bomb.npz", {"images": ((n, 16, 16, 1), "uint8"), "labels": ((n,), "int64")})


@pytest.mark.parametrize("command", ["profile --data", "build --calib-data"])
def test_an_npz_declaring_more_than_the_memory_available_is_one_line(tmp_path, bomb, command):
    args = {"profile --data": ["profile", FIXTURE, "--data", bomb, "--out", tmp_path / "report", "--iterations", "2",
                               "--warmup", "0"],
            "build --calib-data": ["build", FIXTURE, "--precision", "int8", "--calib-data", bomb,
                                   "--out", tmp_path / "built"]}[command]
    _one_line(_edgekd(*args, cwd=tmp_path), "bomb.npz", "memory available")
    assert not (tmp_path / "report").exists() and not (tmp_path / "built").exists()


def test_run_does_not_read_the_bundles_val_sample(tmp_path, frames, bomb):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURE, bundle)
    shutil.copy(bomb, bundle / "val_sample.npz")  # hash-valid: a damaged copy re-hashed
    data = json.loads((bundle / "manifest.json").read_text())
    data["files"]["val_sample"]["sha256"] = sha256_file(bundle / "val_sample.npz")
    (bundle / "manifest.json").write_text(json.dumps(data))
    r = _edgekd("run", bundle, "--source", frames, "--headless", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


# -- item 12: a FIFO named like an image ----------------------------------------------------------------------------
@pytest.fixture
def fifo_tree(tmp_path) -> Path:
    """A class tree of the fixture's classes with a FIFO named 0/fifo.png among real images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
        cv2.imwrite(str(root / str(c) / "a.png"), rng.integers(0, 256, (16, 16), dtype=np.uint8))
    os.mkfifo(root / "0" / "fifo.png")
    return root


@pytest.mark.parametrize("command", ["profile --data", "build --calib-data"])
def test_a_fifo_named_like_an_image_is_never_opened(tmp_path, fifo_tree, command):
    """np.fromfile blocked for ever opening the pipe; a FIFO is not a regular file and is not read."""
    args = {"profile --data": ["profile", FIXTURE, "--data", fifo_tree, "--out", tmp_path / "report",
                               "--iterations", "2", "--warmup", "0"],
            "build --calib-data": ["build", FIXTURE, "--precision", "int8", "--calib-data", fifo_tree,
                                   "--out", tmp_path / "built"]}[command]
    r = _edgekd(*args, cwd=tmp_path, timeout=120)
    if r.returncode == 2:  # refused in one line naming it, or skipped: never a hang
        _one_line(r, "fifo.png")
    else:
        assert r.returncode == 0, r.stderr[-2000:]


# -- item 10: more tracebacks where one line belongs -------------------------------------------------------------
def test_a_target_yaml_nested_20000_deep_is_one_line(tmp_path):
    target = tmp_path / "deep.yaml"
    target.write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    r = _edgekd("build", FIXTURE, "--target", target, "--out", tmp_path / "built", cwd=tmp_path)
    _one_line(r, "deep.yaml")


def test_a_huge_frame_size_is_one_line(tmp_path):
    r = _edgekd("profile", FIXTURE, "--frame-size", "100000x100000", "--out", tmp_path / "report", cwd=tmp_path)
    _one_line(r, "--frame-size")
    assert not (tmp_path / "report").exists()


def test_a_non_utf8_nvidia_smi_does_not_break_profile(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    smi = tools / "nvidia-smi"
    smi.write_bytes(b"#!/bin/sh\nprintf '\\377\\376 GPU \\300\\n'\n")
    smi.chmod(0o755)
    r = _edgekd("profile", FIXTURE, "--out", tmp_path / "report", "--iterations", "2", "--warmup", "0",
                cwd=tmp_path, env={"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0 and (tmp_path / "report" / "report.json").exists(), r.stderr[-2000:]


# -- item 15: silently accepted ------------------------------------------------------------------------------------
def test_an_explicit_cache_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    r = _edgekd("build", FIXTURE, "--precision", "int8", "--cache-dir", tmp_path / "cache", "--out",
                tmp_path / "built", cwd=tmp_path)
    _one_line(r, "--cache-dir")
    assert not (tmp_path / "built").exists()


def test_build_into_a_folder_inside_the_source_bundle_is_refused(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(FIXTURE, bundle)
    before = sorted(p.name for p in bundle.iterdir())
    r = _edgekd("build", bundle, "--precision", "fp32", "--out", bundle / "sub", cwd=tmp_path)
    _one_line(r, "inside")
    assert sorted(p.name for p in bundle.iterdir()) == before


def test_a_class_named_empty_is_refused(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(FIXTURE, bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    data["class_names"][3] = data["input_spec"]["class_names"][3] = ""
    (bundle / "manifest.json").write_text(json.dumps(data))
    r = _edgekd("run", bundle, "--source", FIXTURE / "val_sample.npz", "--headless", cwd=tmp_path)
    _one_line(r, "class names")

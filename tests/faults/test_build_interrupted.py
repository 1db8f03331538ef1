"""`edgekd build` and `edgekd profile --write-thresholds` on disk: --force replaces only a bundle edgekd wrote, never a
parent of the input, the working directory or a directory being written; SIGKILL at every durable step leaves the
old or the new bundle (a reader or the next run restores an interrupted swap), and the next run succeeds with
nothing left over; a full disk (ENOSPC) or a refused write (EACCES) at any write step is one line, exit 2, with the
old bundle whole and nothing left over.

Torch-free: the bundle is the committed fixture exported by an earlier edgekd (tests/fixtures/bundle-abf6d4b)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.core.atomic import FAULT_FAIL_AT, FAULT_KILL_AT, FAULT_LOG
from edgekd.core.destination import DestinationLock, restore_interrupted
from edgekd.core.manifest import load_manifest
from tests.helpers import fault_steps, write_steps

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def _edgekd(*args, cwd: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _one_line_error(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and text in r.stderr, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1, r.stderr


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """The fixture bundle and an fp32 build of it (copy them before changing them)."""
    root = tmp_path_factory.mktemp("made")
    src = root / "src"
    shutil.copytree(FIXTURE, src)
    r = _edgekd("build", src, "--precision", "fp32", "--out", root / "built", "--cache-dir", root / "cache", cwd=root)
    assert r.returncode == 0, r.stderr
    return {"src": src, "built": root / "built"}


# ------------------------------------------------------------------------------------------------- --force


def test_force_refuses_a_parent_of_the_input_and_keeps_everything(made, tmp_path):
    parent = tmp_path / "project"
    shutil.copytree(made["src"], parent / "src")
    (parent / "notes.txt").write_text("mine")
    before = _tree(parent)
    r = _edgekd("build", parent / "src", "--precision", "fp32", "--out", parent, "--force", cwd=tmp_path)
    _one_line_error(r, "holds the input")
    assert _tree(parent) == before and sorted(p.name for p in tmp_path.iterdir()) == ["project"]


@pytest.mark.parametrize("where", ["source", "elsewhere"])
def test_force_into_the_working_directory_is_a_clean_error(made, tmp_path, where):
    src = tmp_path / "src"
    shutil.copytree(made["src"], src)
    here = src if where == "source" else tmp_path / "work"
    here.mkdir(exist_ok=True)
    (here / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    r = _edgekd("build", src, "--precision", "fp32", "--out", ".", "--force", cwd=here)
    _one_line_error(r, "refusing to replace .")
    assert _tree(tmp_path) == before and not any(_hidden(d) for d in (tmp_path, here))


def test_force_refuses_a_directory_that_is_not_a_bundle(made, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_text("precious")
    r = _edgekd("build", made["src"], "--precision", "fp32", "--out", photos, "--force", cwd=tmp_path)
    _one_line_error(r, "not a bundle edgekd wrote")
    assert (photos / "holiday.jpg").read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == [
        "photos"]


def test_force_replaces_an_earlier_build(made, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(made["built"], out)
    (out / "old-marker.txt").write_text("old")
    r = _edgekd("build", made["src"], "--precision", "fp32", "--out", out, "--force", "--cache-dir",
                tmp_path / "cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (out / "old-marker.txt").exists() and load_manifest(out).precision == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_built_bundle_is_readable_by_others_under_umask_022(made, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "edgekd", "build", str(made["src"]), "--precision", "fp32", "--out",
                        str(out), "--cache-dir", str(tmp_path / "cache")], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, r.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in [out, *out.iterdir()]}
    assert modes == {name: (0o755 if name == "out" else 0o644) for name in modes}, modes


def test_a_build_into_an_out_another_edgekd_is_writing_fails_at_once(made, tmp_path):
    out = tmp_path / "out"
    with DestinationLock(out):
        r = _edgekd("build", made["src"], "--precision", "fp32", "--out", out, cwd=tmp_path)
    _one_line_error(r, "being written by another edgekd")
    assert not out.exists()


# ---------------------------------------------------------------------------------------- kill -9 at every step


def _count_steps(args: list, cwd: Path, log: Path) -> list:
    r = _edgekd(*args, cwd=cwd, env={FAULT_LOG: str(log)})
    assert r.returncode == 0, r.stderr
    return log.read_text().splitlines()


def _build_force(made: dict):
    """``build --force`` of the fixture over an earlier build (marked ``old-marker.txt``): (its arguments in a work
    folder, the preparation of that folder)."""

    def args(work: Path) -> list:
        return ["build", made["src"], "--precision", "fp32", "--out", work / "out", "--force", "--cache-dir",
                work / "cache"]

    def prepare(work: Path) -> None:
        shutil.copytree(made["built"], work / "out")
        (work / "out" / "old-marker.txt").write_text("old")

    return args, prepare


@pytest.mark.slow
def test_sigkill_at_every_step_of_build_force_keeps_a_whole_bundle(made, tmp_path):
    args, prepare = _build_force(made)
    (tmp_path / "count").mkdir()
    prepare(tmp_path / "count")
    steps = _count_steps(args(tmp_path / "count"), tmp_path / "count", tmp_path / "steps.log")
    assert sum(" rename " in s for s in steps) >= 3 and any(" unlock " in s for s in steps), steps
    for n in fault_steps(steps):
        work = tmp_path / f"kill{n}"
        work.mkdir()
        prepare(work)
        r = _edgekd(*args(work), cwd=work, env={FAULT_KILL_AT: str(n)})
        assert r.returncode == -signal.SIGKILL, (n, steps[n - 1], r.stderr)
        out = work / "out"
        if not out.exists():  # killed between the two renames: a reader (run, profile, build) restores it
            assert restore_interrupted(out), (n, steps[n - 1])
            assert (out / "old-marker.txt").exists(), (n, steps[n - 1])
        load_manifest(out)  # old or new, whole either way
        r = _edgekd(*args(work), cwd=work)
        assert r.returncode == 0, (n, steps[n - 1], r.stderr)
        assert not (out / "old-marker.txt").exists() and load_manifest(out).precision == "fp32"
        assert _hidden(work) == [] and _hidden(out) == [], (n, steps[n - 1])


@pytest.mark.slow
def test_sigkill_at_every_step_of_profile_write_thresholds_keeps_the_manifest_whole(made, tmp_path):
    def args(work: Path) -> list:
        return ["profile", work / "out", "--write-thresholds", "--fit", "point", "--target-drop", "5",
                "--iterations", "2", "--warmup", "0", "--out", work / "report"]

    old = load_manifest(made["built"]).thresholds
    (tmp_path / "count").mkdir()
    shutil.copytree(made["built"], tmp_path / "count" / "out")
    steps = _count_steps(args(tmp_path / "count"), tmp_path / "count", tmp_path / "steps.log")
    new = load_manifest(tmp_path / "count" / "out").thresholds
    assert new != old and any("manifest.json" in s for s in steps), (old, new, steps)
    for n in fault_steps(steps):
        work = tmp_path / f"kill{n}"
        work.mkdir()
        shutil.copytree(made["built"], work / "out")
        r = _edgekd(*args(work), cwd=work, env={FAULT_KILL_AT: str(n)})
        assert r.returncode == -signal.SIGKILL, (n, steps[n - 1], r.stderr)
        assert load_manifest(work / "out").thresholds in (old, new), (n, steps[n - 1])
        if (work / "report" / "report.json").exists():
            json.loads((work / "report" / "report.json").read_text())
        r = _edgekd(*args(work), cwd=work)
        assert r.returncode == 0, (n, steps[n - 1], r.stderr)
        assert load_manifest(work / "out").thresholds == new
        assert _hidden(work / "out") == [] and _hidden(work / "report") == [], (n, steps[n - 1])


@pytest.mark.slow
@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
def test_a_failed_write_at_every_step_of_build_force_is_one_line_and_keeps_the_old_bundle(made, tmp_path, code):
    args, prepare = _build_force(made)
    (tmp_path / "count").mkdir()
    prepare(tmp_path / "count")
    steps = _count_steps(args(tmp_path / "count"), tmp_path / "count", tmp_path / "steps.log")
    chosen = write_steps(steps)
    assert any(steps[n - 1].split(" ")[1] == "rename" for n in chosen), steps
    reason = os.strerror(getattr(__import__("errno"), code))
    for n in chosen:
        work = tmp_path / f"fail{n}"
        work.mkdir()
        prepare(work)
        before = _tree(work / "out")
        r = _edgekd(*args(work), cwd=work, env={FAULT_FAIL_AT: f"{n}:{code}"})
        _one_line_error(r, reason)
        assert _tree(work / "out") == before, (n, steps[n - 1])  # the old bundle, untouched
        assert _hidden(work) == [] and _hidden(work / "out") == [], (n, steps[n - 1], _hidden(work))
        r = _edgekd(*args(work), cwd=work)
        assert r.returncode == 0, (n, steps[n - 1], r.stderr)
        assert not (work / "out" / "old-marker.txt").exists() and load_manifest(work / "out").precision == "fp32"


@pytest.mark.slow
def test_a_full_disk_at_every_step_of_profile_write_thresholds_keeps_the_manifest(made, tmp_path):
    def args(work: Path) -> list:
        return ["profile", work / "out", "--write-thresholds", "--fit", "point", "--target-drop", "5",
                "--iterations", "2", "--warmup", "0", "--out", work / "report"]

    (tmp_path / "count").mkdir()
    shutil.copytree(made["built"], tmp_path / "count" / "out")
    steps = _count_steps(args(tmp_path / "count"), tmp_path / "count", tmp_path / "steps.log")
    new = load_manifest(tmp_path / "count" / "out").thresholds
    for n in write_steps(steps):
        work = tmp_path / f"fail{n}"
        work.mkdir()
        shutil.copytree(made["built"], work / "out")
        before = (work / "out" / "manifest.json").read_bytes()
        r = _edgekd(*args(work), cwd=work, env={FAULT_FAIL_AT: str(n)})
        _one_line_error(r, os.strerror(28))  # ENOSPC
        after = (work / "out" / "manifest.json").read_bytes()
        assert after == before or load_manifest(work / "out").thresholds == new, (n, steps[n - 1])
        assert _hidden(work / "out") == [] and _hidden(work) == [], (n, steps[n - 1])
        if (work / "report").exists():
            assert _hidden(work / "report") == [], (n, steps[n - 1])
        r = _edgekd(*args(work), cwd=work)
        assert r.returncode == 0 and load_manifest(work / "out").thresholds == new, (n, steps[n - 1], r.stderr)

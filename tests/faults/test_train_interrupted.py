"""Training runs that were interrupted, failed early or collide: --resume repairs best.pt, summary.json and the
bundle; a run that fails before its first epoch leaves no --out; --out is locked; a ``bundle`` folder that is not
edgekd's is refused before training. The slow tests kill ``edgekd train`` with SIGKILL at every durable step,
and fill its disk (ENOSPC) at every write step."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the torch wing's faults: skipped in the device-only venvs (make test)
from rich.console import Console

from edgekd.core.atomic import FAULT_FAIL_AT, FAULT_KILL_AT, FAULT_LOG
from edgekd.core.destination import DestinationLock
from edgekd.core.errors import ConfigError, DataError, DestinationError
from edgekd.core.manifest import load_manifest, sha256_file
from edgekd.training import export as ex
from edgekd.training.checkpoint import load_checkpoint
from edgekd.training.config import TrainConfig
from edgekd.training.loop import bundle_is_current, train
from tests.conftest import TINY
from tests.helpers import fault_steps, write_steps

ROOT = Path(__file__).resolve().parents[2]
COMMON = dict(model="resnet8", method="ce", **{**TINY, "image_size": 8})


@pytest.fixture
def torchscript_only(monkeypatch):
    """Export with the TorchScript exporter only (about 4x faster than dynamo; the bundle is the same contract)."""
    original = ex._run_exporter

    def run(exporter, *args):
        if exporter == "dynamo":
            raise RuntimeError("tests: torchscript only")
        return original(exporter, *args)

    monkeypatch.setattr(ex, "_run_exporter", run)


def _weights_equal(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _score(path: Path) -> float:
    return load_checkpoint(path)["metrics"]["val"]["vote"]["soft"]


def test_resume_repairs_a_best_pt_a_kill_left_behind_last_pt(tmp_path):
    out = tmp_path / "run"
    cfg = dict(out=str(out), epochs=2, **COMMON)
    train(TrainConfig(stop_after=1, **cfg))
    early = {name: (out / name).read_bytes() for name in ("best.pt", "summary.json")}
    train(TrainConfig(resume=True, stop_after=1, **cfg))
    last = load_checkpoint(out / "last.pt")
    assert last["train_state"]["epoch"] == 1 and _score(out / "best.pt") == last["train_state"]["best"]
    assert last["train_state"]["best"] > json.loads(early["summary.json"])["val"]["vote"]["soft"]  # epoch 2 is best
    for name, content in early.items():  # what a kill between last.pt and best.pt of epoch 2 leaves
        (out / name).write_bytes(content)
    buf = io.StringIO()
    train(TrainConfig(resume=True, **cfg), console=Console(file=buf, width=200))
    assert "repaired" in buf.getvalue() and "best.pt" in buf.getvalue()
    assert _weights_equal(out / "best.pt", out / "last.pt")
    assert _score(out / "best.pt") == last["train_state"]["best"]
    assert json.loads((out / "summary.json").read_text())["val"]["vote"]["soft"] == last["train_state"]["best"]


def test_resume_of_a_finished_run_exports_the_bundle_a_kill_lost(tmp_path, torchscript_only, monkeypatch):
    out = tmp_path / "run"
    cfg = dict(out=str(out), epochs=1, **{**COMMON, "export": True})
    with pytest.warns(UserWarning, match="torchscript"):
        train(TrainConfig(**cfg))
    assert bundle_is_current(out / "bundle", out / "best.pt")
    shutil.rmtree(out / "bundle")  # killed during the final export: no bundle, a temporary of a dead process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".bundle.edgekd-{dead.pid}-0123abcd.tmp").mkdir()
    with pytest.warns(UserWarning, match="torchscript"):
        train(TrainConfig(resume=True, **cfg))
    assert bundle_is_current(out / "bundle", out / "best.pt")
    assert load_manifest(out / "bundle").source["checkpoint_sha256"] == sha256_file(out / "best.pt")
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "bundle", "last.pt", "metrics.jsonl", "summary.json"]
    calls = []
    monkeypatch.setattr(ex, "export_bundle", lambda *a, **k: calls.append(a))
    train(TrainConfig(resume=True, **cfg))  # the bundle is current: not exported again
    assert calls == []


def test_a_run_that_fails_before_its_first_epoch_leaves_no_out(tmp_path):
    out = tmp_path / "runs" / "exp"
    with pytest.raises(DataError):
        train(TrainConfig(**{**COMMON, "data": str(tmp_path / "missing.npz")}, out=str(out), epochs=1))
    assert not out.exists()
    out.mkdir()  # an --out that existed before is never removed
    with pytest.raises(DataError):
        train(TrainConfig(**{**COMMON, "data": str(tmp_path / "missing.npz")}, out=str(out), epochs=1))
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_bundle_folder_that_is_not_edgekds_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    (out / "bundle").mkdir(parents=True)
    (out / "bundle" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an edgekd bundle"):
        train(TrainConfig(out=str(out), epochs=1, **{**COMMON, "export": True}))
    assert sorted(p.name for p in out.iterdir()) == ["bundle"]
    assert (out / "bundle" / "notes.txt").read_text() == "mine"


def test_a_second_run_into_the_same_out_fails_at_once(tmp_path):
    out = tmp_path / "run"
    with DestinationLock(out):  # a first run holds it
        with pytest.raises(DestinationError, match="being written by another edgekd"):
            train(TrainConfig(out=str(out), epochs=1, **COMMON))
    assert not out.exists()


# ------------------------------------------------------------------------------------- kill -9 at every step

CHILD = textwrap.dedent("""
    import sys
    import edgekd.training.export as ex
    original = ex._run_exporter
    def run(exporter, *args):
        if exporter == "dynamo":
            raise RuntimeError("tests: torchscript only")
        return original(exporter, *args)
    ex._run_exporter = run
    from edgekd.cli import main
    sys.argv = ["edgekd"] + sys.argv[1:]
    main()
""")


def _args(out: Path, *extra: str) -> list:
    return ["train", "--data", "digits", "--image-size", "8", "--batch-size", "64", "--lr", "0.05", "--seed", "0",
            "--model", "resnet8", "--method", "ce", "--epochs", "1", "--out", str(out), *extra]


def _train_cli(out: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    """``edgekd train`` in a child process (TorchScript export only, as :func:`torchscript_only`)."""
    return subprocess.run([sys.executable, "-c", CHILD, *_args(out, *extra)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _hidden(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


@pytest.mark.slow
def test_sigkill_at_every_step_of_train_then_resume_ends_as_an_uninterrupted_run(tmp_path, torchscript_only):
    from typer.testing import CliRunner

    from edgekd.cli import app

    reference, log = tmp_path / "reference" / "run", tmp_path / "steps.log"
    r = _train_cli(reference, env={FAULT_LOG: str(log)})
    assert r.returncode == 0, r.stderr[-3000:]
    steps = log.read_text().splitlines()
    assert len(steps) >= 12 and any("bundle" in s for s in steps), steps
    for n in fault_steps(steps):
        out = tmp_path / f"kill{n}" / "run"
        r = _train_cli(out, env={FAULT_KILL_AT: str(n)})
        assert r.returncode == -signal.SIGKILL, (n, steps[n - 1], r.stderr[-2000:])
        for name in ("last.pt", "best.pt"):  # whatever is there is whole
            if (out / name).exists():
                load_checkpoint(out / name)
        if (out / "bundle").exists():
            load_manifest(out / "bundle")
        again = CliRunner().invoke(app, _args(out, *(["--resume"] if (out / "last.pt").exists() else [])))
        assert again.exit_code == 0, (n, steps[n - 1], again.output[-3000:])
        assert _weights_equal(out / "best.pt", reference / "best.pt"), (n, steps[n - 1])
        summary = json.loads((out / "summary.json").read_text())
        assert summary["val"] == load_checkpoint(out / "best.pt")["metrics"]["val"], (n, steps[n - 1])
        assert bundle_is_current(out / "bundle", out / "best.pt"), (n, steps[n - 1])
        assert _hidden(out) == [] and _hidden(out / "bundle") == [] and _hidden(out.parent) == [], (n, steps[n - 1])


@pytest.mark.slow
def test_a_full_disk_at_every_write_step_of_train_is_one_line_and_the_next_run_ends_as_an_uninterrupted_one(
        tmp_path, torchscript_only):
    from typer.testing import CliRunner

    from edgekd.cli import app

    reference, log = tmp_path / "reference" / "run", tmp_path / "steps.log"
    r = _train_cli(reference, env={FAULT_LOG: str(log)})
    assert r.returncode == 0, r.stderr[-3000:]
    steps = log.read_text().splitlines()
    for n in write_steps(steps):
        out = tmp_path / f"fail{n}" / "run"
        r = _train_cli(out, env={FAULT_FAIL_AT: str(n)})
        assert r.returncode == 2 and "Traceback" not in r.stderr, (n, steps[n - 1], r.stderr[-2000:])
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and os.strerror(28) in errors[0], (n, steps[n - 1], r.stderr[-2000:])
        for name in ("last.pt", "best.pt"):  # whatever is there is whole
            if (out / name).exists():
                load_checkpoint(out / name)
        assert _hidden(out) == [] and _hidden(out / "bundle") == [] and _hidden(out.parent) == [], (n, steps[n - 1])
        again = CliRunner().invoke(app, _args(out, *(["--resume"] if (out / "last.pt").exists() else [])))
        assert again.exit_code == 0, (n, steps[n - 1], again.output[-3000:])
        assert _weights_equal(out / "best.pt", reference / "best.pt"), (n, steps[n - 1])
        assert bundle_is_current(out / "bundle", out / "best.pt"), (n, steps[n - 1])


# ------------------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """best.pt of a one-epoch run (copy the run before changing it)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(TrainConfig(out=str(out), epochs=1, **COMMON))
    return out / "best.pt"


def test_export_force_never_replaces_the_run_holding_the_checkpoint(checkpoint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(DestinationError, match="holds the input"):
        ex.export_bundle(run / "best.pt", run, force=True)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.slow
def test_sigkill_at_every_step_of_export_force_keeps_a_whole_bundle(checkpoint, tmp_path, torchscript_only):
    from typer.testing import CliRunner

    from edgekd.cli import app

    with pytest.warns(UserWarning, match="torchscript"):
        ex.export_bundle(checkpoint, tmp_path / "old", val_size=40, calib_size=16, name="old")

    def args(out: Path) -> list:
        return ["export", str(checkpoint), "--out", str(out), "--force", "--val-size", "40", "--calib-size", "16"]

    def child(out: Path, env: dict) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CHILD, *args(out)], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), **env})

    shutil.copytree(tmp_path / "old", tmp_path / "count" / "bundle")
    r = child(tmp_path / "count" / "bundle", {FAULT_LOG: str(tmp_path / "steps.log")})
    assert r.returncode == 0, r.stderr[-3000:]
    steps = (tmp_path / "steps.log").read_text().splitlines()
    assert sum(" rename " in s for s in steps) >= 3, steps
    for n in fault_steps(steps):
        out = tmp_path / f"kill{n}" / "bundle"
        shutil.copytree(tmp_path / "old", out)
        r = child(out, {FAULT_KILL_AT: str(n)})
        assert r.returncode == -signal.SIGKILL, (n, steps[n - 1], r.stderr[-2000:])
        name = load_manifest(out).name  # whole, old or new (a reader restores an interrupted swap)
        assert name in ("old", "bundle"), (n, steps[n - 1])
        again = CliRunner().invoke(app, args(out))
        assert again.exit_code == 0, (n, steps[n - 1], again.output[-3000:])
        assert load_manifest(out).name == "bundle"
        assert _hidden(out.parent) == [] and _hidden(out) == [], (n, steps[n - 1])

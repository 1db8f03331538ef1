"""Shared fixtures: one tiny teacher + TSKD student trained once per test session on digits (16x16).

``make test`` runs pytest in two worker processes (pytest-xdist, ``-n 2``): each worker gets one thread for torch
(``OMP_NUM_THREADS``) and for ONNX Runtime (``EDGEKD_THREADS``), so two workers fill two cores without the
oversubscription that makes spinning thread pools crawl, and the session fixtures are made once for all workers
(:func:`_once_per_session`). A plain ``pytest`` run keeps two threads.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("EDGEKD_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY = dict(data="digits", image_size=16, batch_size=64, lr=0.05, seed=0, export=False)


def _needs_training_wing() -> None:
    """Skip (not fail) where the training wing cannot run: the device-only venvs of `make test` (Python 3.8 for
    JetPack 5.1, 3.10 for JetPack 6) have no torch, so tests built on a freshly trained bundle skip there."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("needs the training wing (torch) to train and export the tiny bundle; this environment has "
                    "only the device dependencies")


def _once_per_session(tmp_path_factory, name: str, make: Callable[[Path], Dict[str, Any]]) -> Dict[str, Any]:
    """``make(root)``'s JSON record, made once per test session even when pytest-xdist splits the session over
    worker processes: the first worker makes it under a lock in the folder all workers share (the parent of each
    worker's base temp folder), the others wait for it and read the record."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        record = root / "record.json"
        if not record.exists():
            record.write_text(json.dumps(make(root)))
        return json.loads(record.read_text())


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory):
    """The per-user caches of what the tests run (``$EDGEKD_CACHE``: calibration ranges) go to one folder of the
    session, never the user's ``~/.cache/edgekd``; tests of the default itself set their own."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "user-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEKD_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """Train a resnet8 teacher (ce) and a resnet8 TSKD student; return their TrainResults (read-only)."""
    _needs_training_wing()
    from edgekd.training.config import TrainConfig
    from edgekd.training.loop import TrainResult, train

    def make(root: Path) -> Dict[str, Any]:
        teacher = train(TrainConfig(model="resnet8", method="ce", epochs=6, out=str(root / "teacher"), **TINY))
        student = train(TrainConfig(model="resnet8", method="tskd", teacher=str(teacher.best), epochs=8,
                                    out=str(root / "student"), **{**TINY, "val_fraction": 0.3}))
        return {k: json.loads(json.dumps(dataclasses.asdict(r), default=str)) for k, r in
                (("teacher", teacher), ("student", student))}

    record = _once_per_session(tmp_path_factory, "tiny_runs", make)
    paths = ("out", "best", "last")
    runs = {k: TrainResult(**{f: Path(v) if f in paths else v for f, v in record[k].items()}) for k in record}
    return {**runs, "root": runs["student"].out.parent}


@pytest.fixture(scope="session")
def tiny_bundle(tiny_runs, tmp_path_factory) -> Path:
    """The tiny student exported once per session (read-only: copy it before mutating)."""

    def make(root: Path) -> Dict[str, Any]:
        from edgekd.training.export import export_bundle

        export_bundle(tiny_runs["student"].best, root / "bundle", val_size=400, calib_size=128)
        return {"bundle": str(root / "bundle")}

    return Path(_once_per_session(tmp_path_factory, "tiny_bundle", make)["bundle"])

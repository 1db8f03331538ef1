"""Shared fixtures: one tiny teacher + TSKD student trained once per test session on digits (16x16)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """Train a resnet8 teacher (ce) and a resnet8 TSKD student; return their TrainResults."""
    _needs_training_wing()
    from edgekd.training.config import TrainConfig
    from edgekd.training.loop import train

    root: Path = tmp_path_factory.mktemp("tiny_runs")
    teacher = train(TrainConfig(model="resnet8", method="ce", epochs=6, out=str(root / "teacher"), **TINY))
    student = train(TrainConfig(model="resnet8", method="tskd", teacher=str(teacher.best), epochs=8,
                                out=str(root / "student"), **{**TINY, "val_fraction": 0.3}))
    return {"teacher": teacher, "student": student, "root": root}


@pytest.fixture(scope="session")
def tiny_bundle(tiny_runs) -> Path:
    """The tiny student exported once per session (read-only: copy it before mutating)."""
    from edgekd.training.export import export_bundle

    out = tiny_runs["root"] / "bundle"
    export_bundle(tiny_runs["student"].best, out, val_size=400, calib_size=128)
    return out

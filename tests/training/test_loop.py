"""Real short training runs on digits: accuracy, checkpoints, resume equivalence, torchrun DDP on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgekd.core.errors import ConfigError
from edgekd.training.checkpoint import load_checkpoint, model_from_checkpoint
from edgekd.training.config import TrainConfig
from edgekd.training.loop import train
from tests.conftest import TINY


def test_tskd_student_beats_chance_at_every_exit(tiny_runs):
    student = tiny_runs["student"]
    assert len(student.val["exits"]) == 3  # resnet8: 3 stages, an exit after each
    assert min(student.val["exits"]) > 60.0  # chance is 10%
    assert student.val["vote"]["soft"] >= 90.0
    assert student.test is not None and student.test["vote"]["soft"] >= 90.0
    assert set(student.val["vote"]) == {"soft", "hard", "weighted"}


def test_checkpoint_is_self_describing_and_loads_weights_only(tiny_runs):
    ckpt = load_checkpoint(tiny_runs["student"].best)
    assert ckpt["method"]["name"] == "tskd" and ckpt["method"]["hparams"]["temperature"] == 4.0
    assert ckpt["input_spec"]["height"] == 16 and ckpt["input_spec"]["channels"] == 1
    assert ckpt["class_names"] == [str(i) for i in range(10)]
    assert len(ckpt["exit_info"]) == 3 and ckpt["exit_info"][-1]["macs"] > ckpt["exit_info"][0]["macs"]
    assert ckpt["split"]["seed"] == 0 and len(ckpt["split"]["val_indices"]) > 0
    assert {"torch", "edgekd"} <= set(ckpt["versions"])
    assert "test" in ckpt["metrics"] and "train_state" not in ckpt
    # the saved weights reproduce the recorded validation metrics
    from edgekd.training.data import load_data
    from edgekd.training.evaluate import exit_metrics, predict_probs

    data = load_data("digits", image_size=16, seed=0, val_fraction=0.3)
    np.testing.assert_array_equal(np.asarray(ckpt["split"]["val_indices"]), data.split.val_indices)
    probs, labels = predict_probs(model_from_checkpoint(ckpt), data.val)
    again = exit_metrics(probs, labels, weights=np.asarray(ckpt["metrics"]["val"]["vote_weights"]))
    assert again["exits"] == pytest.approx(ckpt["metrics"]["val"]["exits"])


def test_metrics_jsonl_has_every_term_per_epoch(tiny_runs):
    lines = (tiny_runs["student"].out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8
    rec = json.loads(lines[-1])
    for key in ("ce/exit0", "kd/exit2", "sd/exit0", "hint/exit1", "loss", "lr", "images_per_s"):
        assert key in rec, key
    assert len(rec["val"]["exits"]) == 3 and rec["epoch"] == 7


def _state(path):
    return load_checkpoint(path)["state_dict"]


def test_resume_matches_uninterrupted_run(tmp_path):
    common = dict(model="resnet8", method="byot", epochs=3, **TINY)
    train(TrainConfig(out=str(tmp_path / "full"), **common))
    train(TrainConfig(out=str(tmp_path / "split"), stop_after=1, **common))
    assert load_checkpoint(tmp_path / "split" / "last.pt")["train_state"]["epoch"] == 0
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(TrainConfig(out=str(tmp_path / "split"), **common))
    train(TrainConfig(out=str(tmp_path / "split"), resume=True, **common))
    full, split = _state(tmp_path / "full" / "last.pt"), _state(tmp_path / "split" / "last.pt")
    assert full.keys() == split.keys()
    for k in full:
        torch.testing.assert_close(full[k], split[k], rtol=1e-5, atol=1e-6, msg=k)
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 3


def test_tskd_without_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="teacher"):
        train(TrainConfig(model="resnet8", method="tskd", epochs=1, out=str(tmp_path / "x"), **TINY))


def test_torchrun_two_processes_on_gloo_hold_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "edgekd",
           "train", "--data", "digits", "--image-size", "16", "--model", "resnet8", "--method", "byot",
           "--epochs", "2", "--batch-size", "64", "--no-export", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert summary["val"]["vote"]["soft"] > 50.0

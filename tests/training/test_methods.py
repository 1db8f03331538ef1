"""Every method trains every exit a model has, in real short runs; the frozen teacher's fast path computes what the
teacher computes."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from edgekd.core.errors import ConfigError
from edgekd.training.checkpoint import load_checkpoint
from edgekd.training.config import TrainConfig
from edgekd.training.evaluate import exit_logits
from edgekd.training.loop import train
from edgekd.training.models import create_model, inference_teacher
from tests.conftest import TINY


def _head_weights(state: dict, exit_index: int) -> dict[str, torch.Tensor]:
    prefix = f"heads.{exit_index}."
    return {k: v for k, v in state.items() if k.startswith(prefix) and v.dtype.is_floating_point}


@pytest.mark.parametrize("method", ["ce", "kd"])
def test_ce_and_kd_train_every_exit_they_are_given(method, tiny_runs, tmp_path):
    """Multi-exit CE (SDN) and multi-exit KD: with --exits 0,1,2 the shallow exits learn too (they stayed at chance,
    their heads at their initial weights, when these methods trained only the deepest exit)."""
    teacher = str(tiny_runs["teacher"].best) if method == "kd" else None
    cfg = TrainConfig(model="resnet8", method=method, exits=[0, 1, 2], teacher=teacher, epochs=3,
                      compile_teacher=method == "kd", out=str(tmp_path / method), **TINY)  # the loop's compile path
    torch.manual_seed(cfg.seed)  # build_student's seed: the same initial weights
    init = create_model("resnet8", num_classes=10, in_chans=1, input_size=(16, 16), exits=[0, 1, 2]).state_dict()
    result = train(cfg)

    assert len(result.val["exits"]) == 3
    assert min(result.val["exits"]) > 25.0, result.val["exits"]  # chance is 10%
    record = json.loads((result.out / "metrics.jsonl").read_text().splitlines()[-1])
    for i in range(3):
        assert record[f"ce/exit{i}"] > 0, f"exit {i} has no CE term"
        if method == "kd":
            assert f"kd/exit{i}" in record
    assert not any(k.startswith(("sd/", "hint/")) for k in record)  # no self-distillation in these ablations
    trained = load_checkpoint(result.last)["state_dict"]
    moved = [k for k, v in _head_weights(init, 0).items() if not torch.equal(v, trained[k])]
    assert moved, "the shallowest exit's head kept its initial weights"


@pytest.mark.parametrize("method", ["ce", "kd"])
def test_single_exit_ce_and_kd_are_the_default_exits(method):
    from edgekd.training.loop import default_exits

    assert default_exits(TrainConfig(method=method)) == []  # a plain model: only the last stage's exit
    assert default_exits(TrainConfig(method=method, exits=[0, 2])) == [0, 2]
    assert default_exits(TrainConfig(method="byot")) is None  # an exit after every stage


def test_self_distillation_on_one_exit_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="byot self-distils .* needs at least 2 exits; this model has 1"):
        train(TrainConfig(model="resnet8", method="byot", exits=[], epochs=1, out=str(tmp_path / "x"), **TINY))
    assert not (tmp_path / "x" / "last.pt").exists()


def test_self_distillation_on_one_exit_is_a_one_line_cli_error(tmp_path):
    from typer.testing import CliRunner

    from edgekd.cli import app

    res = CliRunner().invoke(app, ["train", "--data", "digits", "--image-size", "16", "--model", "resnet8",
                                   "--method", "tskd", "--exits", "2", "--teacher", "unused.pt",
                                   "--out", str(tmp_path / "o"), "--no-export"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "needs at least 2 exits" in lines[0] and "--method kd" in lines[0], res.output


def _randomised_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters, so eval-mode BatchNorm really matters to the logits."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("compile_it", [False, True])
def test_inference_teacher_computes_the_teachers_logits(compile_it):
    """The fast teacher (frozen, channels-last, optionally torch.compile'd) gives the logits the teacher gives in eval
    mode, so the student learns the same thing."""
    if compile_it and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "g++")):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler (the teacher then runs eagerly, with a warning)")
    torch.manual_seed(0)
    teacher = _randomised_bn(create_model("resnet8", num_classes=10, in_chans=3, input_size=(16, 16)))
    x = torch.randn(6, 3, 16, 16)  # (B, C, H, W)
    teacher.eval()
    with torch.no_grad():
        expected = teacher(x).logits[-1]  # (B, K)
    teacher.train()  # inference_teacher must put it in eval mode itself
    fast = inference_teacher(teacher, compile=compile_it)
    with torch.inference_mode():
        got = exit_logits(fast(x.contiguous(memory_format=torch.channels_last)))[-1]  # (B, K)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training
    assert not any(m.training for m in fast.modules())
    if compile_it:
        assert fast.failure is None  # it really ran compiled (a C++ compiler is present where the tests run)

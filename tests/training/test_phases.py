"""Exits that cost the deepest exit nothing (issue 20): the head gradient scale γ (``--head-grad``), per-exit loss
weights (``--exit-weights``), the two-phase schedule (``--phases backbone-first``, ``--init``) and resume across
phases. Each test checks a property that holds exactly, whatever the tiny training run happens to learn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgekd.core.errors import ConfigError
from edgekd.training.checkpoint import load_checkpoint, model_from_checkpoint
from edgekd.training.config import SDN_START_WEIGHT, TrainConfig, exit_weights, phase_plan
from edgekd.training.distill import build_objective
from edgekd.training.loop import train
from edgekd.training.models import create_model
from tests.conftest import TINY

SMALL = dict(model="resnet8", **{**TINY, "image_size": 8})


def _net(exits=None, seed=0):
    torch.manual_seed(seed)
    return create_model("resnet8", num_classes=10, in_chans=1, input_size=(16, 16), exits=exits)


def _backbone_grads(net) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in net.segments.named_parameters()}


def _grads_after(net, gamma: float, keep=lambda name: True) -> dict[str, torch.Tensor]:
    """Backbone gradients of the TSKD objective's terms selected by ``keep`` at head gradient scale ``gamma``."""
    torch.manual_seed(1)
    x, y, t = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,)), torch.randn(8, 10)  # (B, C, H, W), (B,), (B, K)
    net.train()
    net.head_grad = gamma
    net.zero_grad(set_to_none=True)
    out = net(x)
    terms = build_objective("tskd")(out.logits, out.features, y, t)
    sum(v for k, v in terms.items() if keep(k)).backward()
    return _backbone_grads(net)


def test_head_grad_zero_leaves_the_backbone_exactly_the_deepest_exits_gradients():
    net = _net()
    deepest = f"exit{net.num_exits - 1}"
    alone = _grads_after(net, 0.0, keep=lambda name: name.endswith(deepest))
    detached = _grads_after(net, 0.0)
    joint = _grads_after(net, 1.0)
    assert all(torch.equal(alone[k], detached[k]) for k in alone)
    # the shallow heads do reach the backbone at γ = 1, so the equality above is not vacuous
    assert any(not torch.equal(alone[k], joint[k]) for k in alone)


def test_head_grad_scales_what_shallow_heads_send_into_the_backbone_linearly():
    net = _net()
    g0, g1, g_half = _grads_after(net, 0.0), _grads_after(net, 1.0), _grads_after(net, 0.3)
    for k in g0:
        torch.testing.assert_close(g_half[k] - g0[k], 0.3 * (g1[k] - g0[k]), rtol=1e-4, atol=1e-6)


def test_head_grad_changes_nothing_forward_and_nothing_in_eval_mode():
    net = _net()
    x = torch.randn(4, 1, 16, 16)
    net.eval()
    ref = net(x).logits
    net.head_grad = 0.3
    assert all(torch.equal(a, b) for a, b in zip(ref, net(x).logits))


def test_exit_weights_scale_every_term_of_an_exit_and_zero_drops_it():
    net = _net()
    torch.manual_seed(0)
    x, y, t = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,)), torch.randn(4, 10)
    out = net(x)
    obj = build_objective("tskd")
    plain = obj(out.logits, out.features, y, t)
    weighted = obj(out.logits, out.features, y, t, [0.0, 0.5, 1.0])
    assert not any(name.endswith("exit0") for name in weighted)
    for name, value in weighted.items():
        w = 0.5 if name.endswith("exit1") else 1.0
        torch.testing.assert_close(value, w * plain[name])
    with pytest.raises(ValueError):
        obj(out.logits, out.features, y, t, [1.0, 1.0])


def test_named_exit_weight_ramps():
    macs = [10, 30, 40]
    assert exit_weights(None, macs, 0.3) == [1.0, 1.0, 1.0]
    assert exit_weights("linear", macs, 0.0) == [0.25, 0.75, 1.0]
    assert exit_weights("sdn", macs, 0.0) == [SDN_START_WEIGHT, SDN_START_WEIGHT, 1.0]
    assert exit_weights("sdn", macs, 1.0) == pytest.approx([0.25, 0.75, 1.0])
    assert exit_weights("0.2,0.4,1", macs, 0.5) == [0.2, 0.4, 1.0]
    with pytest.raises(ConfigError, match="3 exits"):
        exit_weights("0.5,1", macs, 0.0)


@pytest.mark.parametrize("bad", [{"head_grad": 1.5}, {"head_grad": -0.1}, {"exit_weights": "steep"},
                                 {"exit_weights": "0.5,0.5"}, {"exit_weights": "-1,1"}, {"phases": "heads"},
                                 {"head_epochs": 3}, {"joint_epochs": 2}, {"phases": "backbone-first",
                                                                          "joint_lr": 0.0}])
def test_bad_phase_options_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad).validate()


def test_phase_plans():
    assert [p.trains for p in phase_plan(TrainConfig(epochs=4))] == ["all"]
    plan = phase_plan(TrainConfig(phases="backbone-first", epochs=4, head_epochs=2, joint_epochs=1, lr=0.1))
    assert [(p.name, p.epochs, p.trains) for p in plan] == [("backbone", 4, "deepest"), ("heads", 2, "heads"),
                                                            ("joint", 1, "all")]
    assert plan[2].lr == pytest.approx(0.01)
    started = phase_plan(TrainConfig(phases="backbone-first", init="x.pt", freeze_backbone=False, head_grad=0.2))
    assert [(p.name, p.trains, p.head_grad) for p in started] == [("heads", "all", 0.2)]


def test_portable_weights_move_between_a_single_and_a_multi_exit_model():
    single, multi = _net(exits=[], seed=1), _net(seed=2)
    kept = multi.load_portable_state_dict(single.portable_state_dict())
    assert kept == [0, 1]  # the single-exit model has no shallow heads to give
    ms, ss = multi.portable_state_dict(), single.portable_state_dict()
    assert all(torch.equal(ms[k], v) for k, v in ss.items())
    other = create_model("resnet14", num_classes=10, in_chans=1, input_size=(16, 16))
    with pytest.raises(ValueError):
        multi.load_portable_state_dict(other.portable_state_dict())


def _portable(path: Path) -> dict[str, torch.Tensor]:
    return model_from_checkpoint(load_checkpoint(path)).portable_state_dict()


def test_the_heads_phase_leaves_the_backbone_and_deepest_exit_bit_identical(tiny_runs, tmp_path):
    teacher = tiny_runs["teacher"].best  # a single-exit resnet8 (ce)
    run = train(TrainConfig(**{**TINY, "model": "resnet8"}, method="tskd", teacher=str(teacher),
                            phases="backbone-first", init=str(teacher), head_epochs=2, out=str(tmp_path / "s")))
    before, after = _portable(teacher), _portable(run.best)
    assert all(torch.equal(after[k], v) for k, v in before.items())  # every stage and the deepest head
    heads = [k for k in after if k not in before]
    start = _net(exits=None, seed=0).portable_state_dict()  # where the shallow heads started (the student's seed)
    assert heads and any(not torch.equal(after[k], start[k]) for k in heads)  # and they did learn


def test_resume_across_and_within_phases_ends_as_an_uninterrupted_run(tmp_path):
    cfg = dict(SMALL, method="byot", phases="backbone-first", epochs=1, head_epochs=2, joint_epochs=1,
               freeze_backbone=False, head_grad=0.5, exit_weights="sdn")
    whole = train(TrainConfig(**cfg, out=str(tmp_path / "whole")))
    out = str(tmp_path / "parts")
    train(TrainConfig(**cfg, out=out, stop_after=1))  # ends at the phase boundary
    train(TrainConfig(**cfg, out=out, resume=True, stop_after=1))  # ends mid-phase
    parts = train(TrainConfig(**cfg, out=out, resume=True))
    a, b = load_checkpoint(whole.last), load_checkpoint(parts.last)
    assert a["train_state"]["epoch"] == b["train_state"]["epoch"] == 3
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    phases = [json.loads(line)["phase"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["backbone", "heads", "heads", "joint"]


def test_backbone_first_needs_a_shallow_exit_and_init_the_same_backbone(tiny_runs, tmp_path):
    with pytest.raises(ConfigError, match="only the deepest exit"):
        train(TrainConfig(**SMALL, method="ce", phases="backbone-first", out=str(tmp_path / "a")))
    with pytest.raises(ConfigError, match="--init"):
        train(TrainConfig(**{**SMALL, "model": "resnet14"}, method="byot", phases="backbone-first",
                          init=str(tiny_runs["teacher"].best), out=str(tmp_path / "b")))

"""Every registered model: stage chaining, declared structure vs reality, options, gradients and rebuilding."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgekd.core.errors import ConfigError
from edgekd.training.models import ExitInfo, MultiExitNet, create_model, list_models

# Independent knowledge of each backbone's number of stages.
EXPECTED_STAGES = {
    "resnet8": 3, "resnet14": 3, "resnet20": 3, "resnet32": 3, "resnet56": 3,
    "cifar_resnet18": 4, "cifar_resnet34": 4, "tv_resnet18": 4, "tv_mobilenet_v3_small": 4,
}


def _chain(model: MultiExitNet, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run forward_segment 0..n-1; return (feature maps, logits)."""
    feats, logits = [], []
    for i in range(model.num_exits):
        x, out = model.forward_segment(i, x)
        feats.append(x)
        logits.append(out)
    return feats, logits


def _independent_macs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Count MACs with this test's own hooks: conv = out elems * cin/groups * k*k, linear = in*out per sample."""
    count = []

    def on_conv(m, inp, out):
        count.append(out.shape[1] * out.shape[2] * out.shape[3] * m.weight.shape[1] * m.weight.shape[2]
                     * m.weight.shape[3])

    def on_linear(m, inp, out):
        count.append(m.weight.numel())

    hooks = [m.register_forward_hook(on_conv) for m in module.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(on_linear) for m in module.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        out = module(x)
    for h in hooks:
        h.remove()
    return out, sum(count)


def test_registered_names_are_known():
    assert set(EXPECTED_STAGES) <= set(list_models())


def test_chained_stages_equal_forward(eval_model, images):
    with torch.no_grad():
        out = eval_model(images)
        _, chained = _chain(eval_model, images)
    assert len(out.logits) == len(chained) == eval_model.num_exits
    for a, b in zip(out.logits, chained):
        assert torch.allclose(a, b)


def test_stage_modules_and_full_stage_match_forward(eval_model, images):
    with torch.no_grad():
        out = eval_model(images)
        x = images
        for i in range(eval_model.num_exits):
            feat, hint, logits = eval_model.forward_segment_full(i, x)
            feat2, logits2 = eval_model.segment(i)(x)
            assert torch.equal(feat, feat2) and torch.equal(logits, logits2)
            assert torch.allclose(hint, out.features[i]) and torch.allclose(logits, out.logits[i])
            x = feat


def test_exit_info_matches_feature_maps(eval_model, images):
    with torch.no_grad():
        feats, logits = _chain(eval_model, images)
    h_in, w_in = eval_model.input_size
    assert len(eval_model.exit_info) == len(feats)
    for i, (info, feat) in enumerate(zip(eval_model.exit_info, feats)):
        _, c, h, w = feat.shape
        assert info.index == i
        assert info.feat_shape == (c, h, w)
        assert info.channels == c
        assert h_in % h == 0 and info.reduction == h_in // h == w_in // w
        assert logits[i].shape == (2, eval_model.num_classes)
    reductions = [e.reduction for e in eval_model.exit_info]
    assert reductions == sorted(reductions) and reductions[-1] > reductions[0]


def test_macs_match_independent_count(eval_model):
    x = torch.zeros(1, eval_model.in_chans, *eval_model.input_size)
    backbone = 0
    for info, segment, head in zip(eval_model.exit_info, eval_model.segments, eval_model.heads):
        x, seg_macs = _independent_macs(segment, x)
        _, head_macs = _independent_macs(head, x)
        backbone += seg_macs
        assert seg_macs > 0 and head_macs > 0
        assert info.head_macs == head_macs
        assert info.macs == backbone + head_macs
    macs = [e.macs for e in eval_model.exit_info]
    assert all(a < b for a, b in zip(macs, macs[1:]))


def test_heads_cost_less_than_the_backbone_after_them(eval_model):
    infos = eval_model.exit_info
    total_backbone = infos[-1].macs - infos[-1].head_macs
    for info in infos[:-1]:
        rest = total_backbone - (info.macs - info.head_macs)
        assert info.head_macs < rest / 2


def test_default_exits_follow_every_stage(eval_model, model_name):
    n = EXPECTED_STAGES[model_name]
    assert eval_model.num_exits == n
    assert [e.stage for e in eval_model.exit_info] == list(range(n))


def test_exits_option_adds_last_stage(build, model_name):
    n = EXPECTED_STAGES[model_name]
    model = build(model_name, exits=[1])
    assert [e.stage for e in model.exit_info] == [1, n - 1]
    assert model.num_exits == 2
    full = build(model_name)
    assert model.exit_info[0].feat_shape == full.exit_info[1].feat_shape
    assert model.exit_info[-1].macs == full.exit_info[-1].macs  # same backbone and final head


@pytest.mark.parametrize("exits", [[-1], [99], [0, 0], [1.5], "1"])
def test_bad_exits_raise_config_error(build, model_name, exits):
    with pytest.raises(ConfigError) as info:
        build(model_name, exits=exits)
    assert "\n" not in str(info.value)


def test_grayscale_input(build, model_name):
    model = build(model_name, in_chans=1).eval()
    h, w = model.input_size
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    assert model.in_chans == 1
    assert [tuple(t.shape) for t in out.logits] == [(2, model.num_classes)] * model.num_exits


def test_every_head_parameter_gets_gradient(build, model_name):
    model = build(model_name).train()
    x = torch.randn(2, 3, *model.input_size)
    out = model(x)
    weights = [torch.randn_like(t) for t in out.logits]
    sum((w * t).sum() for w, t in zip(weights, out.logits)).backward()
    for i, head in enumerate(model.heads):
        for name, p in head.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"head {i} {name} got no gradient"
    first = next(model.segments[0].parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_hint_features_share_one_dimension(eval_model, images):
    with torch.no_grad():
        out = eval_model(images)
    dims = {tuple(f.shape) for f in out.features}
    assert dims == {(2, eval_model.feature_dim)}
    assert len(out.features) == eval_model.num_exits


def test_rebuild_from_build_args(eval_model, images, model_name):
    args = json.loads(json.dumps(eval_model.build_args))
    assert args["name"] == model_name
    rebuilt = create_model(args["name"], **args["kwargs"])
    rebuilt.load_state_dict(eval_model.state_dict(), strict=True)
    rebuilt.eval()
    assert rebuilt.exit_info == eval_model.exit_info
    with torch.no_grad():
        for a, b in zip(rebuilt(images).logits, eval_model(images).logits):
            assert torch.allclose(a, b)


def test_exit_info_round_trips_through_json(eval_model):
    for info in eval_model.exit_info:
        d = json.loads(json.dumps(info.to_json()))
        assert isinstance(d["feat_shape"], list)
        assert ExitInfo.from_json(d, info.index) == info

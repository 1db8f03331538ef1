"""Registry, option validation, analytic MACs and teachers."""

from __future__ import annotations

import json

import pytest
import torch

from edgekd.core.errors import ConfigError
from edgekd.training.models import build_teacher, create_model, freeze, list_models, register_model, registry
from edgekd.training.models.teacher import TorchvisionTeacher

REQUIRED = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet56", "cifar_resnet18", "cifar_resnet34",
            "tv_resnet18", "tv_mobilenet_v3_small"]


def test_required_models_registered():
    assert set(REQUIRED) <= set(list_models())
    assert list_models() == sorted(list_models())


def test_unknown_name_lists_available():
    with pytest.raises(ConfigError) as info:
        create_model("resnet9000", num_classes=10)
    msg = str(info.value)
    assert "resnet9000" in msg and "resnet8" in msg and "tv_resnet18" in msg and "\n" not in msg


@pytest.mark.parametrize("kwargs", [
    {"num_classes": 0}, {"num_classes": 10, "in_chans": 0}, {"num_classes": 10, "input_size": (16,)},
    {"num_classes": 10, "input_size": (16, -1)}, {"num_classes": 10, "head_width": 0},
    {"num_classes": 10, "depth": 3}, {},
])
def test_bad_options_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        create_model("resnet8", **kwargs)


def test_resnet8_macs_analytic():
    k, h = 5, 16
    model = create_model("resnet8", num_classes=k, input_size=(h, h))
    stem = h * h * 16 * 3 * 9
    stage0 = 2 * h * h * 16 * 16 * 9
    s1 = (h // 2) ** 2
    stage1 = s1 * 32 * 16 * 9 + s1 * 32 * 32 * 9 + s1 * 32 * 16
    s2 = (h // 4) ** 2
    stage2 = s2 * 64 * 32 * 9 + s2 * 64 * 64 * 9 + s2 * 64 * 32
    assert model.exit_info[-1].head_macs == 64 * k
    assert model.exit_info[-1].macs == stem + stage0 + stage1 + stage2 + 64 * k
    # exit 0 head: 1x1 16->16 at 16x16, two 3x3 stride-2 16->16 (8x8, 4x4), 1x1 16->64 at 4x4, Linear 64->k
    head0 = h * h * 16 * 16 + 64 * 16 * 16 * 9 + 16 * 16 * 16 * 9 + 16 * 64 * 16 + 64 * k
    assert model.exit_info[0].head_macs == head0
    assert model.exit_info[0].macs == stem + stage0 + head0


def test_build_args_are_json_safe_and_complete():
    model = create_model("resnet8", num_classes=4, input_size=[20, 24], exits=[0])
    args = json.loads(json.dumps(model.build_args))
    assert args == {"name": "resnet8", "kwargs": {"num_classes": 4, "in_chans": 3, "input_size": [20, 24],
                                                    "exits": [0, 2]}}
    assert model.input_size == (20, 24)


def test_register_model_adds_a_name(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("tiny_test_net")
    def tiny(*, num_classes, in_chans=3, input_size=(32, 32), exits=None, head_width=None):
        return registry._REGISTRY["resnet8"](num_classes=num_classes, in_chans=in_chans, input_size=input_size,
                                             exits=exits, head_width=head_width)

    assert "tiny_test_net" in list_models()
    model = create_model("tiny_test_net", num_classes=3, input_size=(16, 16))
    assert model.build_args["name"] == "tiny_test_net" and model.num_exits == 3
    with pytest.raises(ValueError):
        register_model("tiny_test_net")(tiny)


def test_torchvision_teacher_grayscale():
    torch.manual_seed(0)
    model = create_model("torchvision:resnet18", num_classes=6, in_chans=1, input_size=(64, 64)).eval()
    assert isinstance(model, TorchvisionTeacher) and model.num_exits == 1
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert len(out.logits) == 1 and out.logits[-1].shape == (2, 6)
    args = json.loads(json.dumps(model.build_args))
    rebuilt = create_model(args["name"], **args["kwargs"])
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_torchvision_teacher_bad_options():
    with pytest.raises(ConfigError):
        create_model("torchvision:no_such_net", num_classes=3)
    with pytest.raises(ConfigError):
        create_model("torchvision:resnet18", num_classes=3, exits=[0])


def test_build_teacher_freezes_registered_model():
    teacher = build_teacher("resnet8", num_classes=3, in_chans=3, input_size=(16, 16))
    assert not teacher.training and all(not m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())


def test_build_teacher_loads_plain_state_dict(tmp_path):
    torch.manual_seed(0)
    source = create_model("torchvision:resnet18", num_classes=3, input_size=(64, 64)).eval()
    path = tmp_path / "teacher.pt"
    torch.save(source.net.state_dict(), path)  # a bare torchvision state_dict
    teacher = build_teacher("torchvision:resnet18", num_classes=3, in_chans=3, input_size=(64, 64), weights=path)
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(teacher(x).logits[-1], source(x).logits[-1])


def test_build_teacher_bad_weights_name_the_file(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ConfigError, match="missing.pt"):
        build_teacher("resnet8", num_classes=3, in_chans=3, input_size=(16, 16), weights=missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="garbage.pt"):
        build_teacher("resnet8", num_classes=3, in_chans=3, input_size=(16, 16), weights=garbage)
    wrong = tmp_path / "wrong.pt"
    torch.save(create_model("resnet14", num_classes=3).state_dict(), wrong)
    with pytest.raises(ConfigError, match="wrong.pt"):
        build_teacher("resnet8", num_classes=3, in_chans=3, input_size=(16, 16), weights=wrong)


def test_freeze_returns_the_model():
    model = create_model("resnet8", num_classes=3, input_size=(16, 16)).train()
    assert freeze(model) is model
    assert not model.training and not any(p.requires_grad for p in model.parameters())

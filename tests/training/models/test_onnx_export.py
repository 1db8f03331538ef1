"""Multi-exit models export to ONNX per stage and whole, and ONNX Runtime reproduces torch's outputs."""

from __future__ import annotations

import warnings

import pytest
import torch

from edgekd.device.runners.onnxruntime import create_session
from edgekd.training.models import create_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _export(module: torch.nn.Module, x: torch.Tensor, path, outputs: list[str]) -> list:
    """Export with torch.onnx.export and run the file in ONNX Runtime on ``x``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=outputs, verbose=False)
    session = create_session(path)
    return session.run(None, {"x": x.numpy()})


@pytest.mark.parametrize("name,size", [("resnet8", (16, 16)), ("tv_mobilenet_v3_small", (64, 64))])
def test_per_stage_export_matches_torch(tmp_path, name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, input_size=size).eval()
    x = torch.randn(2, 3, *size)  # (B, C, H, W)
    stages = range(model.num_exits) if name == "resnet8" else [0]  # one stage of the bigger net keeps it fast
    for i in stages:
        with torch.no_grad():
            feat, logits = model.forward_segment(i, x)
        got = _export(model.segment(i), x, tmp_path / f"{name}_{i}.onnx", [f"feat{i}", f"logits{i}"])
        assert not model.training
        assert got[0].shape == tuple(feat.shape) and got[1].shape == tuple(logits.shape)
        assert torch.allclose(torch.from_numpy(got[0]), feat, atol=1e-4)
        assert torch.allclose(torch.from_numpy(got[1]), logits, atol=1e-4)
        x = feat


def test_full_export_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=5, input_size=(16, 16)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(x)
    n = model.num_exits
    names = [f"logits{i}" for i in range(n)] + [f"hint{i}" for i in range(n)]
    got = _export(model, x, tmp_path / "full.onnx", names)
    assert len(got) == 2 * n
    for a, b in zip(got, list(out.logits) + list(out.features)):
        assert torch.allclose(torch.from_numpy(a), b, atol=1e-4)

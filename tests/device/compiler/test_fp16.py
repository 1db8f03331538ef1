"""FP16 conversion: float32 IO under the same names, float16 weights, runs in ONNX Runtime, close to FP32."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from edgekd.core.errors import EdgekdError
from edgekd.device.compiler.fp16 import convert_fp16
from edgekd.device.runners.onnxruntime import create_session

torch = pytest.importorskip("torch")
nn = torch.nn


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    """conv-bn-relu x3, avgpool, linear with fixed random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)

    def cbr(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    model = nn.Sequential(*cbr(3, 16, 1), *cbr(16, 32, 2), *cbr(32, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.05, 0.5)
    model.eval()
    path = tmp_path_factory.mktemp("fp16") / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(2, 3, 16, 16), str(path), input_names=["image"],
                          output_names=["logits0"], dynamic_axes={"image": {0: "n"}, "logits0": {0: "n"}},
                          opset_version=17, dynamo=False)
    return path


def run(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = create_session(path, so)
    return sess.run(None, {"image": x})[0]


def test_fp16_keeps_float32_io_and_matches_fp32(fp32_model, tmp_path):
    out = convert_fp16(fp32_model, tmp_path / "net.fp16.onnx")
    assert out == tmp_path / "net.fp16.onnx" and sorted(os.listdir(tmp_path)) == ["net.fp16.onnx"]
    model = onnx.load(str(out))
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [("image", TensorProto.FLOAT)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == [("logits0", TensorProto.FLOAT)]
    float_inits = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert float_inits and all(i.data_type == TensorProto.FLOAT16 for i in float_inits)
    assert "Cast" in {n.op_type for n in model.graph.node}
    assert os.path.getsize(out) < 0.6 * os.path.getsize(fp32_model)

    x = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    ref, got = run(fp32_model, x), run(out, x)
    assert got.dtype == np.float32 and got.shape == ref.shape == (32, 10)
    scale = float(np.abs(ref).max())
    assert scale > 0.1  # the comparison below means something
    np.testing.assert_allclose(got, ref, atol=1e-2 * scale, rtol=0)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_fp16_io_types_can_be_converted_too(fp32_model, tmp_path):
    model = onnx.load(str(convert_fp16(fp32_model, tmp_path / "all16.onnx", keep_io_types=False)))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_fp16_user_errors(tmp_path):
    with pytest.raises(EdgekdError, match="not found"):
        convert_fp16(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00 definitely not protobuf \xff")
    with pytest.raises(EdgekdError, match="garbage.onnx is not a readable ONNX graph"):
        convert_fp16(garbage, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()

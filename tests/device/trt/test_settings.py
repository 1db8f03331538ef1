"""What edgekd asks TensorRT for (edgekd.device.tensorrt.settings): builder settings per release, precision and
device, the optimization profile's batches, the graph's facts and the precision each graph can be built as."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.core.errors import EdgekdError
from edgekd.device.compiler.targets import load_target
from edgekd.device.tensorrt.settings import DLA_BATCH, build_settings, graph_facts, precision_problem, profile_batches
from tests.helpers import tiny_onnx


# -- builder settings per TensorRT version -----------------------------------------------------------------------
@pytest.mark.parametrize("major, precision, dla, typing_, flags, explicit_batch, calibration", [
    (8, "fp32", False, "weak", (), True, None),
    (8, "fp16", False, "weak", ("FP16",), True, None),
    (8, "int8", False, "weak", ("FP16", "INT8"), True, "explicit"),
    (8, "int8", True, "weak", ("FP16", "INT8", "GPU_FALLBACK"), True, "implicit"),  # 8.x DLA: no Q/DQ
    (10, "fp16", True, "weak", ("FP16", "GPU_FALLBACK"), False, None),
    (10, "int8", True, "weak", ("FP16", "INT8", "GPU_FALLBACK"), False, "implicit"),  # DLA: implicit only
    (11, "fp32", False, "strong", (), False, None),
    (11, "fp16", False, "strong", (), False, None),  # 11: precision from the graph, no flags
    (11, "int8", False, "strong", (), False, "explicit"),
    (11, "int8", True, "strong", ("GPU_FALLBACK",), False, "explicit"),
])
def test_build_settings(major, precision, dla, typing_, flags, explicit_batch, calibration):
    settings = build_settings(major, precision, dla=dla, batch=(1, 1, 8))
    assert (settings.typing, settings.flags, settings.explicit_batch_flag, settings.calibration) == \
        (typing_, flags, explicit_batch, calibration)
    assert settings.batch == (1, 1, 8)


# -- what the graph says (onnx only) -----------------------------------------------------------------------------
def qdq_onnx(path: Path) -> Path:
    """A one-input graph with a QuantizeLinear/DequantizeLinear pair, as edgekd's TensorRT int8 graphs have."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale"),
             numpy_helper.from_array(np.array(0, dtype=np.int8), "zero")]
    nodes = [helper.make_node("QuantizeLinear", ["image", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["out"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_graph_facts(tmp_path):
    from edgekd.device.compiler.fp16 import convert_fp16

    fp32 = graph_facts(tiny_onnx(tmp_path / "full.onnx"))
    assert fp32.inputs == {"image": (-1, 3, 16, 16)} and fp32.float_types == {"float32"} and not fp32.has_qdq
    fp16 = graph_facts(convert_fp16(tmp_path / "full.onnx", tmp_path / "full.fp16.onnx"))
    assert "float16" in fp16.float_types and fp16.inputs == fp32.inputs  # float32 IO kept
    qdq = graph_facts(qdq_onnx(tmp_path / "qdq.onnx"))
    assert qdq.has_qdq and qdq.inputs == {"image": (1, 3, 4, 4)}
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with pytest.raises(EdgekdError, match="tensorrt cannot parse"):
        graph_facts(bad)


@pytest.mark.parametrize("major, precision, graph, problem", [
    (10, "fp16", "fp32", None), (10, "int8", "qdq", None), (10, "int8", "fp32", None),  # weak: flags decide
    (10, "fp16", "qdq", "has Q/DQ nodes: build it as int8"),
    (8, "int8", "qdq", "needs the float graph"),  # 8.x DLA calibrates implicitly (dla below)
    (11, "fp16", "fp16", None), (11, "int8", "qdq", None), (11, "fp32", "fp32", None),
    (11, "fp16", "fp32", "fp16 comes from the FP16 graph"),
    (11, "int8", "fp32", "int8 comes from the graph's Q/DQ nodes"),
    (11, "fp32", "fp16", "has float16 tensors"),
])
def test_precision_problem(tmp_path, major, precision, graph, problem):
    from edgekd.device.compiler.fp16 import convert_fp16

    path = {"fp32": lambda: tiny_onnx(tmp_path / "g.onnx"), "qdq": lambda: qdq_onnx(tmp_path / "g.onnx"),
            "fp16": lambda: convert_fp16(tiny_onnx(tmp_path / "f.onnx"), tmp_path / "g.onnx")}[graph]()
    settings = build_settings(major, precision, dla=major == 8, batch=(1, 1, 1))
    found = precision_problem(precision, settings, graph_facts(path), "g.onnx")
    assert (found is None) if problem is None else (problem in found)


# -- DLA: one static shape ---------------------------------------------------------------------------------------
def test_optimization_profile_batches_on_dla_and_gpu():
    orin = load_target("agx-orin")
    assert orin.batch == (1, 1, 16)
    assert profile_batches(orin.batch, dla=False) == (1, 1, 16)  # the GPU takes the target's range
    assert profile_batches(orin.batch, dla=True) == (DLA_BATCH,) * 3 == (1, 1, 1)  # DLA: min = opt = max
    assert profile_batches((2, 4, 8), dla=True) == (1, 1, 1)  # whatever the target's opt
    assert profile_batches(orin.batch, dla=False, onnx_batch=4) == (4, 4, 4)  # a fixed ONNX batch wins
    assert profile_batches(orin.batch, dla=True, onnx_batch=2) == (2, 2, 2)
    for dla in (False, True):
        low, opt, high = profile_batches(orin.batch, dla=dla)
        assert low <= opt <= high

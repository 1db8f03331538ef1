import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekd.core.errors import EdgekdError
from edgekd.device.runners import make_runner


@pytest.fixture()
def add_one(tmp_path):
    """y = x + 1 with a dynamic batch."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("logits0", TensorProto.FLOAT, ["N", 3])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["image", "one"], ["logits0"])], "g", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    return path


def test_runner_lifecycle_and_names(add_one):
    runner = make_runner("onnxruntime", add_one)
    with pytest.raises(EdgekdError, match="not active"):
        runner.infer({"image": np.zeros((1, 3), np.float32)})
    with runner as r:
        assert r.input_names == ["image"] and r.output_names == ["logits0"]
        out = r.infer({"image": np.arange(6, dtype=np.float32).reshape(2, 3)})
        np.testing.assert_array_equal(out["logits0"], np.arange(1, 7, dtype=np.float32).reshape(2, 3))
        with pytest.raises(EdgekdError, match="missing inputs"):
            r.infer({"feat0": np.zeros((1, 3), np.float32)})
    assert not runner.is_active


def test_bad_backend_and_missing_or_broken_graph(tmp_path, add_one):
    with pytest.raises(EdgekdError, match="unknown backend"):
        make_runner("tflite", add_one)
    with pytest.raises(EdgekdError, match="not found"):
        make_runner("onnxruntime", tmp_path / "nope.onnx").activate()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(EdgekdError, match="cannot load"):
        make_runner("onnxruntime", bad).activate()


def test_every_runner_backend_has_one_implementation():
    """The runner registry and the manifest's list of runner backends name the same backends, in the same order."""
    from edgekd.core.manifest import RUNNER_BACKENDS
    from edgekd.device.runners import IMPLEMENTATIONS

    assert tuple(IMPLEMENTATIONS) == RUNNER_BACKENDS

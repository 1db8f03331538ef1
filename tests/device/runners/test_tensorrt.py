"""The TensorRT runner.

What needs no GPU (lazy imports, construction, clear errors when TensorRT is missing) runs everywhere. Running a
real engine is marked ``tensorrt`` and skips, with the reason :func:`tensorrt_available` gives, wherever
TensorRT, an NVIDIA GPU or CUDA Python bindings are missing (as on CI).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from edgekd.core.errors import EdgekdError
from edgekd.device.compiler.tensorrt import build_engine, tensorrt_available
from edgekd.device.runners import make_runner
from edgekd.device.runners.tensorrt import TensorRTRunner, _sidecar_dla_core
from tests.helpers import assert_no_heavy_imports, gpu_target, tiny_onnx


# -- everywhere --------------------------------------------------------------------------------------------------
def test_tiny_graph_runs_on_onnxruntime(tmp_path):
    """The reference the TensorRT comparison below relies on."""
    path = tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    with make_runner("onnxruntime", path) as runner:
        out = runner.infer({"image": x})
    assert out["logits"].shape == (3, 5)


def test_make_runner_builds_a_tensorrt_runner_lazily(tmp_path):
    runner = make_runner("tensorrt", tmp_path / "model.engine", dla_core=1)
    assert isinstance(runner, TensorRTRunner)
    assert runner.backend == "tensorrt" and not runner.is_active
    assert runner.options == {"dla_core": 1}


def test_missing_engine_is_reported(tmp_path):
    with pytest.raises(EdgekdError, match="graph not found"):
        make_runner("tensorrt", tmp_path / "absent.engine").activate()


def test_activate_without_tensorrt_says_so(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"fake")
    runner = make_runner("tensorrt", engine)
    with pytest.raises(EdgekdError, match="tensorrt is not installed"):
        runner.activate()
    assert not runner.is_active
    with pytest.raises(EdgekdError, match="not active"):
        runner.infer({"image": np.zeros((1, 3, 16, 16), np.float32)})


def test_dla_core_default_comes_from_the_sidecar(tmp_path):
    engine = tmp_path / "model.engine"
    assert _sidecar_dla_core(engine) is None
    (tmp_path / "model.engine.json").write_text(json.dumps({"dla_core": 1}))
    assert _sidecar_dla_core(engine) == 1
    (tmp_path / "model.engine.json").write_text("{broken")
    assert _sidecar_dla_core(engine) is None


def test_importing_the_runner_does_not_import_tensorrt_or_cuda():
    assert_no_heavy_imports("from edgekd.device.runners import make_runner\nmake_runner('tensorrt', 'x.engine')")


# -- real engines (TensorRT + NVIDIA GPU + CUDA Python bindings) --------------------------------------------------
@pytest.fixture
def trt_ready() -> str:
    ok, detail = tensorrt_available()
    if not ok:
        pytest.skip(detail)
    if not any(importlib.util.find_spec(m) for m in ("cuda", "pycuda")):
        pytest.skip("no CUDA Python bindings (pip install cuda-python)")
    return detail




@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_engine_matches_onnxruntime(tmp_path, trt_ready, precision, atol):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    engine = build_engine(onnx_path, tmp_path / "out", precision=precision, profile=gpu_target(tmp_path),
                          input_name="image", input_shape_chw=(3, 16, 16), log=lambda m: None)
    rng = np.random.default_rng(2)
    with make_runner("onnxruntime", onnx_path) as ort_runner, \
            make_runner("tensorrt", engine) as trt_runner:
        assert trt_runner.input_names == ["image"] and trt_runner.output_names == ["logits"]
        for batch in (1, 3, 4, 2):  # every size within the profile, reusing the max-batch buffers
            x = rng.random((batch, 3, 16, 16), dtype=np.float32)
            want = ort_runner.infer({"image": x})["logits"]
            got = trt_runner.infer({"image": x})["logits"]
            assert got.dtype == np.float32 and got.shape == (batch, 5)
            np.testing.assert_allclose(got, want, atol=atol, rtol=atol)
        with pytest.raises(EdgekdError, match="outside the engine's optimisation profile"):
            trt_runner.infer({"image": np.zeros((5, 3, 16, 16), np.float32)})  # batch.max is 4
        with pytest.raises(EdgekdError, match="unknown outputs"):
            trt_runner.infer({"image": np.zeros((1, 3, 16, 16), np.float32)}, outputs=["nope"])
    assert not trt_runner.is_active


@pytest.mark.tensorrt
def test_corrupt_engine_is_reported(tmp_path, trt_ready):
    engine = tmp_path / "bad.engine"
    engine.write_bytes(b"\0" * 256)
    with pytest.raises(EdgekdError, match="cannot load bad.engine"):
        make_runner("tensorrt", engine).activate()

"""TensorRT engine builds.

The pure helpers (names, freshness, calibrator choice, device names) and the checks made before TensorRT is
touched run everywhere. The real builds are marked ``tensorrt`` and skip, with the reason
:func:`tensorrt_available` gives, wherever TensorRT or an NVIDIA GPU is missing (as on CI).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.core.manifest import sha256_file
from edgekd.device.compiler import tensorrt as trt_build
from edgekd.device.compiler.targets import load_target
from edgekd.device.compiler.tensorrt import (
    build_engine,
    detect_device,
    engine_is_fresh,
    engine_name,
    sanitize_device,
    sidecar_path,
    tensorrt_available,
    use_implicit_calibrator,
    write_engine_sidecar,
)
from tests.helpers import assert_no_heavy_imports, gpu_target, tiny_onnx

SHA = "0123456789abcdef" * 4
META = {"onnx_sha256": SHA, "precision": "int8", "tensorrt": "10.3.0", "device": "jetson-orin-nano-developer-kit",
        "dla_core": None}






# -- pure helpers ------------------------------------------------------------------------------------------------
def test_engine_name_contents():
    name = engine_name(SHA, "int8", "10.3.0", "orin-nano-gpu")
    assert name == "full.0123456789ab.int8.trt10.3.0.orin-nano-gpu.engine"
    assert engine_name(SHA, "fp16", "8.6.2.3", "orin-nx-dla1", stem="segment0") == \
        "segment0.0123456789ab.fp16.trt8.6.2.orin-nx-dla1.engine"


def test_engine_name_is_sanitised():
    name = engine_name(SHA.upper(), "FP16/../x", "10.3.0+cuda12.6", "NVIDIA Jetson AGX Orin / 64GB\x00",
                       stem="../my model")
    assert "/" not in name and " " not in name and "\x00" not in name and ".." not in name
    assert name.endswith(".engine")
    assert name.split(".")[1] == "0123456789ab"
    assert "jetson-agx-orin-64gb" in name
    assert name.startswith("my-model.")
    assert ".trt10.3.0." in name
    assert ".trtunknown." in engine_name(SHA, "fp16", "", "x")


def test_sanitize_device():
    assert sanitize_device("NVIDIA Jetson Orin Nano Developer Kit\x00") == "jetson-orin-nano-developer-kit"
    assert sanitize_device("NVIDIA GeForce RTX 3090") == "geforce-rtx-3090"
    assert sanitize_device("Tesla T4") == "tesla-t4"
    assert sanitize_device("  \x00 ") == "unknown"
    assert len(sanitize_device("x" * 200)) <= 48
    assert sanitize_device(sanitize_device("NVIDIA H100 80GB HBM3")) == "h100-80gb-hbm3"  # idempotent


def test_detect_device_reads_the_jetson_device_tree(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\x00")
    monkeypatch.setattr(trt_build, "DEVICE_TREE_MODEL", model)
    assert detect_device() == "jetson-xavier-nx-developer-kit"
    monkeypatch.setattr(trt_build, "DEVICE_TREE_MODEL", tmp_path / "absent")
    assert detect_device()  # the GPU name, or "unknown-gpu" on a machine without one


@pytest.mark.parametrize("major, dla, expected", [
    (8, True, True),     # TensorRT 8.x on DLA: no explicit quantization, calibrate implicitly
    (8, False, False),   # GPU: the Q/DQ graph carries the scales
    (10, True, False),   # TensorRT 10: Q/DQ graphs on DLA too
    (10, False, False),
    (11, False, False),
])
def test_use_implicit_calibrator(major, dla, expected):
    assert use_implicit_calibrator(major, dla) is expected


def fake_engine(tmp_path: Path, meta: dict | None = None, *, sidecar: bool = True) -> Path:
    engine = tmp_path / engine_name(SHA, "int8", "10.3.0", "orin-nano-gpu")
    engine.write_bytes(b"not really an engine")
    if sidecar:
        write_engine_sidecar(engine, META if meta is None else meta)
    return engine


def test_engine_is_fresh_when_sidecar_matches(tmp_path):
    engine = fake_engine(tmp_path)
    assert sidecar_path(engine) == engine.with_name(engine.name + ".json")
    assert json.loads(sidecar_path(engine).read_text())["engine_sha256"] == sha256_file(engine)
    assert engine_is_fresh(engine, META)
    assert engine_is_fresh(str(engine), dict(META))


def test_engine_is_stale_without_sidecar_or_engine(tmp_path):
    engine = fake_engine(tmp_path, sidecar=False)
    assert not engine_is_fresh(engine, META)
    assert not engine_is_fresh(tmp_path / "absent.engine", META)
    engine.write_bytes(b"")
    write_engine_sidecar(engine, META)
    assert not engine_is_fresh(engine, META)  # an empty engine is never fresh


@pytest.mark.parametrize("key, value", [
    ("onnx_sha256", "f" * 64), ("precision", "fp16"), ("tensorrt", "10.3.1"), ("device", "jetson-agx-orin"),
    ("dla_core", 0),
])
def test_engine_is_stale_on_any_mismatch(tmp_path, key, value):
    engine = fake_engine(tmp_path)
    assert not engine_is_fresh(engine, {**META, key: value})


def test_engine_is_stale_on_extra_or_missing_keys(tmp_path):
    engine = fake_engine(tmp_path)
    assert not engine_is_fresh(engine, {**META, "batch": [1, 1, 8]})
    assert not engine_is_fresh(engine, {k: v for k, v in META.items() if k != "dla_core"})


def test_engine_is_stale_when_engine_changed_after_sidecar(tmp_path):
    engine = fake_engine(tmp_path)
    engine.write_bytes(b"a different engine")
    assert not engine_is_fresh(engine, META)


def test_engine_is_stale_on_corrupt_sidecar(tmp_path):
    engine = fake_engine(tmp_path)
    sidecar_path(engine).write_text("{not json")
    assert not engine_is_fresh(engine, META)
    sidecar_path(engine).write_text("[1, 2]")
    assert not engine_is_fresh(engine, META)


def test_sidecar_compares_as_json(tmp_path):
    meta = {**META, "batch": (1, 2, 4)}  # a tuple is stored as a list; still the same build
    engine = fake_engine(tmp_path, meta)
    assert engine_is_fresh(engine, meta)
    assert engine_is_fresh(engine, {**META, "batch": [1, 2, 4]})
    # a hand-written sidecar without engine_sha256 is judged on its metadata alone
    sidecar_path(engine).write_text(json.dumps(META))
    assert engine_is_fresh(engine, META)


def test_tensorrt_available_reports_a_reason():
    ok, detail = tensorrt_available()
    assert isinstance(ok, bool) and isinstance(detail, str) and detail
    if importlib.util.find_spec("tensorrt") is None:
        assert (ok, detail) == (False, "tensorrt is not installed")
    elif ok:
        assert detail[0].isdigit()  # the version


def test_importing_the_modules_does_not_import_tensorrt():
    assert_no_heavy_imports("import edgekd.device.compiler.tensorrt, edgekd.device.compiler.targets, edgekd.device.runners.tensorrt")


# -- checks made before TensorRT is needed -----------------------------------------------------------------------
def test_build_rejects_precision_the_device_lacks(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    with pytest.raises(ConfigError, match="jetson-nano cannot build int8"):
        build_engine(onnx_path, tmp_path, precision="int8", target=load_target("jetson-nano"),
                     input_name="image", input_shape_chw=(3, 16, 16))


def test_build_rejects_an_onnxruntime_profile(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    with pytest.raises(ConfigError, match="x86-cpu uses the onnxruntime backend"):
        build_engine(onnx_path, tmp_path, precision="fp32", target=load_target("x86-cpu"),
                     input_name="image", input_shape_chw=(3, 16, 16))


def test_build_rejects_bad_dla_requests(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    nx = load_target("xavier-nx")
    with pytest.raises(ConfigError, match="DLA cores 0..1, not 2"):
        build_engine(onnx_path, tmp_path, precision="fp16", target=nx, input_name="image",
                     input_shape_chw=(3, 16, 16), dla_core=2)
    with pytest.raises(ConfigError, match="DLA runs fp16 or int8 only"):
        build_engine(onnx_path, tmp_path, precision="fp32", target=nx, input_name="image",
                     input_shape_chw=(3, 16, 16), dla_core=0)


def test_build_without_tensorrt_says_why(tmp_path):
    ok, why = tensorrt_available()
    if ok:
        pytest.skip("TensorRT is usable here")
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    with pytest.raises(EdgekdError, match=f"cannot build a TensorRT engine here: {why}"):
        build_engine(onnx_path, tmp_path, precision="fp16", target=load_target("orin-nano"),
                     input_name="image", input_shape_chw=(3, 16, 16))
    assert not list(tmp_path.glob("*.engine"))


def test_build_missing_onnx(tmp_path):
    with pytest.raises(EdgekdError, match="ONNX graph not found"):
        build_engine(tmp_path / "absent.onnx", tmp_path, precision="fp16", target=load_target("orin-nano"),
                     input_name="image", input_shape_chw=(3, 16, 16))


# -- real builds (TensorRT + NVIDIA GPU) --------------------------------------------------------------------------
@pytest.fixture
def trt_version() -> str:
    ok, detail = tensorrt_available()
    if not ok:
        pytest.skip(detail)
    return detail


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_engine_writes_engine_sidecar_and_timing_cache(tmp_path, trt_version, precision):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    messages: list[str] = []
    engine = build_engine(onnx_path, tmp_path / "out", precision=precision, target=gpu_target(tmp_path),
                          input_name="image", input_shape_chw=(3, 16, 16), timing_cache=tmp_path / "timing.cache",
                          log=messages.append)
    assert engine.is_file() and engine.stat().st_size > 0
    assert engine.name.startswith(f"full.{sha256_file(onnx_path)[:12]}.{precision}.trt")
    assert engine.name.endswith("-gpu.engine")
    meta = json.loads(sidecar_path(engine).read_text())
    assert meta["onnx_sha256"] == sha256_file(onnx_path)
    assert (meta["precision"], meta["tensorrt"], meta["dla_core"]) == (precision, trt_version, None)
    assert meta["batch"] == [1, 2, 4]
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert any("building" in m for m in messages)


@pytest.mark.tensorrt
def test_rebuild_reuses_a_fresh_engine_and_rebuilds_a_stale_one(tmp_path, trt_version):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    kwargs = dict(precision="fp16", target=gpu_target(tmp_path), input_name="image", input_shape_chw=(3, 16, 16),
                  timing_cache=tmp_path / "timing.cache")
    first = build_engine(onnx_path, tmp_path / "out", **kwargs, log=lambda m: None)
    built_at = first.stat().st_mtime_ns

    messages: list[str] = []
    again = build_engine(onnx_path, tmp_path / "out", **kwargs, log=messages.append)
    assert again == first and first.stat().st_mtime_ns == built_at
    assert any(m.startswith("reusing engine") for m in messages)

    side = sidecar_path(first)
    stale = json.loads(side.read_text())
    stale["tensorrt"] = "0.0.0"
    side.write_text(json.dumps(stale))
    messages.clear()
    rebuilt = build_engine(onnx_path, tmp_path / "out", **kwargs, log=messages.append)
    assert rebuilt == first
    assert any("stale" in m for m in messages) and not any(m.startswith("reusing") for m in messages)
    assert json.loads(side.read_text())["tensorrt"] == trt_version


@pytest.mark.tensorrt
def test_parser_errors_are_reported(tmp_path, trt_version):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with pytest.raises(EdgekdError, match="tensorrt cannot parse"):
        build_engine(bad, tmp_path, precision="fp32", target=gpu_target(tmp_path), input_name="image",
                     input_shape_chw=(3, 16, 16), log=lambda m: None)


@pytest.mark.tensorrt
def test_wrong_input_name_is_reported(tmp_path, trt_version):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    with pytest.raises(EdgekdError, match="has no input 'feat0'"):
        build_engine(onnx_path, tmp_path, precision="fp32", target=gpu_target(tmp_path), input_name="feat0",
                     input_shape_chw=(3, 16, 16), log=lambda m: None)

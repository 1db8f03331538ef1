"""TensorRT engine builds.

The pure helpers (names, freshness, calibrator choice, device names, the version gate, builder settings per
TensorRT version, optimization-profile shapes on DLA and GPU, the engine inspector's JSON, the engine cache key,
reuse and staleness) and the checks made before TensorRT is touched run everywhere. Where a test needs a
``tensorrt`` module it is a fake, named so (``VersionOnlyTensorRT``, ``FakeTensorRT11``, ...): those test edgekd's
decisions, never TensorRT. The real builds are marked ``tensorrt`` and skip, with the reason
:func:`tensorrt_available` gives, wherever TensorRT or an NVIDIA GPU is missing (as on CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.core.manifest import sha256_file
from edgekd.device import cuda, machine
from edgekd.device.compiler.targets import load_target
from edgekd.device.machine import detect_device, sanitize_device
from edgekd.device.tensorrt import build as trt_build
from edgekd.device.tensorrt import engine_cache, loader, versions
from edgekd.device.tensorrt.build import build_engine, parse_engine_information
from edgekd.device.tensorrt.engine_cache import (
    ENGINE_CACHE_ENV,
    cached_engine_path,
    calibration_digest,
    default_engine_cache,
    engine_cache_key,
    engine_is_fresh,
    engine_meta,
    engine_name,
    engine_record,
    engine_source,
    read_sidecar,
    sidecar_path,
    timing_cache_path,
    write_engine_sidecar,
)
from edgekd.device.tensorrt.loader import tensorrt_available
from edgekd.device.tensorrt.settings import (
    DLA_BATCH,
    build_settings,
    graph_facts,
    precision_problem,
    profile_batches,
)
from edgekd.device.tensorrt.versions import (
    check_tensorrt,
    tensorrt_version_problem,
    use_implicit_calibrator,
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


def test_detect_device_reads_the_jetson_device_tree(tmp_path):
    model = tmp_path / "proc/device-tree/model"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\x00")
    assert detect_device(tmp_path) == "jetson-xavier-nx-developer-kit"
    assert detect_device(tmp_path / "absent")  # the GPU name, or "unknown-gpu" on a machine without one


@pytest.mark.parametrize("major, dla, expected", [
    (8, True, True),     # TensorRT 8.x on DLA: no explicit quantization, calibrate implicitly
    (8, False, False),   # GPU: the Q/DQ graph carries the scales
    # TensorRT 10 still: the DLA takes implicit quantization only (NVIDIA/Model-Optimizer PR 1661, "DLA still only
    # supports IQ"; NVIDIA/TensorRT issue 2222); the calibrator API is there through 10.x (pyInt8 in release/10.3)
    (10, True, True),
    (10, False, False),
    (11, False, False),
    (11, True, False),   # TensorRT 11 removed the calibrators: Q/DQ on the DLA (11.4+, unverified)
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
    assert_no_heavy_imports("import edgekd.device.tensorrt.build, edgekd.device.compiler.targets, "
                            "edgekd.device.tensorrt.runner, edgekd.device.tensorrt.parser_rules")


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
    with pytest.raises(ConfigError, match=r"^--dla-core 2: target xavier-nx has DLA cores 0\.\.1$"):
        build_engine(onnx_path, tmp_path, precision="fp16", target=nx, input_name="image",
                     input_shape_chw=(3, 16, 16), dla_core=2)
    with pytest.raises(ConfigError, match="DLA runs fp16 or int8 only"):
        build_engine(onnx_path, tmp_path, precision="fp32", target=nx, input_name="image",
                     input_shape_chw=(3, 16, 16), dla_core=0)


def test_a_dla_core_on_a_target_without_one_is_refused_in_one_line(tmp_path):
    """The one DLA rule (edgekd.device.options.dla_core_problem): refused, never built on the GPU instead."""
    with pytest.raises(ConfigError, match=r"^--dla-core 0: target orin-nano has no DLA core$"):
        build_engine(tiny_onnx(tmp_path / "full.onnx"), tmp_path, precision="fp16", target=load_target("orin-nano"),
                     input_name="image", input_shape_chw=(3, 16, 16), dla_core=0)
    assert not list(tmp_path.glob("*.engine"))


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


# -- supported TensorRT versions (a fake module carrying only __version__) ---------------------------------------
def VersionOnlyTensorRT(version: str) -> types.SimpleNamespace:
    """Not TensorRT: a namespace with nothing but ``__version__``, so the gate provably reads nothing else."""
    return types.SimpleNamespace(__version__=version)


@pytest.mark.parametrize("version, major", [("8.5.2.2", 8), ("8.6.1", 8), ("10.3.0", 10), ("10.13.3.9", 10),
                                            ("11.1.0.106", 11)])
def test_supported_tensorrt_versions_pass_the_gate(version, major):
    assert check_tensorrt(VersionOnlyTensorRT(version)) == major
    assert tensorrt_version_problem(version) is None


@pytest.mark.parametrize("version", ["8.4.3.1", "8.2.1", "7.1.3", "12.0.0", "13.1", "unknown", ""])
def test_unsupported_tensorrt_versions_are_refused_in_one_line(version):
    with pytest.raises(EdgekdError) as info:
        check_tensorrt(VersionOnlyTensorRT(version))
    message = str(info.value)
    assert "\n" not in message and f"TensorRT {version} is not supported" in message
    assert "8.5 to 11.x" in message and "JetPack 5.1: 8.5" in message


def test_build_engine_refuses_an_unsupported_tensorrt_before_touching_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, "12.0.0"))
    monkeypatch.setitem(sys.modules, "tensorrt", VersionOnlyTensorRT("12.0.0"))
    with pytest.raises(EdgekdError, match=r"^TensorRT 12\.0\.0 is not supported: .*8\.5 to 11\.x"):
        build_engine(tiny_onnx(tmp_path / "full.onnx"), tmp_path / "out", precision="fp16",
                     target=load_target("orin-nano"), input_name="image", input_shape_chw=(3, 16, 16),
                     engine_cache=tmp_path / "cache", log=lambda m: None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


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


class _Names:
    """A fake enum: attributes for the given member names only (anything else is an AttributeError)."""

    def __init__(self, *names: str):
        for name in names:
            setattr(self, name, f"<{name}>")


def FakeTensorRT11() -> types.SimpleNamespace:
    """Not TensorRT: the members of TensorRT 11's enums that the strongly typed path may touch, per NVIDIA's
    release/11.0 python/src/infer/pyCore.cpp (BuilderFlag has no FP16/INT8, NetworkDefinitionCreationFlag no
    EXPLICIT_BATCH) and the 10.x to 11.x migration guide (no calibrators)."""
    return types.SimpleNamespace(
        __version__="11.0.0",
        BuilderFlag=_Names("DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "EDITABLE_TIMING_CACHE", "TF32"),
        NetworkDefinitionCreationFlag=_Names("STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS",
                                             "PREFER_JIT_PYTHON_PLUGINS"),
        MemoryPoolType=_Names("WORKSPACE"), ProfilingVerbosity=_Names("LAYER_NAMES_ONLY", "DETAILED", "NONE"),
        DeviceType=_Names("GPU", "DLA"))


class RecordingConfig:
    """Not TensorRT: records what edgekd sets on a builder config."""

    def __init__(self) -> None:
        self.flags: list = []
        self.pools: dict = {}

    def set_flag(self, flag) -> None:
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool, size) -> None:
        self.pools[pool] = size


@pytest.mark.parametrize("precision, dla_core", [("fp32", None), ("fp16", None), ("int8", None), ("int8", 0),
                                                 ("fp16", 1)])
def test_the_tensorrt_11_path_touches_no_removed_name(precision, dla_core):
    trt = FakeTensorRT11()
    settings = build_settings(check_tensorrt(trt), precision, dla=dla_core is not None, batch=(1, 1, 1))
    assert trt_build._network_flags(trt, settings) == 0  # strongly typed is the only mode: no flag at all
    config = RecordingConfig()
    trt_build._configure(trt, config, settings, workspace_mib=1024, dla_core=dla_core)
    assert config.flags == (["<GPU_FALLBACK>"] if dla_core is not None else [])
    assert config.pools == {"<WORKSPACE>": 1024 << 20}
    assert config.profiling_verbosity == "<DETAILED>"
    assert getattr(config, "DLA_core", None) == dla_core
    assert not use_implicit_calibrator(11, dla_core is not None)  # no calibrator on 11, DLA or not


def test_the_weak_typing_path_sets_precision_flags_and_explicit_batch():
    trt = types.SimpleNamespace(BuilderFlag=_Names("FP16", "INT8", "GPU_FALLBACK"),
                                NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0),
                                MemoryPoolType=_Names("WORKSPACE"), ProfilingVerbosity=_Names("DETAILED"),
                                DeviceType=_Names("DLA"))
    settings = build_settings(8, "int8", dla=True, batch=(1, 1, 1))
    assert trt_build._network_flags(trt, settings) == 1
    config = RecordingConfig()
    trt_build._configure(trt, config, settings, workspace_mib=0, dla_core=1)
    assert config.flags == ["<FP16>", "<INT8>", "<GPU_FALLBACK>"] and config.pools == {}
    assert (config.default_device_type, config.DLA_core) == ("<DLA>", 1)
    assert trt_build._network_flags(trt, build_settings(10, "int8", dla=False, batch=(1, 1, 1))) == 0


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


class FakeLayer:
    """Not TensorRT: a network layer with a name and a type."""

    def __init__(self, name: str, kind: str):
        self.name, self.type = name, types.SimpleNamespace(name=kind)


def test_dla_fallback_lists_the_layers_the_dla_cannot_run():
    layers = [FakeLayer("conv0", "CONVOLUTION"), FakeLayer("topk", "TOPK"), FakeLayer("relu0", "ACTIVATION")]
    network = types.SimpleNamespace(num_layers=3, get_layer=lambda i: layers[i])
    config = types.SimpleNamespace(can_run_on_DLA=lambda layer: layer.type.name != "TOPK")
    assert trt_build._dla_fallback(config, network) == [{"name": "topk", "type": "TOPK"}]


# The engine inspector's JSON, written after the format TensorRT documents (developer guide, "Engine Inspector":
# https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/engine-tools.html) and that NVIDIA's TREx
# example plans use (tools/experimental/trt-engine-explorer/examples/*/*.graph.json in NVIDIA/TensorRT release/10.3):
# {"Layers": [...], "Bindings": [...]}, a layer being an object with Name/LayerType/Inputs/Outputs/... under
# ProfilingVerbosity.DETAILED and only its name under LAYER_NAMES_ONLY. Names and values here are made up.
INSPECTOR_DETAILED = json.dumps({
    "Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to conv0 + relu0", "LayerType": "Reformat",
         "Inputs": [{"Name": "image", "Location": "Device", "Dimensions": [1, 3, 16, 16],
                     "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "Reformatted Input Tensor 0 to conv0 + relu0", "Location": "Device",
                      "Dimensions": [1, 3, 16, 16], "Format/Datatype": "Channel major FP16 format"}],
         "ParameterType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x0000000000000000"},
        {"Name": "conv0 + relu0", "LayerType": "CaskConvolution", "Inputs": [], "Outputs": [],
         "ParameterType": "Convolution", "Kernel": [3, 3], "TacticValue": "0x00000000000000ab"},
        {"Name": "pool", "LayerType": "CudaPooling", "ParameterType": "Pooling", "TacticValue": "0xfffffffffffffffe"},
    ],
    "Bindings": ["image", "logits"],
}, indent=1)
INSPECTOR_NAMES_ONLY = '{"Layers": ["conv0 + relu0", "pool", "fc"],\n"Bindings": ["image", "logits"]}'


def test_parse_engine_information():
    assert parse_engine_information(INSPECTOR_DETAILED) == [
        {"name": "Reformatting CopyNode for Input Tensor 0 to conv0 + relu0", "type": "Reformat"},
        {"name": "conv0 + relu0", "type": "CaskConvolution"}, {"name": "pool", "type": "CudaPooling"}]
    assert parse_engine_information(INSPECTOR_NAMES_ONLY) == [
        {"name": "conv0 + relu0", "type": None}, {"name": "pool", "type": None}, {"name": "fc", "type": None}]
    for bad in ("not json", "[]", '{"Bindings": []}', '{"Layers": [1]}', '{"Layers": [{"LayerType": "x"}]}'):
        with pytest.raises(ValueError):
            parse_engine_information(bad)


def test_engine_layers_come_from_the_inspector_and_failures_are_a_note():
    calls = {}

    class FakeRuntime:  # Not TensorRT
        def __init__(self, logger):
            self.DLA_core = None

        def deserialize_cuda_engine(self, data):
            calls["dla_core"] = self.DLA_core
            inspector = types.SimpleNamespace(get_engine_information=lambda fmt: INSPECTOR_DETAILED if fmt == "JSON"
                                              else "")
            return types.SimpleNamespace(create_engine_inspector=lambda: inspector)

    trt = types.SimpleNamespace(Runtime=FakeRuntime, LayerInformationFormat=types.SimpleNamespace(JSON="JSON"))
    layers = trt_build._engine_layers(trt, b"plan", 1, None, log=lambda m: None)
    assert [layer["name"] for layer in layers] == ["Reformatting CopyNode for Input Tensor 0 to conv0 + relu0",
                                                   "conv0 + relu0", "pool"]
    assert calls["dla_core"] == 1  # a DLA engine deserializes on its core
    notes: list = []
    broken = types.SimpleNamespace(Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda d: None))
    assert trt_build._engine_layers(broken, b"plan", None, None, log=notes.append) is None
    assert notes and notes[0].startswith("note: could not read the engine's layers")


# -- the engine cache --------------------------------------------------------------------------------------------
def test_default_engine_cache_location():
    home = Path("~").expanduser()
    assert default_engine_cache({}) == home / ".cache" / "edgekd" / "engines"
    assert default_engine_cache({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/edgekd/engines")
    assert default_engine_cache({ENGINE_CACHE_ENV: "/fast/engines", "XDG_CACHE_HOME": "/x"}) == Path("/fast/engines")
    for off in ("", "off", "None", "0", "false"):
        assert default_engine_cache({ENGINE_CACHE_ENV: off}) is None


def meta_for(**changes) -> dict:
    """The sidecar fields of a typical Orin Nano int8 GPU build (engine_meta), with ``changes``."""
    fields = dict(onnx_sha256=SHA, precision="int8", trt_version="10.3.0", device="jetson-orin-nano-developer-kit",
                  sm="sm87", dla_core=None, input_name="image", input_shape_chw=(3, 16, 16), workspace_mib=1024,
                  settings=build_settings(10, "int8", dla=False, batch=(1, 1, 8)), calib_digest=None)
    fields.update(changes)
    return engine_meta(**fields)


@pytest.mark.parametrize("change", [
    dict(onnx_sha256="f" * 64), dict(precision="fp16"), dict(trt_version="10.3.0.26"), dict(trt_version="8.6.2"),
    dict(device="jetson-agx-orin-developer-kit"), dict(sm="sm72"), dict(dla_core=0), dict(input_name="feat0"),
    dict(input_shape_chw=(3, 32, 32)), dict(workspace_mib=2048), dict(l4t="35.4.1"),
    dict(settings=build_settings(10, "int8", dla=False, batch=(1, 1, 16))),  # batch range
    dict(settings=build_settings(10, "int8", dla=True, batch=(1, 1, 8))),  # flags (GPU_FALLBACK)
    dict(settings=build_settings(11, "int8", dla=False, batch=(1, 1, 8))),  # strong typing, no flags
    dict(settings=build_settings(8, "int8", dla=True, batch=(1, 1, 8)), calib_digest="a" * 64),  # implicit
])
def test_every_field_changes_the_engine_cache_key(change):
    assert engine_cache_key(meta_for(**change)) != engine_cache_key(meta_for())


def test_the_engine_cache_key_is_stable():
    base = meta_for()
    assert engine_cache_key(base) == engine_cache_key(json.loads(json.dumps(base)))  # tuples vs lists
    assert engine_cache_key(dict(reversed(list(base.items())))) == engine_cache_key(base)  # key order
    implicit = dict(settings=build_settings(8, "int8", dla=True, batch=(1, 1, 1)))
    assert engine_cache_key(meta_for(**implicit, calib_digest="a" * 64)) != \
        engine_cache_key(meta_for(**implicit, calib_digest="b" * 64))  # other calibration data, other engine
    assert cached_engine_path("/c", base) == Path("/c") / f"{engine_cache_key(base)}.engine"


def test_timing_cache_is_per_tensorrt_version_and_device(tmp_path):
    a = timing_cache_path(tmp_path, "10.3.0", "jetson-orin-nano-developer-kit", "sm87")
    assert a.parent == tmp_path / "timing" and a.name == "trt10.3.0.jetson-orin-nano-developer-kit-sm87.cache"
    assert a != timing_cache_path(tmp_path, "8.6.2", "jetson-orin-nano-developer-kit", "sm87")
    assert a != timing_cache_path(tmp_path, "10.3.0", "jetson-agx-orin-developer-kit", "sm87")
    assert "/" not in timing_cache_path(tmp_path, "10.3/../x", "a/b").name


def test_calibration_digest():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    assert calibration_digest([x, x]) == calibration_digest([x.copy(), x.copy()])
    assert calibration_digest([x]) != calibration_digest([x, x])
    assert calibration_digest([x]) != calibration_digest([x.reshape(1, 3, 4, 1)])
    assert calibration_digest([x]) != calibration_digest([x + 1])


def put_engine(path: Path, meta: dict, data: bytes = b"engine bytes", info: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    write_engine_sidecar(path, meta, info)
    return path


def test_engine_source_decides_reuse(tmp_path):
    meta = meta_for()
    bundle, cached = tmp_path / "bundle" / "full.engine", cached_engine_path(tmp_path / "cache", meta)
    assert engine_source(bundle, cached, meta) == "build"
    put_engine(cached, meta)
    assert engine_source(bundle, cached, meta) == "cache"
    assert engine_source(bundle, None, meta) == "build"  # no cache: build
    put_engine(bundle, meta)
    assert engine_source(bundle, cached, meta) == "bundle"
    assert engine_source(bundle, cached, meta_for(precision="fp16")) == "build"  # another build
    bundle.unlink()
    cached.write_bytes(b"changed after its sidecar")  # stale: never loaded
    assert engine_source(bundle, cached, meta) == "build"


def test_sidecar_info_is_a_record_not_a_field(tmp_path):
    meta = meta_for()
    engine = put_engine(tmp_path / "e.engine", meta, info={"origin": "built", "gpu_fallback": []})
    assert engine_is_fresh(engine, meta)
    assert read_sidecar(engine)["info"] == {"origin": "built", "gpu_fallback": []}
    assert read_sidecar(tmp_path / "absent.engine") == {}


def test_link_or_copy(tmp_path, monkeypatch):
    src = tmp_path / "cache" / "a.engine"
    src.parent.mkdir()
    src.write_bytes(b"plan")
    how = engine_cache._link_or_copy(src, tmp_path / "out" / "b.engine")
    assert how == "hard-linked" and os.path.samefile(src, tmp_path / "out" / "b.engine")

    def no_links(*args):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    assert engine_cache._link_or_copy(src, tmp_path / "out" / "c.engine") == "copied"
    assert (tmp_path / "out" / "c.engine").read_bytes() == b"plan"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.engine", "c.engine"]  # no temporaries


def test_engine_record_for_the_manifest(tmp_path):
    meta = meta_for(dla_core=0, settings=build_settings(10, "int8", dla=True, batch=(1, 1, 1)))
    fallback = [{"name": "topk", "type": "TOPK"}]
    engine = put_engine(tmp_path / "full.engine", meta,
                        info={"origin": "cache", "cache_key": "k", "gpu_fallback": fallback,
                              "engine_layers": [{"name": "conv0", "type": "CaskConvolution"}]})
    assert engine_record(engine) == {
        "file": "full.engine", "device": "dla0", "batch": [1, 1, 1], "precision": "int8", "tensorrt": "10.3.0",
        "typing": "weak", "origin": "cache", "cache_key": "k", "gpu_fallback": fallback,
        "engine_layers": [{"name": "conv0", "type": "CaskConvolution"}], "unverified": None}


def test_build_engine_takes_a_fresh_cached_engine_and_never_a_stale_one(tmp_path, monkeypatch):
    """The reuse path of build_engine itself, on a CPU: the fake ``tensorrt`` carries only a version, so reaching
    TensorRT's builder (a rebuild) is an AttributeError, and a reuse provably creates no TensorRT object."""
    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, "10.3.0"))
    monkeypatch.setitem(sys.modules, "tensorrt", VersionOnlyTensorRT("10.3.0"))
    monkeypatch.setattr(machine, "detect_device", lambda: "jetson-orin-nano-developer-kit")
    monkeypatch.setattr(machine, "gpu_sm", lambda: "sm87")
    onnx_path, target, cache = tiny_onnx(tmp_path / "full.onnx"), load_target("orin-nano"), tmp_path / "cache"
    meta = engine_meta(onnx_sha256=sha256_file(onnx_path), precision="fp16", trt_version="10.3.0",
                       device="jetson-orin-nano-developer-kit", sm="sm87", dla_core=None, input_name="image",
                       input_shape_chw=(3, 16, 16), workspace_mib=target.workspace_mib,
                       settings=build_settings(10, "fp16", dla=False, batch=target.batch))
    info = {"origin": "built", "cache_key": engine_cache_key(meta), "gpu_fallback": None,
            "engine_layers": [{"name": "conv0 + relu0", "type": "CaskConvolution"}]}
    cached = put_engine(cached_engine_path(cache, meta), meta, b"an engine built earlier", info)
    kwargs = dict(precision="fp16", target=target, input_name="image", input_shape_chw=(3, 16, 16),
                  engine_cache=cache)

    messages: list = []
    built = build_engine(onnx_path, tmp_path / "bundle1", **kwargs, log=messages.append)
    assert built.origin == "cache" and built.device == "gpu" and built.batch == (1, 1, 8)
    assert built.path.parent == tmp_path / "bundle1" and built.path.read_bytes() == b"an engine built earlier"
    assert os.path.samefile(built.path, cached)  # hard-linked, not copied (same file system)
    assert any(m.startswith(f"reusing cached engine {cached}") for m in messages)
    assert engine_record(built.path)["origin"] == "cache"
    assert built.engine_layers == ({"name": "conv0 + relu0", "type": "CaskConvolution"},)

    again = build_engine(onnx_path, tmp_path / "bundle1", **kwargs, log=lambda m: None)
    assert again.origin == "bundle" and again.path == built.path

    cached.unlink()  # the bundle keeps its link; the cache entry is replaced by a stale one
    put_engine(cached, meta, b"an engine built earlier", info)
    cached.write_bytes(b"tampered")
    # the fake has no TensorRT objects: reaching the logger means a rebuild was attempted, nothing stale loaded
    with pytest.raises(AttributeError, match="ILogger"):
        build_engine(onnx_path, tmp_path / "bundle2", **kwargs, log=lambda m: None)
    assert not (tmp_path / "bundle2").exists()
    put_engine(cached, meta, b"an engine built earlier", info)  # fresh again, but for TensorRT 10.3.0 only
    monkeypatch.setitem(sys.modules, "tensorrt", VersionOnlyTensorRT("10.3.1"))
    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, "10.3.1"))
    with pytest.raises(AttributeError, match="ILogger"):  # another version: another key, nothing to reuse
        build_engine(onnx_path, tmp_path / "bundle3", **kwargs, log=lambda m: None)


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
    built = build_engine(onnx_path, tmp_path / "out", precision=precision, target=gpu_target(tmp_path),
                         input_name="image", input_shape_chw=(3, 16, 16), timing_cache=tmp_path / "timing.cache",
                         engine_cache=None, log=messages.append)
    engine = built.path
    assert built.origin == "built" and built.device == "gpu" and built.batch == (1, 2, 4)
    assert built.engine_layers, "the engine inspector listed no layers"
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
                  timing_cache=tmp_path / "timing.cache", engine_cache=None)
    first = build_engine(onnx_path, tmp_path / "out", **kwargs, log=lambda m: None).path
    built_at = first.stat().st_mtime_ns

    messages: list[str] = []
    again = build_engine(onnx_path, tmp_path / "out", **kwargs, log=messages.append)
    assert again.path == first and again.origin == "bundle" and first.stat().st_mtime_ns == built_at
    assert any(m.startswith("reusing engine") for m in messages)

    side = sidecar_path(first)
    stale = json.loads(side.read_text())
    stale["tensorrt"] = "0.0.0"
    side.write_text(json.dumps(stale))
    messages.clear()
    rebuilt = build_engine(onnx_path, tmp_path / "out", **kwargs, log=messages.append)
    assert rebuilt.path == first and rebuilt.origin == "built"
    assert any("stale" in m for m in messages) and not any(m.startswith("reusing") for m in messages)
    assert json.loads(side.read_text())["tensorrt"] == trt_version


@pytest.mark.tensorrt
def test_parser_errors_are_reported(tmp_path, trt_version):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    with pytest.raises(EdgekdError, match="tensorrt cannot parse"):
        build_engine(bad, tmp_path, precision="fp32", target=gpu_target(tmp_path), input_name="image",
                     input_shape_chw=(3, 16, 16), engine_cache=None, log=lambda m: None)


@pytest.mark.tensorrt
def test_wrong_input_name_is_reported(tmp_path, trt_version):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    with pytest.raises(EdgekdError, match="has no input 'feat0'"):
        build_engine(onnx_path, tmp_path, precision="fp32", target=gpu_target(tmp_path), input_name="feat0",
                     input_shape_chw=(3, 16, 16), engine_cache=None, log=lambda m: None)


@pytest.mark.tensorrt
def test_a_second_bundle_takes_the_engine_from_the_cache(tmp_path, trt_version):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    kwargs = dict(precision="fp16", target=gpu_target(tmp_path), input_name="image", input_shape_chw=(3, 16, 16),
                  engine_cache=tmp_path / "cache")
    first = build_engine(onnx_path, tmp_path / "bundle1", **kwargs, log=lambda m: None)
    assert first.origin == "built"
    timing = list((tmp_path / "cache" / "timing").glob("*.cache"))
    assert len(timing) == 1 and timing[0].stat().st_size > 0  # the timing cache lives in the engine cache
    messages: list[str] = []
    second = build_engine(onnx_path, tmp_path / "bundle2", **kwargs, log=messages.append)
    assert second.origin == "cache" and second.path.read_bytes() == first.path.read_bytes()
    assert any(m.startswith("reusing cached engine") for m in messages)
    assert engine_record(second.path)["origin"] == "cache"


@pytest.mark.tensorrt
def test_dla_engine_has_one_static_batch_and_records_gpu_fallback(tmp_path, trt_version):
    import tensorrt as trt
    import yaml

    if trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores == 0:
        pytest.skip("this device has no DLA core")
    data = {"name": "test-dla", "description": "a device with a DLA core", "backend": "tensorrt",
            "precisions": ["fp16", "int8"], "default_precision": "fp16", "workspace_mib": 256, "dla_cores": 1,
            "batch": {"min": 1, "opt": 2, "max": 4}, "threads": None}
    (tmp_path / "dla.yaml").write_text(yaml.safe_dump(data))
    built = build_engine(tiny_onnx(tmp_path / "full.onnx"), tmp_path / "out", precision="fp16",
                         target=load_target(str(tmp_path / "dla.yaml")), input_name="image",
                         input_shape_chw=(3, 16, 16), dla_core=0, engine_cache=None, log=lambda m: None)
    assert built.device == "dla0" and built.batch == (DLA_BATCH,) * 3
    assert built.gpu_fallback is not None and built.path.name.endswith("-dla0.engine")
    record = engine_record(built.path)
    assert record["device"] == "dla0" and record["batch"] == [1, 1, 1]


def test_tensorrt_available_names_a_missing_native_library(tmp_path, monkeypatch):
    """A tensorrt package whose native library is missing is not reported as "not installed": the reason names
    what failed (here a stand-in package whose import raises ImportError for libnvinfer, as the real one does)."""
    pkg = tmp_path / "tensorrt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('libnvinfer.so.10: cannot open shared object file', "
                                     "name='tensorrt_bindings')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "tensorrt", raising=False)
    ok, why = tensorrt_available()
    assert not ok and "libnvinfer.so.10" in why and "not installed" not in why


# -- DLA per TensorRT version, TensorRT's constructors, the one logger, the engine cache key (issue 21) -----------
@pytest.mark.parametrize("version, refused", [("8.5.2.2", False), ("8.6.2", False), ("10.3.0.30", False),
                                              ("11.0.0", True), ("11.3.9", True), ("11.4.0", False), ("12.0", False)])
def test_dla_is_refused_on_the_tensorrt_11_releases_without_it(version, refused):
    problem = versions.dla_problem(version)
    assert (problem is not None) is refused
    if refused:
        assert version in problem and "\n" not in problem and "--dla-core" in problem


@pytest.mark.parametrize("version, precision, dla, unverified", [
    ("10.3.0", "int8", True, False), ("11.4.0", "int8", True, True), ("11.4.0", "fp16", True, False),
    ("11.4.0", "int8", False, False)])
def test_dla_int8_on_tensorrt_11_4_is_labelled_unverified(version, precision, dla, unverified):
    assert versions.dla_int8_unverified(version, precision, dla) is unverified


def test_a_dla_build_on_tensorrt_11_0_is_one_line_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, "11.1.0"))
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.1.0"))
    with pytest.raises(EdgekdError, match=r"TensorRT 11.1.0 cannot build for a DLA core") as err:
        build_engine(tiny_onnx(tmp_path / "full.onnx"), tmp_path / "out", precision="fp16",
                     target=load_target("agx-orin"), input_name="image", input_shape_chw=(3, 16, 16), dla_core=0,
                     engine_cache=tmp_path / "cache", log=lambda m: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


class _NullFactories:
    """Not TensorRT: constructors that fail the way pybind11 reports a nullptr from createInferBuilder/Runtime."""

    @staticmethod
    def Builder(logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    @staticmethod
    def Runtime(logger):
        return None


def test_tensorrt_that_cannot_start_is_one_line_naming_the_causes():
    for create, what in ((loader.create_builder, "builder"), (loader.create_runtime, "runtime")):
        with pytest.raises(EdgekdError) as err:
            create(_NullFactories, object())
        text = str(err.value)
        assert f"could not create its {what}" in text and "\n" not in text
        assert "out of memory" in text and "/dev/nvhost" in text and "video group" in text


class _Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class _ILogger:
    Severity = _Severity

    def __init__(self):
        pass


def test_one_tensorrt_logger_per_process():
    fake = types.SimpleNamespace(ILogger=_ILogger)
    seen: list = []
    first = loader.tensorrt_logger(fake, seen.append)
    first.log(_Severity.ERROR, "[x.cpp::f::1] broke")
    first.log(_Severity.INFO, "chatter")
    assert seen == ["tensorrt: (x.cpp::f::1) broke"] and first.errors == ["(x.cpp::f::1) broke"]
    later: list = []
    second = loader.tensorrt_logger(fake, later.append)
    assert second is first and second.errors == []  # the same object, now logging to the new sink
    second.log(_Severity.WARNING, "w")
    assert later == ["tensorrt: w"] and seen == ["tensorrt: (x.cpp::f::1) broke"]
    other = types.SimpleNamespace(ILogger=type("ILogger", (_ILogger,), {}))  # another tensorrt module (a test's)
    assert loader.tensorrt_logger(other) is not first


def test_the_engine_cache_key_has_the_l4t_release_and_edgekd_version():
    from edgekd import __version__

    settings = build_settings(10, "int8", dla=True, batch=(1, 1, 1))
    common = dict(onnx_sha256=SHA, precision="int8", trt_version="8.5.2.2", device="jetson-agx-xavier", sm="sm72",
                  dla_core=0, input_name="image", input_shape_chw=(3, 8, 8), workspace_mib=512, settings=settings)
    a = engine_meta(**common, l4t="35.3.1")
    b = engine_meta(**common, l4t="35.4.1")  # JetPack 5.1.1 vs 5.1.2: same TensorRT 8.5.2, another DLA compiler
    assert a["l4t"] == "35.3.1" and a["edgekd"] == __version__
    assert engine_cache_key(a) != engine_cache_key(b)
    assert engine_cache_key(a) != engine_cache_key({**a, "edgekd": "0.0.1"})


def test_the_engine_cache_option():
    from edgekd.device.options import engine_cache_choice

    assert engine_cache_choice(None) is True
    assert engine_cache_choice("off") is False and engine_cache_choice(" NONE ") is False
    assert engine_cache_choice("~/e") == Path("~/e").expanduser()


def test_tensorrt_available_needs_a_cuda_runtime(monkeypatch):
    """TensorRT importable but no CUDA runtime for edgekd's CUDA layer: not available (a build would compile every
    engine and fail only at verification)."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(cuda, "status",
                        lambda: cuda.CudaStatus(False, False, "no CUDA runtime found (looked in x)"))
    ok, why = tensorrt_available()
    assert not ok and why == "no CUDA runtime for edgekd's CUDA layer: no CUDA runtime found (looked in x)"

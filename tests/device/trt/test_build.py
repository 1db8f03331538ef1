"""TensorRT engine builds (edgekd.device.tensorrt.build).

The checks made before TensorRT is touched (the request, the one DLA rule, the version gate before any other
TensorRT name, the graph's input), the TensorRT calls of the weak- and strong-typing paths, the DLA fallback and the
engine inspector's layers, and reuse from the engine cache run everywhere. Where a test needs a ``tensorrt`` module
it is a fake, named so (``VersionOnlyTensorRT``, ``FakeTensorRT11``, ...): those test edgekd's decisions, never
TensorRT. The real builds are marked ``tensorrt`` and skip, with the reason :func:`tensorrt_available` gives,
wherever TensorRT or an NVIDIA GPU is missing (as on CI). The pure rules have their own files, one per module:
test_versions, test_settings, test_engine_cache, test_loader.

This folder mirrors ``edgekd/device/tensorrt/`` but is named ``trt``: pytest puts ``tests/device`` on ``sys.path``,
and a folder named ``tensorrt`` there would import as a namespace package ``tensorrt`` wherever TensorRT is not
installed, so every "is TensorRT here?" check would answer wrongly.
"""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.core.manifest import sha256_file
from edgekd.device import machine
from edgekd.device.compiler.targets import load_target
from edgekd.device.tensorrt import build as trt_build
from edgekd.device.tensorrt import loader
from edgekd.device.tensorrt.build import build_engine, parse_engine_information
from edgekd.device.tensorrt.engine_cache import (
    cached_engine_path,
    engine_cache_key,
    engine_meta,
    engine_record,
    sidecar_path,
)
from edgekd.device.tensorrt.loader import tensorrt_available
from edgekd.device.tensorrt.settings import DLA_BATCH, build_settings
from edgekd.device.tensorrt.versions import check_tensorrt, use_implicit_calibrator
from tests.helpers import assert_no_heavy_imports, gpu_target, put_engine, tiny_onnx, VersionOnlyTensorRT


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


def test_build_engine_refuses_an_unsupported_tensorrt_before_touching_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, "12.0.0"))
    monkeypatch.setitem(sys.modules, "tensorrt", VersionOnlyTensorRT("12.0.0"))
    with pytest.raises(EdgekdError, match=r"^TensorRT 12\.0\.0 is not supported: .*8\.5 to 11\.x"):
        build_engine(tiny_onnx(tmp_path / "full.onnx"), tmp_path / "out", precision="fp16",
                     target=load_target("orin-nano"), input_name="image", input_shape_chw=(3, 16, 16),
                     engine_cache=tmp_path / "cache", log=lambda m: None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


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


def test_a_dla_build_on_tensorrt_11_0_is_one_line_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, "11.1.0"))
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.1.0"))
    with pytest.raises(EdgekdError, match=r"TensorRT 11.1.0 cannot build for a DLA core") as err:
        build_engine(tiny_onnx(tmp_path / "full.onnx"), tmp_path / "out", precision="fp16",
                     target=load_target("agx-orin"), input_name="image", input_shape_chw=(3, 16, 16), dla_core=0,
                     engine_cache=tmp_path / "cache", log=lambda m: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()

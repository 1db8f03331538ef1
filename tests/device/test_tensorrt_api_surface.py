"""API surface only — nothing is built or run; these are not TensorRT runs.

Every TensorRT name edgekd uses in ``edgekd/device/tensorrt/`` (the only package that imports ``tensorrt``)
(classes, enums and their members, methods, properties and whether they can be set, keyword names and argument
counts against the pybind11 signatures, overridden interface methods) is checked against NVIDIA's real Python
bindings of TensorRT 8.6.1 (JetPack 6.0) and 10.3.0 (JetPack 6.1/6.2), imported in a child process against stub
libraries (``tests/trt_bindings.py``). The names are found by walking the sources (``SurfaceWalk``), so a new call
is checked without touching this file. Those tests skip, with the reason, when the wheels, a matching CPython
(the wheels are cp311) or ``cc``/``nm``/``ldd`` are missing.

The differences between the versions that edgekd's version branches exist for are recorded as tests too
(``FACTS``). TensorRT 8.5 (JetPack 5.1) and 11 have no wheel here: their names were compared by hand with
NVIDIA/TensorRT's ``release/8.5`` and ``release/11.0`` pybind11 sources (8.5 has every name edgekd uses; 11.0 lacks
exactly :data:`TRT11_REMOVED_USED`), and the strongly typed path edgekd takes on 11 is tested with fake modules in
``tests/device/trt/test_build.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from tests.trt_bindings import (
    REPO,
    find_wheels,
    parse_signatures,
    prepare,
    run_with_bindings,
    surface_code,
    why_unusable,
)

SOURCES = sorted((REPO / "edgekd/device/tensorrt").glob("*.py"))
VERSIONS = ("8.6.1", "10.3.0")

#: Names the walk must have seen, so it cannot pass by checking nothing.
MUST_SEE = {
    "Builder.build_serialized_network", "BuilderFlag.FP16", "BuilderFlag.GPU_FALLBACK", "DeviceType.DLA",
    "EngineInspector.get_engine_information", "IBuilderConfig.DLA_core (set)", "IBuilderConfig.can_run_on_DLA",
    "IBuilderConfig.profiling_verbosity (set)", "IBuilderConfig.set_memory_pool_limit",
    "IBuilderConfig.set_timing_cache(ignore_mismatch=)", "ICudaEngine.get_tensor_profile_shape",
    "ICudaEngine.num_io_tensors", "IExecutionContext.execute_async_v3", "IInt8EntropyCalibrator2.get_batch (override)",
    "ILogger.log (override)", "LayerInformationFormat.JSON", "MemoryPoolType.WORKSPACE",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "OnnxParser.parse_from_file", "ProfilingVerbosity.DETAILED",
    "Runtime.DLA_core (set)", "TensorIOMode.INPUT", "nptype",
    # the one DLA rule asks the device: the builder (build) and the runtime (runner) say how many DLA cores it has
    "Builder.num_DLA_cores", "Runtime.num_DLA_cores",
    # issue 21: the one logger (ILogger subclass), the two constructors behind create_builder/create_runtime, and
    # the calibrator that DLA int8 uses on 8.5-10.x (so it must exist in 10.3, not only in 8.6)
    "ILogger.Severity", "ILogger.__init__", "Builder", "Runtime", "IBuilderConfig.int8_calibrator (set)",
    "IInt8EntropyCalibrator2.__init__",
}

#: The names edgekd uses that TensorRT 11 removed (NVIDIA's "Migrating Python code from 10.x to 11.x" list and
#: release/11.0's python/src, where pyInt8.cpp is gone and BuilderFlag has no FP16/INT8). edgekd reaches them only
#: on the weak-typing (8.x-10.x) and implicit-calibration (8.x DLA) paths; a new use must be added here knowingly.
TRT11_REMOVED_USED = {
    "BuilderFlag.FP16", "BuilderFlag.INT8", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
    "IBuilderConfig.int8_calibrator (set)", "IBuilderConfig.set_calibration_profile", "IInt8EntropyCalibrator2",
    "IInt8EntropyCalibrator2.__init__", "IInt8EntropyCalibrator2.get_batch (override)",
    "IInt8EntropyCalibrator2.get_batch_size (override)", "IInt8EntropyCalibrator2.read_calibration_cache (override)",
    "IInt8EntropyCalibrator2.write_calibration_cache (override)",
}
TRT11_REMOVED = TRT11_REMOVED_USED | {
    "BuilderFlag.BF16", "BuilderFlag.FP8", "BuilderFlag.INT4", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
    "BuilderFlag.PREFER_PRECISION_CONSTRAINTS", "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8",
    "IBuilderConfig.set_quantization_flag",
}

#: What each version has (True/False) or says, for the names edgekd's version branches are about.
FACTS = {
    "8.6.1": {
        "IBuilderConfig.max_workspace_size": True,  # deprecated; edgekd uses set_memory_pool_limit everywhere
        "Builder.build_engine": True,
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": True,  # needed: 8.x networks are implicit batch without it
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED": False,
        "MemoryPoolType.WORKSPACE": True,
        "ICudaEngine.num_bindings": True,
        "IExecutionContext.execute_async_v2": True,
        "ProfilingVerbosity.DETAILED": True,
        "ProfilingVerbosity.VERBOSE": True,  # the old name of DETAILED
        "IBuilderConfig.can_run_on_DLA": True,
        "IEngineInspector": False,  # the Python class is EngineInspector
        "EngineInspector": True,
        "explicit batch deprecated": False,
        "calibrators deprecated": False,
    },
    "10.3.0": {
        "IBuilderConfig.max_workspace_size": False,  # removed in 10
        "Builder.build_engine": False,  # removed in 10: build_serialized_network only
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": True,  # still there, "[DEPRECATED] Ignored"
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED": True,
        "MemoryPoolType.WORKSPACE": True,
        "ICudaEngine.num_bindings": False,  # the binding-index API is gone: name-based tensors only
        "IExecutionContext.execute_async_v2": False,
        "ProfilingVerbosity.DETAILED": True,
        "ProfilingVerbosity.VERBOSE": False,
        "IBuilderConfig.can_run_on_DLA": True,
        "IEngineInspector": False,
        "EngineInspector": True,
        "explicit batch deprecated": True,  # "[DEPRECATED] Ignored because networks are always explicit batch"
        "calibrators deprecated": True,  # "[DEPRECATED] Deprecated in TensorRT 10.1. Superseded by explicit ..."
    },
}

_FACTS_CODE = r'''
import json
import tensorrt as trt

def has(path):
    obj = trt
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True

def doc_line(obj, start):
    return next((l.strip() for l in (obj.__doc__ or "").splitlines() if l.strip().startswith(start)), "")

facts = {name: has(name) for name in NAMES}
facts["explicit batch deprecated"] = "DEPRECATED" in doc_line(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
facts["calibrators deprecated"] = ("DEPRECATED" in (trt.IInt8EntropyCalibrator2.__doc__ or "")
                                   and "DEPRECATED" in doc_line(trt.IBuilderConfig, ":ivar int8_calibrator"))
print(json.dumps(facts))
'''

# Deliberate mistakes: the walk must report each one (on every version), so a pass above means something.
PROBE_MISTAKES = '''
def probe(trt, config: tensorrt.IBuilderConfig, engine: tensorrt.ICudaEngine):
    trt.BuilderFlag.FP17
    config.set_timing_cache(config.create_timing_cache(b""), ignore=False)
    config.set_flag()
    config.no_such_method()
    engine.num_io_tensors = 3
'''
# Names one version has and the other lacks, as the walk sees them.
PROBE_8X_ONLY = '''
def workspace(config: tensorrt.IBuilderConfig, engine: tensorrt.ICudaEngine, context: tensorrt.IExecutionContext):
    config.max_workspace_size = 1 << 20
    engine.num_bindings
    context.execute_async_v2([0, 0], 0)
'''
PROBE_10_ONLY = '''
def strong(trt, builder: tensorrt.Builder):
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
'''


@pytest.fixture(scope="module", params=VERSIONS)
def bindings(request, tmp_path_factory):
    """NVIDIA's bindings of one TensorRT version, ready to import in a child process (or a skip saying why)."""
    version = request.param
    wheel = find_wheels().get(version)
    if wheel is None:
        pytest.skip(f"no tensorrt bindings wheel {version} (looked in $EDGEKD_TRT_WHEELS and shared/tensorrt)")
    reason = why_unusable(wheel)
    if reason:
        pytest.skip(reason)
    return prepare(wheel, tmp_path_factory.mktemp(f"trt-{version}"))


@pytest.fixture(scope="module")
def reports(bindings, tmp_path_factory) -> Dict[str, dict]:
    """One child process per version: the walk over edgekd's sources and over the probes."""
    probes = tmp_path_factory.mktemp(f"probes-{bindings.version}")
    paths = {"edgekd": SOURCES}
    for name, text in (("mistakes", PROBE_MISTAKES), ("8x", PROBE_8X_ONLY), ("10", PROBE_10_ONLY)):
        (probes / f"{name}.py").write_text(text)
        paths[name] = [probes / f"{name}.py"]
    spec = probes / "paths.json"
    spec.write_text(json.dumps({k: [str(p) for p in v] for k, v in paths.items()}))
    code = ("import json\nfrom tests.trt_bindings import surface_report\n"
            f"paths = json.loads(open({str(spec)!r}).read())\n"
            "print(json.dumps({k: surface_report(v) for k, v in paths.items()}))\n")
    return run_with_bindings(bindings, code)


def test_the_stubs_stand_in_for_tensorrts_native_libraries(bindings):
    expected = {"8.6.1": {"libnvinfer.so.8", "libnvonnxparser.so.8", "libnvparsers.so.8", "libnvinfer_plugin.so.8"},
                "10.3.0": {"libnvinfer.so.10", "libnvonnxparser.so.10", "libnvinfer_plugin.so.10"}}
    assert set(bindings.stubbed) == expected[bindings.version]
    assert "createInferBuilder_INTERNAL" in bindings.symbols and "createNvOnnxParser_INTERNAL" in bindings.symbols


def test_the_real_module_imports(bindings):
    info = run_with_bindings(bindings, "import json, tensorrt as trt\n"
                                       "print(json.dumps([trt.__version__, trt.tensorrt.__file__]))")
    assert info[0] == bindings.version
    assert info[1].startswith(str(bindings.site))  # NVIDIA's extension module, not a stand-in


def test_edgekd_uses_only_names_this_tensorrt_has(reports):
    assert reports["edgekd"]["problems"] == []


def test_the_walk_saw_every_call_that_matters(reports):
    assert MUST_SEE <= set(reports["edgekd"]["checked"])


def test_the_walk_reports_mistakes(reports):
    problems = reports["mistakes"]["problems"]
    assert len(problems) == 5, problems
    for text in ("trt.BuilderFlag.FP17: no such name", "keywords ['ignore']", "IBuilderConfig.set_flag called with 0",
                 "IBuilderConfig.no_such_method: no such", "ICudaEngine.num_io_tensors is assigned but is not"):
        assert any(text in p for p in problems), (text, problems)


def test_names_that_differ_between_versions(reports, bindings):
    old, new = reports["8x"]["problems"], reports["10"]["problems"]
    if bindings.version.startswith("8."):
        assert old == [] and len(new) == 1 and "STRONGLY_TYPED: no such name" in new[0]
    else:
        assert len(old) == 3 and new == []
        assert any("IBuilderConfig.max_workspace_size is assigned but is not a settable" in p for p in old)


def test_recorded_facts(bindings):
    code = _FACTS_CODE.replace("NAMES", repr([k for k in FACTS[bindings.version] if " " not in k]))
    assert run_with_bindings(bindings, code) == FACTS[bindings.version]


def test_names_removed_in_tensorrt_11_are_only_those_of_the_weak_typing_paths(reports):
    """TensorRT 11 has no wheel here: NVIDIA's removal list is crossed with what edgekd uses (walked on 8.6/10.3).
    The strongly typed path that must avoid them is tested in trt/test_build.py."""
    assert set(reports["edgekd"]["checked"]) & TRT11_REMOVED == TRT11_REMOVED_USED


# -- the signature parser (no bindings needed) -------------------------------------------------------------------
def test_parse_pybind_signatures():
    doc = ("set_timing_cache(self: tensorrt.tensorrt.IBuilderConfig, cache: tensorrt.tensorrt.ITimingCache, "
           "ignore_mismatch: bool) -> bool\n\n    Attach a timing cache\n")
    (sig,) = parse_signatures("set_timing_cache", doc)
    assert sig.params == ("cache", "ignore_mismatch") and sig.returns == "bool" and not sig.varargs
    assert sig.accepts(1, ["ignore_mismatch"]) and not sig.accepts(1, ["ignore"]) and not sig.accepts(1, [])

    doc = ("deserialize_cuda_engine(*args, **kwargs)\nOverloaded function.\n\n"
           "1. deserialize_cuda_engine(self: tensorrt.tensorrt.Runtime, serialized_engine: buffer) "
           "-> tensorrt.tensorrt.ICudaEngine\n\n"
           "2. deserialize_cuda_engine(self: tensorrt.tensorrt.Runtime, stream_reader: tensorrt.tensorrt.IStreamReader)"
           " -> tensorrt.tensorrt.ICudaEngine\n")
    sigs = parse_signatures("deserialize_cuda_engine", doc)
    assert [s.params for s in sigs] == [(), ("serialized_engine",), ("stream_reader",)]
    assert sigs[0].varargs and sigs[1].returns == "ICudaEngine"

    doc = ("__init__(self: tensorrt.tensorrt.Logger, min_severity: tensorrt.tensorrt.ILogger.Severity = "
           "<Severity.WARNING: 1>) -> None")
    (sig,) = parse_signatures("__init__", doc)
    assert sig.params == ("min_severity",) and sig.defaults == (True,) and sig.accepts(0, [])
    doc = "create_engine_inspector(self: tensorrt.tensorrt.ICudaEngine) -> nvinfer1::IEngineInspector"
    assert parse_signatures("create_engine_inspector", doc)[0].returns == "IEngineInspector"
    assert parse_signatures("get_shape", "set_shape(self: X, a: Tuple[int, int]) -> None") == []


def test_surface_code_is_a_program():
    code = surface_code([Path("a.py")])
    compile(code, "<surface>", "exec")
    assert "surface_report(['a.py'])" in code

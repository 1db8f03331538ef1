"""Graphs every TensorRT ONNX parser edgekd targets reads as ONNX means them (issue 10, defect 3).

The rule table below was read in NVIDIA's parser sources (github.com/onnx/onnx-tensorrt, release branches); it is
kept here, apart from :mod:`edgekd.device.tensorrt.parser_rules`, so the module is checked against the facts rather
than against itself. No TensorRT is needed: these are properties of the ONNX graphs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import load_manifest
from edgekd.device.compiler import builder
from edgekd.device.tensorrt import loader
from edgekd.device.tensorrt.parser_rules import check_bundle_graphs, graph_problems
from edgekd.device.tensorrt.versions import parse_version
from edgekd.device.runners.onnxruntime import create_session
from tests.helpers import gpu_target

REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@dataclass(frozen=True)
class Parser:
    """What one TensorRT release's ONNX parser accepts, and where in its sources that was read."""

    release: str  # TensorRT version (what `tensorrt.__version__` starts with)
    max_opset: int  # docs/operators.md, line 5 of the branch
    reads_axes_input: frozenset  # Reduce ops whose `axes` *input* (opset 13 ReduceSum, opset 18 the rest) it reads
    source: str


PARSERS = [
    Parser("8.5", 17, frozenset({"ReduceSum", "ReduceLogSum"}),
           "onnx-tensorrt 8.5-GA: docs/operators.md:5 'up to Opset 17'; builtin_op_importers.cpp:3604-3672 (only "
           "ReduceSum, and ReduceLogSum through it, pass inputs.at(1) on); onnx2trt_utils.cpp:1698 reduceTensor "
           "(no axes attribute, no axes input: iota over every dimension)"),
    Parser("8.6", 17, frozenset({"ReduceSum", "ReduceLogSum"}),
           "onnx-tensorrt 8.6-GA: docs/operators.md:5 'up to Opset 17'; builtin_op_importers.cpp:3638-3706; "
           "onnx2trt_utils.cpp:1599 reduceTensor (same code as 8.5)"),
    Parser("10.3", 20, frozenset(REDUCE_OPS),
           "onnx-tensorrt 10.0-GA / 10.1-GA (and main): docs/operators.md:5 'opset 9 to opset 20', 'axes must be an "
           "initializer'; onnxOpImporters.cpp:4303-4327 (10.0-GA) pass inputs.at(1) for every Reduce op; "
           "importerUtils.cpp:1297 reduceTensor reads it. 10.3's own branch was not read: assumed unchanged"),
]


def accepted(parser: Parser, model: onnx.ModelProto) -> list[str]:
    """What ``parser`` would misread in ``model`` according to the table (the test's own reading of the rules)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    bad = [f"opset {opset}"] if opset > parser.max_opset else []
    bad += [n.op_type for n in model.graph.node if n.op_type in REDUCE_OPS and len(n.input) > 1 and n.input[1]
            and n.op_type not in parser.reads_axes_input]
    return bad


def _reduce_model(op: str, opset: int, axes_as_input: bool) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")] if axes_as_input else []
    node = (helper.make_node(op, ["x", "axes"], ["y"], name="r") if axes_as_input
            else helper.make_node(op, ["x"], ["y"], name="r", axes=[1]))
    graph = helper.make_graph([node], "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what every ONNX Runtime edgekd supports reads (1.19 on Python 3.8 stops at IR 10)
    return model


def _cases():
    for op in REDUCE_OPS:
        new = 13 if op == "ReduceSum" else 18
        yield op, new, True
        yield op, new - 1, False
    yield "ReduceMean", 19, True  # beyond 8.x's documented opsets, within 10.x's
    yield "ReduceMean", 21, True  # beyond every documented range


@pytest.mark.parametrize("parser", PARSERS, ids=[p.release for p in PARSERS])
@pytest.mark.parametrize("op, opset, axes_as_input", list(_cases()))
def test_parser_rules_agree_with_the_rule_table(parser, op, opset, axes_as_input):
    model = _reduce_model(op, opset, axes_as_input)
    expected = accepted(parser, model)
    found = graph_problems(model, parse_version(parser.release))
    assert bool(found) == bool(expected), (parser.source, expected, found)


def test_opset_18_reduce_mean_is_what_trt8_misreads(tmp_path):
    """The defect itself, shown on ONNX Runtime: ReduceMean over axis 1 vs. what TensorRT 8.x builds from the same
    node (every axis reduced; see the source lines in PARSERS)."""
    model = _reduce_model("ReduceMean", 18, axes_as_input=True)
    path = tmp_path / "reduce18.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    y = create_session(path).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    assert not np.allclose(y, x.mean(keepdims=True))  # what an all-axes reduce would have given
    assert graph_problems(model, (8, 5)) and graph_problems(model, (8, 6)) and not graph_problems(model, (10, 3))


# ----------------------------------------------------------------------------------- the real exported graphs


def _graphs(root: Path) -> list[Path]:
    m = load_manifest(root)
    return [m.full_graph(), *(m.segment_graph(i) for i in range(m.num_exits))]


def assert_every_parser_reads(paths: list[Path]) -> None:
    """Opset within TensorRT 8.5's range (and Q/DQ's >= 13), no Reduce axes as an input, no non-standard node, and
    nothing any parser of the table would misread."""
    for path in paths:
        model = onnx.load(str(path))
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert 13 <= opset <= PARSERS[0].max_opset, (path.name, opset)
        reduce_inputs = [n.name for n in model.graph.node if n.op_type.startswith("Reduce") and len(n.input) > 1]
        assert reduce_inputs == [], (path.name, reduce_inputs)
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, path.name
        for parser in PARSERS:
            assert accepted(parser, model) == [], (path.name, parser.release)
            assert graph_problems(model, parse_version(parser.release)) == [], (path.name, parser.release)
    for parser in PARSERS:
        assert check_bundle_graphs(paths, parser.release + ".0") is None


def test_exported_graphs_are_read_right_by_every_parser(tiny_bundle):
    paths = _graphs(tiny_bundle)
    assert_every_parser_reads(paths)
    for path in paths:  # the pooling is GlobalAveragePool, the op every parser imports as pooling
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert "GlobalAveragePool" in ops and "ReduceMean" not in ops and "ReduceSum" not in ops, path.name


class _StopBeforeEngines(Exception):
    pass


def _graphs_of_a_tensorrt_build(bundle: Path, precision: str, version: str, tmp_path: Path, monkeypatch,
                                 **options) -> list[Path]:
    """Run ``build_bundle`` for a TensorRT target as if TensorRT ``version`` were installed, up to the engines; return
    copies of the ONNX graphs it would give TensorRT (full first, then the segments)."""
    kept = tmp_path / "graphs"

    def engines(tmp, plan, graphs, calib_images, log, float_nodes=0):
        kept.mkdir()
        for key, path in graphs.items():
            shutil.copyfile(path, kept / f"{key}.onnx")
        raise _StopBeforeEngines

    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, version))
    monkeypatch.setattr(builder, "resolve_target", lambda name, backend: gpu_target(tmp_path))
    monkeypatch.setattr(builder, "_engines_for", engines)
    with pytest.raises(_StopBeforeEngines):
        builder.build_bundle(bundle, precision=precision, backend="tensorrt", out=tmp_path / "out", cache_dir=None,
                             **{"max_drop": 100.0, **options})
    n = load_manifest(bundle).num_exits
    return [kept / "full.onnx", *(kept / f"segment{i}.onnx" for i in range(n))]


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_tensorrt_build_graphs_keep_the_properties(tiny_bundle, tmp_path, monkeypatch, precision):
    """The INT8 (TensorRT Q/DQ form) and FP16 graphs a TensorRT 8.5 build would compile stay readable too."""
    paths = _graphs_of_a_tensorrt_build(tiny_bundle, precision, "8.5.2.2", tmp_path, monkeypatch)
    assert_every_parser_reads(paths)
    if precision == "int8":
        assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(paths[0])).graph.node}


def test_tensorrt_mixed_precision_graphs_keep_the_properties(tiny_bundle, tmp_path, monkeypatch):
    """A TensorRT-form INT8 build forced over budget (calibrated on half-brightness images) gets mixed precision: the
    graphs TensorRT would compile have float nodes (no DequantizeLinear feeding them), keep the TensorRT Q/DQ form
    (zero points 0) elsewhere, and stay readable by every parser."""
    import numpy as np

    with np.load(tiny_bundle / "calib.npz") as f:
        np.savez(tmp_path / "dark.npz", images=(f["images"] // 2).astype(np.uint8))
    paths = _graphs_of_a_tensorrt_build(tiny_bundle, "int8", "8.6.1", tmp_path, monkeypatch, max_drop=1.0,
                                        calib_data=tmp_path / "dark.npz")
    assert_every_parser_reads(paths)
    full = onnx.load(str(paths[0])).graph
    producers = {o: n for n in full.node for o in n.output}
    convs = [n for n in full.node if n.op_type == "Conv"]
    fed_by_dq = [any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input[:1])
                 for n in convs]
    assert any(fed_by_dq) and not all(fed_by_dq)  # some convolutions stayed float, the rest are int8
    zero_points = [onnx.numpy_helper.to_array(t) for t in full.initializer if t.name.endswith("zero_point")]
    assert zero_points and all((z == 0).all() and z.dtype == np.int8 for z in zero_points)


def test_onnxruntime_int8_build_graphs_keep_the_properties(tiny_bundle, tmp_path):
    built = builder.build_bundle(tiny_bundle, precision="int8", backend="onnxruntime", out=tmp_path / "int8",
                                 cache_dir=None, max_drop=100.0)
    assert_every_parser_reads(_graphs(built.root))


# --------------------------------------------------------------------------------- bundles exported before (opset 18)

OLD = Path(__file__).resolve().parents[2] / "fixtures" / "bundle-abf6d4b"


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.2.3"])
def test_old_opset_18_bundle_is_refused_for_tensorrt_8_before_any_work(tmp_path, monkeypatch, version):
    bundle = tmp_path / "old"
    shutil.copytree(OLD, bundle)

    def no_work(*args, **kwargs):
        raise AssertionError("the build started working before refusing the bundle")

    monkeypatch.setattr(loader, "tensorrt_available", lambda: (True, version))
    monkeypatch.setattr(builder, "resolve_target", lambda name, backend: gpu_target(tmp_path))
    monkeypatch.setattr(builder, "full_probs", no_work)
    monkeypatch.setattr(builder, "_bundle_calib", no_work)
    with pytest.raises(EdgekdError) as info:
        builder.build_bundle(bundle, precision="int8", backend="tensorrt", out=tmp_path / "out", cache_dir=None)
    message = str(info.value)
    assert "\n" not in message
    assert f"TensorRT {version}" in message and "axes as an input" in message and "re-export" in message
    assert not (tmp_path / "out").exists()


def test_old_opset_18_bundle_still_builds_for_tensorrt_10(tmp_path, monkeypatch):
    """TensorRT 10's parser reads opset 18 Reduce axes: the old bundle is not refused there."""
    bundle = tmp_path / "old"
    shutil.copytree(OLD, bundle)
    paths = _graphs_of_a_tensorrt_build(bundle, "fp32", "10.3.0", tmp_path, monkeypatch)
    assert all(p.is_file() for p in paths)
    assert check_bundle_graphs(paths, "10.3.0") is None and check_bundle_graphs(paths, "8.6.2") is not None


def test_versions_it_cannot_judge_are_not_refused():
    paths = _graphs(OLD)
    assert parse_version("8.6.2.3") == (8, 6) and parse_version("unknown") == (0, 0)
    assert check_bundle_graphs(paths, "unknown") is None

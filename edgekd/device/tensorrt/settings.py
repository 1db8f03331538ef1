"""What to ask TensorRT for, decided before TensorRT is touched: the build settings per TensorRT major, precision
and device (:func:`build_settings`), the optimization profile's batches (:func:`profile_batches`, one static batch
on a DLA core), and the ONNX graph's facts read with onnx (:func:`graph_facts`) with the precision each graph can
be built as (:func:`precision_problem`).

Precision (:func:`build_settings`):

* TensorRT 8.5-10.x (weak typing): fp32: no flag. fp16: the FP16 builder flag. int8: the graph is an
  explicit-quantization (Q/DQ) ONNX graph; INT8 and FP16 flags are set and TensorRT takes the scales from the Q/DQ
  nodes, no calibrator. The one exception is the DLA, which takes only implicit quantization on every TensorRT
  that has a calibrator (8.5-10.x): there the float graph is calibrated with ``IInt8EntropyCalibrator2``
  (:mod:`edgekd.device.tensorrt.calibrator`, :func:`~edgekd.device.tensorrt.versions.use_implicit_calibrator`).
* TensorRT 11 removed the FP16/INT8 builder flags, the calibrators and ``EXPLICIT_BATCH``; networks are always
  strongly typed. The precision comes from the graph: fp16 from the FP16 ONNX graph edgekd converts, int8 from its
  Q/DQ nodes (layers outside Q/DQ pairs keep the graph's float32), fp32 from the exported graph.

Pure (onnx only), so every decision is tested on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekd.core.errors import EdgekdError
from edgekd.core.onnx_graph import OnnxFormatError, read_graph
from edgekd.device.tensorrt.versions import STRONGLY_TYPED_MAJOR, use_implicit_calibrator


#: The batch of every DLA engine: the DLA needs min = opt = max, and 1 is the batch every caller can feed.
DLA_BATCH = 1


def profile_batches(target_batch: tuple[int, int, int], *, dla: bool, onnx_batch: int = -1) -> tuple[int, int, int]:
    """The optimization profile's (min, opt, max) batch: the ONNX graph's own batch when it is fixed (> 0), else
    :data:`DLA_BATCH` three times on a DLA core (static shapes only), else the device target's batch range."""
    if onnx_batch > 0:
        return (onnx_batch,) * 3
    if dla:
        return (DLA_BATCH,) * 3
    low, opt, high = (int(b) for b in target_batch)
    return (low, opt, high)


@dataclass(frozen=True)
class BuildSettings:
    """How TensorRT is asked to build one engine, derived from the TensorRT major, precision and device alone (so
    it can be tested without TensorRT and is part of the engine cache key)."""

    typing: str  # "weak": builder flags choose the precisions (8.x-10.x); "strong": the graph's types do (11)
    flags: tuple[str, ...]  # the BuilderFlag names set, in order
    explicit_batch_flag: bool  # create the network with EXPLICIT_BATCH (8.x; 10 ignores it, 11 removed it)
    calibration: str | None  # int8: "explicit" (Q/DQ scales) or "implicit" (entropy calibrator); else None
    batch: tuple[int, int, int]  # the optimization profile's min/opt/max batch


def build_settings(major: int, precision: str, *, dla: bool, batch: tuple[int, int, int]) -> BuildSettings:
    """The :class:`BuildSettings` for TensorRT ``major``, ``precision`` and a DLA or GPU build."""
    strong = major >= STRONGLY_TYPED_MAJOR
    flags = []
    if not strong:
        if precision in ("fp16", "int8"):
            flags.append("FP16")  # int8: layers without Q/DQ scales may still run in fp16
        if precision == "int8":
            flags.append("INT8")
    if dla:
        flags.append("GPU_FALLBACK")
    calibration = None
    if precision == "int8":
        calibration = "implicit" if use_implicit_calibrator(major, dla) else "explicit"
    return BuildSettings(typing="strong" if strong else "weak", flags=tuple(flags), explicit_batch_flag=major < 10,
                         calibration=calibration, batch=tuple(int(b) for b in batch))  # type: ignore[arg-type]


@dataclass(frozen=True)
class GraphFacts:
    """What the build needs to know about an ONNX graph: its inputs (dims, -1 where symbolic), the float types of
    its weights and casts, and whether it carries Q/DQ nodes."""

    inputs: dict[str, tuple[int, ...]]
    float_types: frozenset[str]
    has_qdq: bool


def graph_facts(onnx_path: str | Path) -> GraphFacts:
    """:class:`GraphFacts` of ``onnx_path`` (external weights are not loaded)."""
    import onnx

    try:
        model = read_graph(onnx_path, weights=False)
    except OnnxFormatError as exc:
        raise EdgekdError(f"tensorrt cannot parse {onnx_path}: {exc}") from None
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in weights:
            continue
        dims = value.type.tensor_type.shape.dim
        inputs[value.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.DOUBLE: "float64"}
    found = {names[t.data_type] for t in graph.initializer if t.data_type in names}
    found |= {names[v.type.tensor_type.elem_type] for v in [*graph.input, *graph.output, *graph.value_info]
              if v.type.tensor_type.elem_type in names}
    has_qdq = False
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            has_qdq = True
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to in names:
                found.add(names[to])
    return GraphFacts(inputs=inputs, float_types=frozenset(found), has_qdq=has_qdq)


def precision_problem(precision: str, settings: BuildSettings, facts: GraphFacts, name: str) -> str | None:
    """Why the graph ``name`` cannot be built as ``precision`` with ``settings`` (None when it can)."""
    if facts.has_qdq and precision != "int8":
        return f"{name} has Q/DQ nodes: build it as int8, or use the float graph for {precision}"
    if settings.calibration == "implicit" and facts.has_qdq:
        return (f"{name} has Q/DQ nodes, but int8 on a DLA core needs the float graph and calibration data "
                "(the DLA takes implicit quantization only)")
    if settings.typing == "strong":  # TensorRT 11: the precision is whatever the graph's types say
        if precision == "int8" and not facts.has_qdq:
            return f"{name} has no Q/DQ nodes; with TensorRT 11 int8 comes from the graph's Q/DQ nodes only"
        if precision == "fp16" and "float16" not in facts.float_types:
            return f"{name} has no float16 tensors; with TensorRT 11 fp16 comes from the FP16 graph edgekd converts"
        if precision == "fp32" and "float16" in facts.float_types:
            return f"{name} has float16 tensors; with TensorRT 11 that builds fp16: use the exported float32 graph"
    return None


__all__ = ["DLA_BATCH", "BuildSettings", "GraphFacts", "build_settings", "graph_facts", "precision_problem",
           "profile_batches"]

"""INT8 explicit quantization: Q/DQ graphs from ONNX Runtime's static quantization tooling (device side, no torch).

Activation ranges are calibrated once (:mod:`edgekd.device.compiler.calibration`, cached) and every backend gets,
from those same ranges, the Q/DQ form it runs fast:

``onnxruntime`` (CPU)
    uint8 activations (asymmetric), int8 per-channel symmetric weights, int32 biases: ORT fuses the pattern into
    ``QLinearConv`` / ``QGemm`` (u8s8). Symmetric int8 activations were slower than FP32 on ORT CPU. On x86 without
    VNNI ORT's u8s8 kernels can saturate with 8-bit weights and 7 bits (``reduce_range``) avoid it; ``edgekd build``
    measures which is closer to FP32 on the machine it runs on
    (:func:`edgekd.device.compiler.mixed.weight_range_choice`), and :func:`quantize_qdq` alone guesses from the CPU
    flags.
``tensorrt`` (8.5 / 8.6 / 10)
    symmetric int8 activations (zero point 0), symmetric per-channel int8 weights kept as float initializers behind a
    ``QuantizeLinear -> DequantizeLinear`` pair (TensorRT 8.x rejects an int8 initializer feeding a DQ), biases left in
    float (TensorRT cannot take an int32 DQ), one dedicated Q/DQ pair per consumer, and Q/DQ placed the way NVIDIA
    places it (TensorRT developer guide, "Explicit Quantization", Q/DQ placement recommendations; NVIDIA ModelOpt's
    ONNX quantizer, ``modelopt/onnx/quantization``: ``configure_ort`` and ``remove_partial_input_qdq``): on the
    *inputs* of quantized ops only, never on an op's output, and on a residual Add only on its residual (identity or
    shortcut) input -- not on the input from the convolution TensorRT fuses the Add into. TensorRT then fuses
    Conv(+BN)+Add+ReLU into one int8 convolution whose residual is read in int8 (see :func:`residual_add_branches`).

Both forms leave Gemm/MatMul outputs in float (the logits: ORT runs ``QGemm`` with a float output at no extra cost) and
quantize nothing from a Softmax on (confidences, the in-graph vote), so thresholds never compare 8-bit values. Graph
inputs and outputs keep their names and stay float32.

Models are pre-processed first (ORT basic graph optimizations, which fold BatchNorm into Conv, then
``quant_pre_process`` for shape inference). Pre-processing is deterministic, so ranges calibrated on one pre-processed
copy of a model fit any other; :func:`edgekd.device.compiler.calibration.compute_ranges` and :func:`quantize_qdq`
pre-process a model themselves when it has not been. Every ONNX Runtime session this needs works whether or not the
process already uses ORT's global thread pool (see :func:`edgekd.device.runners.onnxruntime.create_session`).
"""

from __future__ import annotations

import contextlib
import heapq
import inspect
import io
import platform
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import onnx

from edgekd.core.atomic import atomic_write
from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import RUNNER_BACKENDS
from edgekd.core.onnx_graph import read_graph
from edgekd.device.runners.onnxruntime import create_session as ort_session

Ranges = Dict[str, Tuple[float, float]]  # activation tensor name -> (low, high), from calibration (typing: Py 3.8)


#: Metadata ``quant_pre_process`` stamps on its output, and ours on a plain copy made when it failed.
_ORT_PRE_KEY, _ORT_PRE_VALUE = "onnx.quant.pre_process", "onnxruntime.quant"
_COPY_PRE_KEY = "edgekd.quant.pre_process"
#: Metadata naming the backend a Q/DQ graph was built for.
BACKEND_KEY = "edgekd.quant.backend"

#: Op types never quantized, nor anything after them: Softmax feeds the exit confidences and the vote.
_NEVER_QUANTIZED = frozenset({"Softmax"})
#: Weighted op types whose outputs stay float in the ONNX Runtime form (the logits and any dense layer feeding an
#: activation). The TensorRT form quantizes no op's output at all.
_FLOAT_OUTPUT_OPS = ["Gemm", "MatMul"]
#: Op types a residual Add's convolution branch may end in (TensorRT fuses the Add into the convolution; BN, when
#: not folded yet, fuses into it too).
_CONV_OPS = frozenset({"Conv", "ConvTranspose"})
_FUSED_INTO_CONV = frozenset({"BatchNormalization"})


def quant_op_types() -> list[str]:
    """Op types that are calibrated and quantized: everything ORT's static quantizer handles, minus Softmax.

    Calibration and quantization use the same list, so ranges computed by
    :func:`edgekd.device.compiler.calibration.compute_ranges` cover every tensor :func:`quantize_qdq` puts a Q/DQ
    pair on.
    """
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - _NEVER_QUANTIZED)


# --------------------------------------------------------------------------------------------------- helpers


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def require_model(onnx_path: str | Path) -> Path:
    """``onnx_path`` as a Path, or :class:`EdgekdError` if there is no such file."""
    path = Path(onnx_path)
    if not path.is_file():
        raise EdgekdError(f"ONNX model not found: {path}")
    return path


def _is_preprocessed(model: onnx.ModelProto) -> bool:
    props = {p.key: p.value for p in model.metadata_props}
    return props.get(_ORT_PRE_KEY) == _ORT_PRE_VALUE or _COPY_PRE_KEY in props


def _set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def _needed(node: onnx.NodeProto) -> list[str]:
    """The tensors ``node`` reads: its inputs and, for control flow, every name its subgraphs read."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                names.extend(_needed(inner))
    return names


def topological_sort(graph: onnx.GraphProto) -> bool:
    """Order ``graph.node`` so that every node comes after the producers of what it reads (stable: nodes keep
    their relative order where the data allows). ONNX requires this order (onnx.checker: "Nodes in a graph must
    be topologically sorted"); ONNX Runtime's quantizer can append Q/DQ nodes after their readers. Returns whether
    the order changed; a cycle (not a valid graph) is left as it is."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waits = [{producer[name] for name in _needed(node) if name in producer and producer[name] != i}
             for i, node in enumerate(nodes)]
    readers: dict[int, list[int]] = {}
    for i, deps in enumerate(waits):
        for dep in deps:
            readers.setdefault(dep, []).append(i)
    pending = [len(deps) for deps in waits]
    ready = [i for i, n in enumerate(pending) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for reader in readers.get(i, ()):
            pending[reader] -= 1
            if pending[reader] == 0:
                heapq.heappush(ready, reader)
    if len(order) != len(nodes) or order == list(range(len(nodes))):
        return False
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return True


def save_model_atomic(model: onnx.ModelProto, out_path: Path) -> None:
    data = model.SerializeToString()
    atomic_write(out_path, lambda f: f.write(data))


def graph_io(model: onnx.ModelProto) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(name, elem_type) of the graph's real inputs (initializers excluded) and outputs."""
    inits = {i.name for i in model.graph.initializer}
    ins = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input if i.name not in inits]
    outs = [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]
    return ins, outs


def _optimize_basic(src: Path, dest: Path) -> None:
    """ORT's basic graph optimizations (constant folding, Conv+BN/Add/Mul fusion), as ``quant_pre_process`` runs them
    -- but through :func:`ort_session`, so they also run in a process that uses a global thread pool."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dest)
    session = ort_session(src, so)
    del session


def preprocess_for_quantization(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Pre-process a model for quantization: ORT basic optimizations, then ``quant_pre_process`` (ONNX shape
    inference, the pre-processing metadata).

    Two of ``quant_pre_process``'s steps are replaced or skipped: the optimization runs first, in a session from
    :func:`ort_session` (ORT's own optimizer session fails -- silently skipped -- in a process that uses a global
    thread pool), and symbolic shape inference is skipped: ``onnxruntime.tools`` imports torch whenever it is
    installed, and the device side must not; ONNX shape inference covers CNNs (symbolic inference is for
    transformers' dynamic shapes).

    Written atomically to ``out_path``. If pre-processing fails, the model is copied unchanged (marked so that later
    steps do not try again) and a ``RuntimeWarning`` says so. The result is deterministic: the same input gives the
    same bytes, so its hash is a stable calibration-cache key.
    """
    src = require_model(onnx_path)
    model = read_graph(src)  # a readable ONNX file, or EdgekdError
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    from onnxruntime.quantization import quant_pre_process

    with tempfile.TemporaryDirectory(prefix=".edgekd-pre.", dir=out.parent) as tmp:
        optimized, tmp_out = Path(tmp) / "optimized.onnx", Path(tmp) / "pre.onnx"
        try:
            _optimize_basic(src, optimized)
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(optimized), str(tmp_out), skip_optimization=True, skip_symbolic_shape=True)
            result = read_graph(tmp_out)
        except Exception as e:  # noqa: BLE001 -- any failure of the optional step falls back to the plain model
            warnings.warn(f"quantization pre-processing failed for {src} ({one_line(e)}); using the model as is",
                          RuntimeWarning, stacklevel=2)
            result = model
            _set_metadata(result, _COPY_PRE_KEY, "copy")
        save_model_atomic(result, out)
    return out


@contextlib.contextmanager
def prepared_model(onnx_path: str | Path) -> Iterator[Path]:
    """A pre-processed copy of ``onnx_path`` in a temporary directory (deleted on exit).

    The copy matters even for an already pre-processed model: ORT's quantization helpers write scratch files next
    to the model they read, and the source directory may be read-only or shared.
    """
    model = read_graph(require_model(onnx_path))
    with tempfile.TemporaryDirectory(prefix="edgekd-quant.") as tmp:
        path = Path(tmp) / "model.onnx"
        if _is_preprocessed(model):
            onnx.save(model, str(path))
        else:
            preprocess_for_quantization(onnx_path, path)
        yield path


# --------------------------------------------------------------------------------------------------- quantize


def _backend_config(backend: str) -> tuple[Any, dict[str, Any]]:
    """(activation QuantType, extra_options) of one backend's Q/DQ form."""
    from onnxruntime.quantization import QuantType

    if backend == "onnxruntime":
        return QuantType.QUInt8, {
            "ActivationSymmetric": False,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": list(_FLOAT_OUTPUT_OPS),
        }
    return QuantType.QInt8, {
        "ActivationSymmetric": True,  # zero point 0
        "WeightSymmetric": True,
        "AddQDQPairToWeight": True,  # float weight -> Q -> DQ: TensorRT 8.x rejects an int8 initializer into DQ
        "DedicatedQDQPair": True,  # TensorRT wants one consumer per Q/DQ pair
        "QuantizeBias": False,  # TensorRT cannot import an int32 bias DQ
        # inputs only (as ModelOpt configures ORT): a Q/DQ pair on an Add's output would split Conv+Add+ReLU
        "OpTypesToExcludeOutputQuantization": quant_op_types(),
    }


def _with_softmax_ranges(ranges: Ranges, model: onnx.ModelProto) -> Ranges:
    """``ranges`` plus (0, 1) for every Softmax output it lacks. Softmax outputs are never quantized, but ONNX Runtime
    1.19 (the last for Python 3.8, so JetPack 5.1) assigns them a range even for excluded nodes and fails when the
    name is not in the ranges already."""
    extra = {out: (0.0, 1.0) for node in model.graph.node if node.op_type == "Softmax" for out in node.output[:1]}
    return {**extra, **ranges}


def _tensors_data(ranges: Mapping[str, tuple[float, float]]):
    """Ranges as ORT's ``TensorsData`` (a fresh one: the quantizer edits it in place)."""
    # from calibrate: ONNX Runtime 1.23 (what pip gives Python 3.10) does not re-export them from the package
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    data = {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in ranges.items()}
    return TensorsData(CalibrationMethod.MinMax, data)


def check_ranges(ranges: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Validated copy of ``ranges``: name -> (low, high), finite, low <= high."""
    if not isinstance(ranges, Mapping) or not ranges:
        raise EdgekdError("no activation ranges given (calibrate the model first)")
    out = {}
    for name, value in ranges.items():
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError) as e:
            raise EdgekdError(f"activation range of {name!r} is not a (low, high) pair: {value!r}") from e
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise EdgekdError(f"invalid activation range for {name!r}: ({lo}, {hi})")
        out[str(name)] = (lo, hi)
    return out


def u8s8_saturates() -> bool:
    """Whether ORT's CPU u8s8 kernels may saturate here: x86 without VNNI multiplies with VPMADDUBSW, whose int16
    pair sums overflow when both uint8 activations and int8 weights use their full range (ORT's own advice for such
    CPUs is ``reduce_range``: 7-bit weights). ARM, and x86 with AVX-VNNI / AVX512-VNNI, accumulate in int32."""
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume the worst for x86
        return True
    return re.search(r"\b(avx512_vnni|avx_vnni|avx512vnni)\b", flags) is None


def _nodes_after_softmax(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes fed, directly or not, by a Softmax: the probability side of the graph (confidences, the
    in-graph vote). They stay float: tiny tensors, no speed to gain, and 8 bits would round what thresholds compare.
    Unnamed nodes get a name first (node names are not tensor names: the calibrated ranges still fit)."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"edgekd_{node.op_type}_{i}"
    tainted: set[str] = set()
    names = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in _NEVER_QUANTIZED or any(i in tainted for i in node.input):
            tainted.update(node.output)
            names.append(node.name)
    return names


def _graph_maps(model: onnx.ModelProto) -> tuple[dict[str, onnx.NodeProto], dict[str, int], set[str]]:
    """(tensor -> producing node, tensor -> number of readers (graph outputs count), constant tensor names)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, int] = {}
    for name in [*(i for node in model.graph.node for i in node.input), *(o.name for o in model.graph.output)]:
        readers[name] = readers.get(name, 0) + 1
    consts = {i.name for i in model.graph.initializer}
    consts.update(node.output[0] for node in model.graph.node if node.op_type == "Constant")
    return producer, readers, consts


def _distances(tensor: str, producer: Mapping[str, onnx.NodeProto], consts: set[str]) -> dict[str, int]:
    """Every activation ``tensor`` depends on -> its distance in nodes (breadth first: the shortest)."""
    dist, frontier = {tensor: 0}, [tensor]
    while frontier:
        nxt = []
        for name in frontier:
            node = producer.get(name)
            for parent in (node.input if node is not None else ()):
                if parent and parent not in consts and parent not in dist:
                    dist[parent] = dist[name] + 1
                    nxt.append(parent)
        frontier = nxt
    return dist


def _fusible_conv_output(tensor: str, producer: Mapping[str, onnx.NodeProto], readers: Mapping[str, int]) -> bool:
    """Whether ``tensor`` comes from a convolution (through ops fused into it) and is read by nothing else than the
    Add it feeds: the condition for TensorRT to fuse that Add into the convolution."""
    while readers.get(tensor, 0) == 1 and tensor in producer:
        node = producer[tensor]
        if node.op_type in _CONV_OPS:
            return True
        if node.op_type not in _FUSED_INTO_CONV:
            return False
        tensor = node.input[0]
    return False


def residual_add_branches(model: onnx.ModelProto) -> dict[str, str]:
    """Residual Adds of a float graph: Add node name -> its *convolution branch* input, the one TensorRT fuses the
    Add into (so that input should carry no Q/DQ, and the other, the residual, should).

    An Add of two activations of one shape is residual when an input comes from a convolution read by nothing else
    (:func:`_fusible_conv_output`). When both do (a projection shortcut), the branch is the input farther from the
    two inputs' nearest common ancestor -- the block's main path, two convolutions deep, not its 1x1 shortcut -- as
    NVIDIA ModelOpt decides it (``build_non_residual_input_map``); a tie is no residual Add. Written for edgekd from
    that rule, not copied, with one difference: ancestors are tensors, graph inputs included, so a block whose input
    is a segment graph's input still finds it (ModelOpt's search walks nodes only, finds no common one there and
    then leaves the shortcut unquantized instead)."""
    producer, readers, consts = _graph_maps(model)
    shapes = {v.name: tuple(d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim)
              for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]
              if v.type.tensor_type.HasField("shape")}
    branches = {}
    for node in model.graph.node:
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        a, b = node.input
        if a in consts or b in consts or a == b or (a in shapes and b in shapes and shapes[a] != shapes[b]):
            continue
        fusible = [t for t in (a, b) if _fusible_conv_output(t, producer, readers)]
        if len(fusible) == 2:
            da, db = _distances(a, producer, consts), _distances(b, producer, consts)
            common = set(da) & set(db)
            if not common:
                continue
            lca = min(common, key=lambda t: (da[t] + db[t], max(da[t], db[t])))
            if da[lca] == db[lca]:
                continue
            fusible = [a if da[lca] > db[lca] else b]
        if len(fusible) == 1:
            branches[node.name] = fusible[0]
    return branches


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes nothing reads any more, then initializers nothing reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for node in model.graph.node for i in node.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    read = {i for node in model.graph.node for i in node.input}
    kept = [t for t in model.graph.initializer if t.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def unquantize_residual_branches(model: onnx.ModelProto, branches: Mapping[str, str]) -> int:
    """Feed each residual Add (``branches`` from :func:`residual_add_branches`) its convolution-branch tensor
    directly instead of through the Q -> DQ pair ORT's quantizer put there; the residual input keeps its pair.
    Returns how many Adds changed."""
    producer = {out: node for node in model.graph.node for out in node.output}
    changed = 0
    for node in model.graph.node:
        tensor = branches.get(node.name) if node.op_type == "Add" else None
        for k, name in enumerate(node.input if tensor else ()):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] == tensor:
                node.input[k] = tensor
                changed += 1
    _drop_unused(model)
    return changed


def _make_quantizer(model, per_channel: bool, reduce_range: bool, weight_type, activation_type, tensors_range,
                    exclude: list[str], op_types: list[str], extra: dict[str, Any], only: list[str] | None = None):
    """``QDQQuantizer`` across ORT versions (1.17 still took ``mode`` and ``static``)."""
    from onnxruntime.quantization import QDQQuantizer

    kwargs: dict[str, Any] = {
        "model": model, "per_channel": per_channel, "reduce_range": reduce_range, "weight_qType": weight_type,
        "activation_qType": activation_type, "tensors_range": tensors_range, "nodes_to_quantize": only or [],
        "nodes_to_exclude": exclude, "op_types_to_quantize": op_types, "extra_options": extra,
    }
    params = inspect.signature(QDQQuantizer.__init__).parameters
    if "mode" in params:
        from onnxruntime.quantization import QuantizationMode

        kwargs["mode"] = QuantizationMode.QLinearOps
    if "static" in params:
        kwargs["static"] = True
    return QDQQuantizer(**kwargs)


def quantize_qdq(onnx_path: str | Path, out_path: str | Path, ranges: Ranges, *, backend: str,
                 per_channel: bool = True, exclude_nodes: list[str] | None = None,
                 only_nodes: list[str] | None = None, reduce_range: bool | None = None) -> Path:
    """Write the Q/DQ INT8 graph of ``onnx_path`` for ``backend`` to ``out_path`` (atomically) from given ranges.

    Nothing is recalibrated: ``ranges`` (from :func:`edgekd.device.compiler.calibration.compute_ranges` or its cache,
    computed on the same pre-processed model) become the ``tensors_range`` of ORT's ``QDQQuantizer``. Weights are
    symmetric int8, per output channel unless ``per_channel`` is false. ``exclude_nodes`` (node names of the
    pre-processed graph) stay float, as does everything a Softmax feeds; ``only_nodes``, when given, are the only
    nodes quantized (a sensitivity probe, :mod:`edgekd.device.compiler.mixed`).

    ``reduce_range`` (7-bit weights), when not given, is guessed from the CPU flags: on for the ``onnxruntime``
    backend on x86 CPUs without VNNI, where ORT's u8s8 kernels may saturate (measured once: -3 points top-1 on a
    small ResNet, none with it), off elsewhere; ``edgekd build`` measures it instead
    (:func:`edgekd.device.compiler.mixed.weight_range_choice`). In the ``tensorrt`` form the residual Adds'
    convolution-branch inputs are then taken off their Q/DQ pairs (:func:`residual_add_branches`).
    """
    if backend not in RUNNER_BACKENDS:
        raise EdgekdError(f"unknown quantization backend {backend!r} (choose from {', '.join(RUNNER_BACKENDS)})")
    src = require_model(onnx_path)
    valid = check_ranges(ranges)
    if reduce_range is None:
        reduce_range = backend == "onnxruntime" and u8s8_saturates()
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    activation_type, extra = _backend_config(backend)
    with prepared_model(src) as prepared:
        model = load_model_with_shape_infer(prepared)  # value_info for every tensor: the quantizer needs the types
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 13:
            raise EdgekdError(f"{src} uses ONNX opset {opset}; INT8 Q/DQ graphs need opset >= 13 (re-export it)")
        tensors = {v.name for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
        if not tensors & valid.keys():
            raise EdgekdError(f"the activation ranges name no tensor of {src}: were they calibrated on another model?")
        before = graph_io(model)
        exclude = [*(exclude_nodes or []), *_nodes_after_softmax(model)]
        branches = residual_add_branches(model) if backend == "tensorrt" else {}
        quantizer = _make_quantizer(model, per_channel, bool(reduce_range), QuantType.QInt8, activation_type,
                                    _tensors_data(_with_softmax_ranges(valid, model)), exclude, quant_op_types(),
                                    extra, only_nodes)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quantizer.quantize_model()
        except ValueError as e:
            if "Quantization parameters are not specified" in str(e):
                raise EdgekdError(f"the activation ranges miss a tensor of {src} ({one_line(e)}); "
                                  "recalibrate on this model") from e
            raise
        result = quantizer.model.model
    unquantize_residual_branches(result, branches)
    after = graph_io(result)
    if after != before:  # an invariant of ORT's quantizer, checked because every runner relies on it
        raise EdgekdError(f"quantizing {src} changed the graph inputs/outputs: {before} -> {after}")
    topological_sort(result.graph)  # onnx.checker and other tools refuse graphs out of order
    _set_metadata(result, BACKEND_KEY, backend)
    _set_metadata(result, "edgekd.quant.reduce_range", str(bool(reduce_range)).lower())
    out = Path(out_path)
    save_model_atomic(result, out)
    return out

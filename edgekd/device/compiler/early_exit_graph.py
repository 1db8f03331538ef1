"""The one-call early-exit graph: a bundle's segment graphs joined by nested ``If`` nodes, for ONNX Runtime.

Chaining segments costs one runtime call per segment, plus a host round trip for every exit's answer; at batch 1
that overhead made early exit slower than the full graph even when most frames left at exit 0. Here the segments
(already in their precision: FP32 or Q/DQ INT8, each calibrated on its own; see :data:`ONE_CALL_PRECISIONS`) are
assembled unchanged into one graph::

    segment 0 → if conf0 >= thresholds[0]: (logits0, 0, conf0)
                else: segment 1 → if conf1 >= thresholds[1]: (logits1, 1, conf1)
                                  else: … segment E-1 → (logits{E-1}, E-1, conf{E-1})

Inputs: ``image`` (1, C, H, W) float32 and ``thresholds`` (E,) float32, so ``edgekd run --threshold`` and new
thresholds from ``edgekd profile --write-thresholds`` need no rebuild; outputs (:data:`EARLY_EXIT_OUTPUTS`):
``logits`` (1, K) of the exit that answered, ``exit`` (1,) int64 its index, ``conf`` (1,) its confidence. An ``If``
decides on one element, so the graph takes one image per call; batches go through the chain.

Decisions: a segment's ``conf{i}`` is the graph's own float32 max of its ``Softmax`` (quantization never reaches a
Softmax, :mod:`edgekd.device.compiler.quantize`); the host's numpy softmax may differ from it in the last bit. So
the chain (:mod:`edgekd.device.chain`) decides on the same ``conf{i}`` outputs, and build fits and certifies on
them: every decision, at build and at run, one graph call or a chain, is made on one set of numbers. A threshold
enters the graph as the smallest float32 at or above it (:func:`edgekd.device.chain.float32_thresholds`), which
for a float32 confidence decides ``conf >= t`` exactly as the float64 comparison of the chain and of the
certification does.

Inside the segments nothing changes: every node, initializer and shape annotation keeps its value, names are
prefixed ``s{i}.`` so the segments cannot collide (the tensors between segments keep theirs: ``feat{i}``,
``logits{i}``, ``conf{i}``). Segment ``i`` lives in the ``else`` branch of exit ``i - 1``'s ``If`` and reads
``feat{i-1}`` from the outer scope; nodes are put in topological order (ONNX Runtime's quantizer leaves Q/DQ nodes
out of it). ONNX Runtime optimizes ``If`` branches as it does a top-level graph: the INT8 segments keep every
QLinearConv/QGemm fusion they have alone (measured in tests/device/compiler/test_early_exit_graph.py). Torch-free:
the ``onnx`` package only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import EARLY_EXIT_INPUTS, EARLY_EXIT_OUTPUTS, segment_input_name, segment_output_names
from edgekd.core.onnx_graph import read_graph
from edgekd.device.compiler.quantize import save_model_atomic

#: Precisions whose one-call graph decides bit for bit as the chain does (tested). Not FP16 on ONNX Runtime's CPU:
#: the Casts around its float16 nodes make the confidences depend on the batch and on how the graph is cut (measured
#: on the tiny student: up to 2e-7 apart), and FP16 is slower than FP32 there anyway; it early-exits on the chain.
ONE_CALL_PRECISIONS = ("fp32", "int8")
_LOGITS, _EXIT, _CONF = EARLY_EXIT_OUTPUTS
_IMAGE, _THRESHOLDS = EARLY_EXIT_INPUTS
#: ONNX opset that has ``GreaterOrEqual`` (12); older segment graphs decide with ``Greater or Equal``.
_GREATER_OR_EQUAL_OPSET = 12


def _renamed(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> onnx.GraphProto:
    """A copy of ``graph`` whose node and tensor names (all but ``keep`` and the empty "absent input") carry
    ``prefix``. Segment graphs hold no subgraphs of their own; one that does is refused rather than half renamed."""
    g = onnx.GraphProto()
    g.CopyFrom(graph)

    def name(n: str) -> str:
        return n if (not n or n in keep) else prefix + n

    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise EdgekdError(f"segment graph {graph.name!r}: node {node.name or node.op_type} holds a subgraph; "
                              "the early-exit graph cannot be assembled from it")
        node.input[:] = [name(n) for n in node.input]
        node.output[:] = [name(n) for n in node.output]
        if node.name:
            node.name = prefix + node.name
    for collection in (g.initializer, g.value_info, g.input, g.output):
        for item in collection:
            item.name = name(item.name)
    for sparse in g.sparse_initializer:
        sparse.values.name = name(sparse.values.name)
    return g


def _sorted_nodes(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where every input is produced before it is read (ONNX requires it, and ONNX Runtime's
    quantizer leaves Q/DQ nodes out of order): repeated passes in the original order, so an order that already is
    one stays. ``available``: names readable from the start (graph inputs, initializers)."""
    ready, pending, out = set(available) | {""}, list(nodes), []
    while pending:
        still = []
        for node in pending:
            if all(name in ready for name in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                still.append(node)
        if len(still) == len(pending):
            missing = sorted({name for n in pending for name in n.input if name not in ready})
            raise EdgekdError(f"a segment graph reads tensors nothing produces: {', '.join(missing[:5])}")
        pending = still
    return out


def _opsets(models: Sequence[onnx.ModelProto]) -> list[onnx.OperatorSetIdProto]:
    """The segments' opset imports, which must agree (they come from one export and one build)."""
    seen: dict[str, int] = {}
    for m in models:
        for op in m.opset_import:
            if seen.setdefault(op.domain, op.version) != op.version:
                raise EdgekdError(f"the segment graphs import different versions of opset {op.domain or 'ai.onnx'} "
                                  f"({seen[op.domain]} and {op.version}); rebuild the bundle")
    seen.setdefault("", _GREATER_OR_EQUAL_OPSET)
    return [helper.make_opsetid(domain, version) for domain, version in seen.items()]


def _answer(i: int, prefix: str) -> tuple[list[onnx.NodeProto], list[str]]:
    """Nodes that return exit ``i``'s answer as (logits, exit, conf) under names starting with ``prefix``."""
    names = [f"{prefix}{_LOGITS}", f"{prefix}{_EXIT}", f"{prefix}{_CONF}"]
    index = helper.make_tensor(f"{prefix}exit_value", TensorProto.INT64, [1], [i])
    nodes = [helper.make_node("Identity", [f"logits{i}"], [names[0]], name=f"{prefix}logits"),
             helper.make_node("Constant", [], [names[1]], name=f"{prefix}exit", value=index),
             helper.make_node("Identity", [f"conf{i}"], [names[2]], name=f"{prefix}conf")]
    return nodes, names


def _value_infos(names: Sequence[str]) -> list[onnx.ValueInfoProto]:
    """Declared types of an answer triple (shapes left open inside the branches: ORT checks them at run)."""
    return [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, None),
            helper.make_tensor_value_info(names[1], TensorProto.INT64, None),
            helper.make_tensor_value_info(names[2], TensorProto.FLOAT, None)]


def _shapes(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """A segment's shape annotations, its outputs' included (inside the assembled graph they are intermediates)."""
    return [*g.value_info, *g.output]


def assemble(segments: Sequence[onnx.ModelProto]) -> onnx.ModelProto:
    """The one-call early-exit graph of ``segments`` (segment graphs 0..E-1 in order; see the module docstring)."""
    n = len(segments)
    if n == 0:
        raise EdgekdError("the early-exit graph needs at least one segment graph")
    opsets = _opsets(segments)
    greater_or_equal = next(o.version for o in opsets if o.domain == "") >= _GREATER_OR_EQUAL_OPSET
    graphs = []
    for i, model in enumerate(segments):
        keep = {segment_input_name(i), *segment_output_names(i, n)}
        io = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
        missing = sorted(keep - io)
        if missing:
            raise EdgekdError(f"segment graph {i} lacks the tensors {', '.join(missing)}")
        g = _renamed(model.graph, f"s{i}.", keep)
        nodes = _sorted_nodes(g.node, {v.name for v in g.input} | {t.name for t in g.initializer})
        del g.node[:]
        g.node.extend(nodes)
        graphs.append(g)

    def level(i: int, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[str]]:
        """Nodes and initializers computing segments i..E-1 from segment i's input, answering under ``prefix``."""
        g = graphs[i]
        nodes, inits = list(g.node), list(g.initializer)
        if i == n - 1:
            answer, names = _answer(i, prefix)
            return nodes + answer, inits, names
        index = numpy_helper.from_array(np.array(i, dtype=np.int64), f"exit{i}.index")
        threshold, cond = f"exit{i}.threshold", f"exit{i}.confident"
        inits.append(index)
        nodes.append(helper.make_node("Gather", [_THRESHOLDS, index.name], [threshold], name=f"exit{i}.gather"))
        if greater_or_equal:
            nodes.append(helper.make_node("GreaterOrEqual", [f"conf{i}", threshold], [cond], name=f"exit{i}.ge"))
        else:
            nodes += [helper.make_node("Greater", [f"conf{i}", threshold], [f"{cond}.gt"], name=f"exit{i}.gt"),
                      helper.make_node("Equal", [f"conf{i}", threshold], [f"{cond}.eq"], name=f"exit{i}.eq"),
                      helper.make_node("Or", [f"{cond}.gt", f"{cond}.eq"], [cond], name=f"exit{i}.ge")]
        then_nodes, then_names = _answer(i, f"exit{i}.then.")
        then_graph = helper.make_graph(then_nodes, f"exit{i}_answers", [], _value_infos(then_names))
        else_nodes, else_inits, else_names = level(i + 1, f"exit{i}.else.")
        else_graph = helper.make_graph(else_nodes, f"exit{i}_continues", [], _value_infos(else_names),
                                       initializer=else_inits, value_info=_shapes(graphs[i + 1]))
        names = [f"{prefix}{_LOGITS}", f"{prefix}{_EXIT}", f"{prefix}{_CONF}"]
        nodes.append(helper.make_node("If", [cond], names, name=f"exit{i}.if", then_branch=then_graph,
                                      else_branch=else_graph))
        return nodes, inits, names

    first = graphs[0]
    image = next(v for v in first.input if v.name == _IMAGE)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    k = next(v for v in graphs[-1].output if v.name == f"logits{n - 1}").type.tensor_type.shape.dim[1]
    classes = k.dim_value if k.HasField("dim_value") else None
    nodes, inits, names = level(0, "")
    # the top level's answer is the graph's output; rename it onto the public names
    public = list(EARLY_EXIT_OUTPUTS)
    renames = dict(zip(names, public))
    for node in nodes:
        node.output[:] = [renames.get(o, o) for o in node.output]
    inputs = [helper.make_tensor_value_info(_IMAGE, image.type.tensor_type.elem_type, [1, *dims[1:]]),
              helper.make_tensor_value_info(_THRESHOLDS, TensorProto.FLOAT, [n])]
    outputs = [helper.make_tensor_value_info(_LOGITS, TensorProto.FLOAT, [1, classes]),
               helper.make_tensor_value_info(_EXIT, TensorProto.INT64, [1]),
               helper.make_tensor_value_info(_CONF, TensorProto.FLOAT, [1])]
    graph = helper.make_graph(nodes, "edgekd_early_exit", inputs, outputs, initializer=inits,
                              value_info=_shapes(first))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edgekd")
    model.ir_version = max(m.ir_version for m in segments)
    for key, value in {p.key: p.value for m in segments for p in m.metadata_props}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def write_early_exit_graph(segment_paths: Sequence[str | Path], dest: str | Path) -> Path:
    """Assemble the segment graphs at ``segment_paths`` (weights loaded, external data included) into ``dest``,
    written atomically; refused when it would pass protobuf's 2 GB limit (such a model is no early-exit target)."""
    model = assemble([read_graph(p) for p in segment_paths])
    onnx.checker.check_model(model)  # before the bytes reach the bundle: a malformed graph is a build bug
    if model.ByteSize() >= (2 << 30) - (1 << 20):
        raise EdgekdError("the early-exit graph would exceed protobuf's 2 GB limit; run early exit on the chain")
    dest = Path(dest)
    save_model_atomic(model, dest)
    return dest

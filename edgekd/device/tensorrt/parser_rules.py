"""Whether a TensorRT release's ONNX parser reads an ONNX graph as ONNX means it (device side; needs no TensorRT).

TensorRT's parser does not refuse every graph it cannot read: some it misreads silently. The facts below were read in
NVIDIA's parser sources (github.com/onnx/onnx-tensorrt, the parser each TensorRT release ships), per release branch:

* **opset range** (``docs/operators.md``, line 5): 8.5-GA and 8.6-GA "support operators up to Opset 17"; 10.0-GA and
  10.1-GA "in the inclusive range of opset 9 to opset 20". A newer opset is not refused, only read op by op with the
  importers of the release.
* **Reduce ``axes``**: ONNX moved ReduceSum's ``axes`` from an attribute to a second input in opset 13 and every other
  Reduce op's in opset 18. The 8.x importers (``builtin_op_importers.cpp``: 8.5-GA lines 3604-3672, 8.6-GA
  3638-3706) hand that input on only for ReduceSum (and ReduceLogSum, built on it); ReduceMean, ReduceMax, ReduceMin,
  ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare and ReduceLogSumExp call ``reduceTensor`` without it, and
  ``reduceTensor`` (``onnx2trt_utils.cpp``: 8.5-GA line 1698, 8.6-GA 1599), finding neither an ``axes`` attribute nor
  an axes input, reduces *every* dimension, batch and channels included. From 10.0-GA (``onnxOpImporters.cpp`` line
  4303 on, ``importerUtils.cpp`` line 1297) every Reduce importer passes the input on; it must be an initializer.

The oldest release edgekd supports is :data:`~edgekd.device.tensorrt.versions.MIN_TENSORRT` (8.5, JetPack 5.1):
edgekd's exporter writes opset 17 graphs (axes as attributes, pooling as GlobalAveragePool) that every supported
parser reads; bundles exported before it (opset 18) still run on ONNX Runtime, and :func:`check_bundle_graphs` lets
the builder refuse them, in one line, for a TensorRT release that would misread them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import onnx

from edgekd.core.onnx_graph import read_graph
from edgekd.device.tensorrt.versions import parse_version

#: Reduce op -> the first opset in which its ``axes`` is an input (before it: an attribute).
AXES_INPUT_SINCE = {
    "ReduceSum": 13,
    **{op: 18 for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
}
#: Reduce ops whose ``axes`` input the TensorRT 8.x parsers read (the others reduce every dimension instead).
AXES_INPUT_READ_BY_TRT8 = frozenset({"ReduceSum", "ReduceLogSum"})
#: First TensorRT major whose parser reads the ``axes`` input of every Reduce op.
AXES_INPUT_READ_FROM_MAJOR = 10
#: Highest opset a TensorRT major documents for its parser (8.5/8.6: 17; 10.0/10.1: 20).
MAX_OPSET = {8: 17, 10: 20}
def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the graph imports (0 if none)."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def reduce_axes_inputs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Reduce nodes (of the default domain) whose ``axes`` come as a second input."""
    return [n for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type in AXES_INPUT_SINCE
            and len(n.input) > 1 and n.input[1]]


def graph_problems(model: onnx.ModelProto, trt: tuple[int, int]) -> list[str]:
    """What the ONNX parser of TensorRT ``trt`` (major, minor) would misread in ``model``, one phrase each; [] when
    nothing (as far as the facts in the module docstring go: unknown majors get only the checks that apply to them)."""
    problems = []
    release = f"TensorRT {trt[0]}.{trt[1]}"
    if trt[0] < AXES_INPUT_READ_FROM_MAJOR:
        for node in reduce_axes_inputs(model):
            if node.op_type not in AXES_INPUT_READ_BY_TRT8:
                problems.append(f"{node.op_type} {node.name or '(unnamed)'} takes its axes as an input, which "
                                f"{release}'s ONNX parser ignores (it would reduce every dimension)")
    opset = default_opset(model)
    highest = MAX_OPSET.get(trt[0])
    if highest is not None and opset > highest:
        problems.append(f"opset {opset} is above opset {highest}, the highest {release}'s ONNX parser supports")
    return problems


def check_bundle_graphs(paths: Iterable[Path], trt_version: str) -> str | None:
    """One line saying why TensorRT ``trt_version`` cannot be given these graphs (the first problem found, and the
    fix), or None when it can -- or when ``trt_version`` is not a version this module can judge.

    Called by ``build_bundle`` for the TensorRT backend before any work: a bundle exported with opset 18 (edgekd
    before the opset 17 export) would build on TensorRT 8.x into engines whose pooling and confidences are wrong."""
    trt = parse_version(trt_version)
    if trt == (0, 0):  # not a version: nothing to judge
        return None
    for path in paths:
        problems = graph_problems(read_graph(path, weights=False), trt)
        if problems:
            from edgekd import __version__

            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return (f"cannot build for TensorRT {trt_version}: {Path(path).name}: {problems[0]}{more}; re-export the "
                    f"bundle with edgekd {__version__} or later, whose export writes opset 17 graphs every TensorRT "
                    "from 8.5 reads, and build that")
    return None

"""Mixed precision: when INT8 is confidently over ``--max-drop``, leave the most sensitive nodes in float.

What TensorRT users do by hand (layer precisions, Polygraphy's debug tools, ModelOpt's ``nodes_to_exclude``) and ONNX
Runtime users with ``nodes_to_exclude``, the build does by itself, in two steps on the full graph:

1. **Sensitivity** (labels not needed, on the calibration images): each candidate node alone is quantized, from
   the same ranges, with the rest of the graph in float (layer-wise sensitivity analysis); its sensitivity is the
   exits' mean KL divergence from the FP32 probabilities. Quantizing one node at a time measures each node's own
   damage even when many are damaged (leaving one node at a time in float does not: with every other node still
   rounding badly, no single one makes a difference). Candidates are the quantized compute nodes
   (:data:`SEARCH_OPS`) that are not on the probability side of the graph.
2. **Search** (on the validation sample, judged by :func:`edgekd.device.compiler.verify.compare`): the top-``k`` of
   that ranking stay in float, ``k`` doubling from 1 until no output is over budget, then bisected down to the
   smallest such ``k`` (assuming more float nodes never hurt, which the ranking makes likely but not certain; the
   record lists every ``k`` tried). The search stops at the first graph the verdict does not call over budget: the
   same rule as a plain build's.

The chosen nodes then stay in float in every graph of the bundle: the full graph and each segment graph (a node is
found across graphs by its key, :func:`node_keys`, since exporters number nodes per graph). "Float" is FP32 on ONNX
Runtime; on TensorRT 8.5-10 the engine is built with the FP16 flag as well, so TensorRT runs those layers in FP16
where faster (and FP32 where not); TensorRT 11 (strongly typed) keeps them in the graph's FP32.

The record (:class:`MixedResult`.record) goes into the manifest under ``build.calibration.mixed_precision``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import onnx

from edgekd.core.onnx_graph import read_graph
from edgekd.core.spec import InputSpec
from edgekd.device.chain import full_probs
from edgekd.device.compiler.quantize import (
    Ranges,
    _nodes_after_softmax,
    quant_op_types,
    quantize_qdq,
)
from edgekd.device.compiler.verify import OVER, Verification, compare

#: Op types the search may leave in float: the ones that compute (and so round) something. Reshapes, pooling maxima
#: and activations only pass quantized values on.
SEARCH_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "AveragePool", "GlobalAveragePool",
                        "Concat"})
RANKING = "each node alone in int8: the exits' mean KL divergence from FP32 on the calibration images"


@dataclass(frozen=True)
class Quantizable:
    """One graph ready to quantize again: its pre-processed model and the ranges calibrated on it."""

    key: str  # "full" or "segment{i}"
    pre: Path  # the pre-processed float model (edgekd.device.compiler.quantize.preprocess_for_quantization)
    ranges: Ranges
    reduce_range: Optional[bool] = None  # 7-bit weights (None: quantize_qdq's default for the machine)


#: Op types keyed by their weight (input 1) when it is an initializer.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def node_keys(model: onnx.ModelProto) -> Dict[str, str]:
    """Node name -> a key that names the same node in every graph exported from one model.

    A convolution or dense node whose weight is an initializer is keyed by the weight's name, which the exporter takes
    from the module's parameter path (other constants get per-graph names such as ``val_78``); any other node by its
    op type and the key of the nearest weighted node up its first input (e.g. ``Add<-net.segments.1.0.0.conv2.weight``).
    The second and later nodes with the same key get ``#2``, ``#3``... in graph order. Nodes reached only from a graph
    input get no key."""
    inits = {t.name for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}

    def weight(node: onnx.NodeProto) -> Optional[str]:
        if node.op_type in _WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in inits:
            return node.input[1]
        return None

    def anchor(tensor: Optional[str]) -> Optional[str]:
        for _ in range(64):  # a bounded walk up first inputs
            node = producer.get(tensor) if tensor else None
            if node is None:
                return None
            if weight(node):
                return weight(node)
            tensor = next((i for i in node.input if i), None)
        return None

    keys: Dict[str, str] = {}
    seen: Dict[str, int] = {}
    for node in model.graph.node:
        own = weight(node)
        up = own or anchor(next((i for i in node.input if i), None))
        if up is not None:
            key = own or f"{node.op_type}<-{up}"
            seen[key] = seen.get(key, 0) + 1
            keys[node.name] = key if seen[key] == 1 else f"{key}#{seen[key]}"  # the n-th such node, in graph order
    return keys


def candidates(pre: Path) -> List[Dict[str, str]]:
    """The nodes of a pre-processed graph the search may leave in float, in graph order: {key, name, op}."""
    model = read_graph(pre)
    probability_side = set(_nodes_after_softmax(model))  # also names unnamed nodes, as quantize_qdq does
    keys = node_keys(model)
    quantized = set(quant_op_types())
    out, seen = [], set()
    for node in model.graph.node:
        key = keys.get(node.name)
        if (node.op_type in SEARCH_OPS and node.op_type in quantized and node.name not in probability_side
                and key is not None and key not in seen):
            out.append({"key": key, "name": node.name, "op": node.op_type})
            seen.add(key)
    return out


def quantize_excluding(q: Quantizable, dest: Path, backend: str, float_keys: Sequence[str]) -> Path:
    """``q`` quantized for ``backend`` with the nodes whose key is in ``float_keys`` left in float."""
    keys = node_keys(read_graph(q.pre))
    names = [name for name, key in keys.items() if key in set(float_keys)]
    return quantize_qdq(q.pre, dest, q.ranges, backend=backend, exclude_nodes=names, reduce_range=q.reduce_range)


def quantize_only(q: Quantizable, dest: Path, backend: str, name: str) -> Path:
    """``q`` with only the node ``name`` quantized for ``backend`` (the sensitivity probe)."""
    return quantize_qdq(q.pre, dest, q.ranges, backend=backend, only_nodes=[name], reduce_range=q.reduce_range)


def weight_range_choice(full: Quantizable, images: np.ndarray, spec: InputSpec, n_exits: int, work: Path,
                        **ort_options: Any) -> Dict[str, Any]:
    """Measure, on this machine, whether the ONNX Runtime form should use 7-bit weights (``reduce_range``).

    On x86 without VNNI, ORT's u8s8 kernels can overflow with full 8-bit weights, and 7 bits avoid it at the cost of
    coarser weights; with VNNI or on ARM 8 bits are exact. Rather than guess from CPU flags, both forms of the full
    graph run here, with this machine's kernels, on ``images`` (the calibration images), and the one whose exits are
    closer to FP32 (mean KL divergence) is kept. Returns ``{"reduce_range", "kl_7bit", "kl_8bit", "how"}``."""
    fp32 = full_probs("onnxruntime", full.pre, images, spec, n_exits, **ort_options)  # (E, N, K)
    kl = {}
    for bits, reduce in ((7, True), (8, False)):
        path = quantize_qdq(full.pre, work / f"_w{bits}.onnx", full.ranges, backend="onnxruntime",
                            reduce_range=reduce)
        kl[bits] = mean_kl(fp32, full_probs("onnxruntime", path, images, spec, n_exits, **ort_options))
        path.unlink(missing_ok=True)
    return {"reduce_range": kl[7] < kl[8], "kl_7bit": kl[7], "kl_8bit": kl[8],
            "how": "7-bit vs 8-bit weights run with this machine's kernels on the calibration images; the one "
                   "closer to FP32 kept"}


def mean_kl(reference: np.ndarray, probs: np.ndarray) -> float:
    """Mean over exits and images of KL(reference || probs); both (E, N, K) probabilities."""
    eps = 1e-8
    ref = np.clip(reference, eps, 1.0)
    return float(np.mean(np.sum(ref * (np.log(ref) - np.log(np.clip(probs, eps, 1.0))), axis=-1)))


def latency_ms(path: Path, spec: InputSpec, runs: int = 50, **options: Any) -> float:
    """Median batch-1 latency of a full graph on ONNX Runtime (a quick estimate; `edgekd profile` measures)."""
    from edgekd.device.runners import make_runner

    x = np.zeros((1, *spec.shape), dtype=np.float32)  # (1, C, H, W): the timing does not depend on the pixels
    with make_runner("onnxruntime", path, **options) as runner:
        for _ in range(5):
            runner.infer({"image": x})
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            runner.infer({"image": x})
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


@dataclass
class SearchInputs:
    """Everything the search reads (the builder fills it)."""

    full: Quantizable
    backend: str  # the Q/DQ form: "onnxruntime" or "tensorrt"
    spec: InputSpec
    n_exits: int
    calib_images: np.ndarray  # (N, H, W, C) uint8: the ranking's images
    val_images: np.ndarray  # (M, H, W, C) uint8: the verdict's images
    labels: np.ndarray  # (M,)
    reference: np.ndarray  # (E, M, K): FP32 probabilities of val_images
    vote_rule: str
    vote_weights: Optional[List[float]]
    max_drop: float
    work: Path  # scratch directory
    ort_options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MixedResult:
    float_keys: List[str]  # the nodes left in float, most sensitive first
    report: Verification  # the verification (compare) of the chosen full graph on the validation sample
    record: Dict[str, Any]  # what the manifest stores


class MixedSearch:
    """The two steps of the module docstring on one full graph."""

    def __init__(self, inputs: SearchInputs, log: Callable[[str], None]):
        self.i = inputs
        self.log = log
        self._count = 0

    def _graph(self, float_keys: Sequence[str]) -> Path:
        self._count += 1
        return quantize_excluding(self.i.full, self.i.work / f"_mixed_{self._count}.onnx", self.i.backend, float_keys)

    def _probs(self, path: Path, images: np.ndarray) -> np.ndarray:
        return full_probs("onnxruntime", path, images, self.i.spec, self.i.n_exits, **self.i.ort_options)

    def rank(self) -> List[Dict[str, Any]]:
        """Candidates with their sensitivity, most sensitive first (ties keep graph order)."""
        i = self.i
        fp32 = self._probs(i.full.pre, i.calib_images)  # (E, N, K)
        ranked = []
        for c in candidates(i.full.pre):
            path = quantize_only(i.full, i.work / "_probe.onnx", i.backend, c["name"])
            ranked.append({**c, "sensitivity": mean_kl(fp32, self._probs(path, i.calib_images))})
            path.unlink(missing_ok=True)
        ranked.sort(key=lambda c: -c["sensitivity"])  # stable: ties stay in graph order
        return ranked

    def _judge(self, keys: Sequence[str]) -> Verification:
        i = self.i
        path = self._graph(keys)
        report = compare(self._probs(path, i.val_images), i.reference, i.labels, i.vote_rule, i.vote_weights,
                         max_drop=i.max_drop)
        path.unlink(missing_ok=True)
        return report

    def run(self) -> Optional[MixedResult]:
        """The smallest prefix of the ranking whose graph is not over budget, or None when even all are not enough."""
        ranked = self.rank()
        self.log(f"mixed precision: {len(ranked)} candidate nodes ranked by sensitivity on "
                 f"{len(self.i.calib_images)} calibration images")
        trials: Dict[int, Verification] = {}

        def ok(k: int) -> bool:
            if k not in trials:
                trials[k] = self._judge([c["key"] for c in ranked[:k]])
                rep = trials[k]
                self.log(f"  {k} node(s) in float: {rep.verdict}, largest drop {rep.max_drop:+.2f}")
            return trials[k].verdict != OVER

        bad, k = 0, 1
        while k < len(ranked) and not ok(k):
            bad, k = k, min(2 * k, len(ranked))
        if not ranked or not ok(k):
            return None
        good = k
        while good - bad > 1:  # the smallest passing k in (bad, good]
            mid = (bad + good) // 2
            if ok(mid):
                good = mid
            else:
                bad = mid
        chosen = ranked[:good]
        record = {
            "float_nodes": [{"key": c["key"], "op": c["op"], "sensitivity": c["sensitivity"]} for c in chosen],
            "candidates": len(ranked),
            "int8_nodes": len(ranked) - good,
            "ranking": RANKING,
            "trials": [{"float_nodes": k, "verdict": trials[k].verdict, "max_drop": trials[k].max_drop}
                       for k in sorted(trials)],
        }
        return MixedResult([c["key"] for c in chosen], trials[good], record)

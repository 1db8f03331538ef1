"""``edgekd export``: a checkpoint → a bundle (full + per-segment ONNX graphs, calibration/validation data, manifest).

The graphs follow the tensor-name contract of :mod:`edgekd.core.manifest`. Thin wrappers (:class:`FullGraph`,
:class:`SegmentGraph`) add what the device needs on top of :meth:`MultiExitNet.forward_segment`: per-exit confidence
(max softmax) and the default vote, using only standard ONNX ops so TensorRT compiles them too.

Nothing is trusted blindly: every graph is checked with ``onnx.checker``, its names and dynamic batch are verified,
and :func:`check_parity` runs it with ONNX Runtime against PyTorch before the bundle directory appears (atomically:
a failed export leaves nothing behind).
"""

from __future__ import annotations

import inspect
import json
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from edgekd import __version__
from edgekd.core.errors import CheckpointError, ConfigError, DataError, EdgekdError
from edgekd.core.manifest import (
    Manifest,
    bundle_directory,
    check_bundle_destination,
    file_entry,
    full_output_names,
    graph_entry,
    segment_input_name,
    segment_output_names,
    sha256_file,
    write_manifest,
)
from edgekd.core.manifest_records import ExitInfo, Graphs, VoteRecord
from edgekd.core.onnx_graph import read_graph
from edgekd.core.preprocess import normalize
from edgekd.core.spec import InputSpec
from edgekd.core.vote import ANSWER_CONFIDENCE, VOTE_RULES, full_answer, softmax
from edgekd.device.options import OUT_WORDING
from edgekd.training.checkpoint import load_checkpoint, model_from_checkpoint, spec_from_checkpoint
from edgekd.training.config import EXPORT_CALIB_SIZE, EXPORT_OPSET, export_val_size

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_THRESHOLD = 0.9  # per-exit confidence threshold until build fits real ones (the last exit always answers)
MIN_AGREEMENT = 99.9  # percent of validation images whose top-1 must agree between ONNX Runtime and PyTorch
EXPORT_BATCH = 2  # example batch for tracing (not 0/1, which exporters would specialise)
RUN_BATCH = 64  # batch for parity runs
DYNAMO_OPSET = 18  # the opset the dynamo exporter (onnxscript's torchlib) builds graphs in


class ExportError(EdgekdError):
    """The export cannot be done or produced graphs that do not match the PyTorch model."""


# ---------------------------------------------------------------------------------------------- export wrappers


def _exit_probs(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(N, K) logits → (softmax (N, K), confidence = max probability (N,))."""
    probs = torch.softmax(logits, dim=1)  # (N, K)
    return probs, probs.amax(dim=1)  # (N, K), (N,)


class FullGraph(nn.Module):
    """``image`` (N, C, H, W) → ``logits{i}`` (N, K), ``conf{i}`` (N,) per exit, then ``vote`` (N, K).

    ``vote`` is the weighted mean of the exits' probabilities with ``weights`` (normalised to sum 1; uniform =
    the soft vote).
    """

    def __init__(self, net: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        total = float(sum(weights))
        self.vote_weights = [float(w) / total for w in weights]  # (E,), plain floats: constants in the graph
        self.train(net.training)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        x, outputs, vote = image, [], None
        for i in range(self.net.num_exits):
            x, logits = self.net.forward_segment(i, x)  # (N, C_i, H_i, W_i), (N, K)
            p, conf = _exit_probs(logits)
            outputs += [logits, conf]
            # the vote as Mul/Add, not stack + ReduceSum: no Reduce node whose axes any TensorRT parser could misread
            vote = p * self.vote_weights[i] if vote is None else vote + p * self.vote_weights[i]  # (N, K)
        return (*outputs, vote)


class SegmentGraph(nn.Module):
    """Segment ``i``: image or ``feat{i-1}`` → ``feat{i}`` (all but the last segment), ``logits{i}``, ``conf{i}``."""

    def __init__(self, net: nn.Module, index: int) -> None:
        super().__init__()
        self.net = net
        self.index = index
        self.last = index == net.num_exits - 1
        self.train(net.training)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        feat, logits = self.net.forward_segment(self.index, x)  # (N, C_i, H_i, W_i), (N, K)
        _, conf = _exit_probs(logits)  # (N,)
        return (logits, conf) if self.last else (feat, logits, conf)


# ---------------------------------------------------------------------------------------------- ONNX export


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _constant_ints(model: Any) -> dict[str, list[int]]:
    """Integer tensors fixed at export time (initializers, Constant nodes' values), flattened, by name."""
    from onnx import numpy_helper

    tensors = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    return {name: [int(v) for v in numpy_helper.to_array(t).ravel()] for name, t in tensors.items()
            if t.data_type in (7, 6)}  # INT64, INT32


def _reduce_axes(node: Any, consts: dict[str, list[int]]) -> list[int] | None:
    """A Reduce node's axes, from its attribute or its constant second input; None when they are not known."""
    import onnx

    for attr in node.attribute:
        if attr.name == "axes":
            return [int(a) for a in onnx.helper.get_attribute_value(attr)]
    if len(node.input) > 1 and node.input[1]:
        return consts.get(node.input[1])
    return None


def _attribute(node: Any, name: str, default: int) -> int:
    import onnx

    return next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def make_portable(model: Any, opset: int) -> Any:
    """``model`` rewritten so that every TensorRT parser edgekd targets (8.5 on) reads it as ONNX Runtime does.

    * A ReduceMean over both spatial axes of a 4-D tensor, keeping them, becomes GlobalAveragePool: the op the
      parsers import as pooling in every release (INT8 included), whatever the opset.
    * Graphs built in a newer opset than ``opset`` (the dynamo exporter builds opset 18) are brought down to it: Reduce
      axes move from the constant input (opset 18) back to the attribute (opset <= 17), which TensorRT 8.5/8.6 read
      -- their parsers ignore the axes input of ReduceMean/ReduceMax and reduce every dimension (see
      :mod:`edgekd.device.tensorrt.parser_rules`). Any other op whose definition changed between the two opsets is a
      ValueError (the caller then tries the next exporter): nothing is converted blindly.
    * The IR version becomes the lowest one that carries the opset (opset 17: IR 8, as ONNX 1.12 wrote it).

    Raises ValueError for what it cannot rewrite faithfully (axes computed at run time, an empty-axes no-op)."""
    import onnx

    from edgekd.device.tensorrt.parser_rules import AXES_INPUT_SINCE, default_opset

    current = default_opset(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
             if v.type.tensor_type.HasField("shape")}
    consts = _constant_ints(model)
    nodes = []
    for node in model.graph.node:
        axes = _reduce_axes(node, consts) if node.op_type in AXES_INPUT_SINCE else None
        rank = ranks.get(node.input[0]) if node.input else None
        if (node.op_type == "ReduceMean" and rank == 4 and axes is not None and _attribute(node, "keepdims", 1)
                and sorted(a % 4 for a in axes) == [2, 3]):
            nodes.append(onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                               name=node.name))
        elif node.op_type in AXES_INPUT_SINCE and AXES_INPUT_SINCE[node.op_type] > opset and len(node.input) > 1:
            if not axes:  # computed at run time, or empty (a no-op or reduce-all): no faithful attribute form
                raise ValueError(f"{node.op_type} {node.name} has axes that cannot become an attribute")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
                     if a.name != "noop_with_empty_axes"}
            nodes.append(onnx.helper.make_node(node.op_type, [node.input[0]], list(node.output), name=node.name,
                                               axes=axes, **attrs))
        else:
            if current > opset and node.domain in ("", "ai.onnx"):
                newer, older = (onnx.defs.get_schema(node.op_type, v).since_version for v in (current, opset))
                if newer != older:
                    raise ValueError(f"{node.op_type} changed between opset {opset} and {current}")
            nodes.append(node)
    used = {name for node in nodes for name in node.input} | {o.name for o in model.graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or any(o in used for o in n.output)]  # axes moved away
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    lowest_ir = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)], ignore_unknown=True)
    model.ir_version = min(int(model.ir_version), int(lowest_ir))
    return model


def _make_portable_file(path: Path, opset: int) -> None:
    import onnx

    model = make_portable(read_graph(path), opset)
    onnx.save(model, str(path))


def _verify_graph(path: Path, input_name: str, output_names: list[str], opset: int) -> None:
    """Checker, exact tensor names, a symbolic batch dimension, only standard ONNX ops, the asked opset and -- within
    TensorRT 8.5's opset range -- nothing its parser misreads; or ValueError."""
    import onnx

    from edgekd.device.tensorrt.parser_rules import MAX_OPSET, default_opset, graph_problems
    from edgekd.device.tensorrt.versions import MIN_TENSORRT

    model = read_graph(path)
    onnx.checker.check_model(model, full_check=True)
    if default_opset(model) != opset:
        raise ValueError(f"the graph has opset {default_opset(model)}, not the {opset} asked for")
    if opset <= MAX_OPSET[MIN_TENSORRT[0]]:
        problems = graph_problems(model, MIN_TENSORRT)
        if problems:
            raise ValueError(problems[0])
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [input_name] or outputs != output_names:
        raise ValueError(f"tensor names {inputs} → {outputs}, expected [{input_name!r}] → {output_names}")
    if not model.graph.input[0].type.tensor_type.shape.dim[0].dim_param:
        raise ValueError("the batch dimension is not dynamic")
    custom = {n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    if custom or len(model.functions):
        raise ValueError(f"non-standard ops or local functions ({sorted(custom)})")


def _run_exporter(exporter: str, module: nn.Module, example: Tensor, path: Path, input_name: str,
                  output_names: list[str], opset: int) -> None:
    """One ``torch.onnx.export`` call with a dynamic batch dimension."""
    params = inspect.signature(torch.onnx.export).parameters
    common: dict[str, Any] = dict(input_names=[input_name], output_names=output_names, opset_version=opset)
    if exporter == "dynamo":
        # it builds in opset 18 and converts a lower ``opset`` before constant folding, where the Reduce axes are no
        # constants yet: that conversion fails (a long warning) and leaves opset 18; make_portable converts instead
        common["opset_version"] = max(opset, DYNAMO_OPSET)
        with tempfile.TemporaryDirectory() as artifacts:  # reports, if any, never land in the bundle or cwd
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("N")},), artifacts_dir=artifacts, **common)
        return
    axes = {name: {0: "N"} for name in [input_name, *output_names]}
    extra = {"dynamo": False} if "dynamo" in params else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still fine
        torch.onnx.export(module, (example,), str(path), dynamic_axes=axes, do_constant_folding=True, **extra,
                          **common)


def export_graph(module: nn.Module, example: Tensor, path: Path, input_name: str, output_names: list[str],
                 opset: int) -> str:
    """Export ``module`` to ``path`` in ``opset``, rewritten by :func:`make_portable`: the dynamo exporter first, the
    TorchScript one if that fails or produces a graph that breaks the contract. Returns the exporter used; both
    failing is an :class:`ExportError`."""
    exporters = ["dynamo", "torchscript"] if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else ["torchscript"]
    errors = []
    for exporter in exporters:
        try:
            with torch.no_grad():
                _run_exporter(exporter, module, example, path, input_name, output_names, opset)
            _make_portable_file(path, opset)
            _verify_graph(path, input_name, output_names, opset)
            if errors:
                warnings.warn(f"{path.name}: {errors[0]}; used the {exporter} exporter instead", stacklevel=2)
            return exporter
        except Exception as exc:  # exporters raise many types; we try the next one and report all
            errors.append(f"{exporter}: {_first_line(exc)}")
            path.unlink(missing_ok=True)
    raise ExportError(f"cannot export {path.name} to ONNX ({'; '.join(errors)})")


def _graph_opset(path: Path) -> int:
    model = read_graph(path, weights=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


# ---------------------------------------------------------------------------------------------- parity


def _batches(x: np.ndarray, batch: int = RUN_BATCH) -> Iterator[np.ndarray]:
    for start in range(0, len(x), batch):
        yield x[start:start + batch]


def _run_torch(graph: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        chunks = [[t.numpy() for t in graph(torch.from_numpy(b))] for b in _batches(x)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def _run_batched(run: Callable[[np.ndarray], dict[str, np.ndarray]], x: np.ndarray,
                 names: list[str]) -> list[np.ndarray]:
    """``run`` (a batch → arrays by name) over ``x`` in batches: the ``names`` outputs, concatenated, in order."""
    chunks = [run(b) for b in _batches(x)]
    return [np.concatenate([c[name] for c in chunks]) for name in names]


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _scale(a: np.ndarray) -> float:
    """The magnitude a parity tolerance is relative to: max |a|, at least 1 (so small outputs get ``tol`` itself)."""
    return max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0


def _compare(ref: list[np.ndarray], got: list[np.ndarray], n_exits: int) -> dict[str, Any]:
    """Per exit: max |Δ| over logits and conf, the logits' scale (:func:`_scale` of the reference), top-1 agreement
    in percent; plus the vote's max |Δ| (probabilities: scale 1)."""
    diffs, scales, agree = [], [], []
    for i in range(n_exits):
        (rl, rc), (gl, gc) = ref[2 * i:2 * i + 2], got[2 * i:2 * i + 2]
        diffs.append(max(_max_diff(rl, gl), _max_diff(rc, gc)))
        scales.append(_scale(rl))
        agree.append(float(100.0 * np.mean(rl.argmax(1) == gl.argmax(1))))
    return {"max_abs_diff": diffs, "scale": scales, "top1_agreement": agree,
            "vote_max_abs_diff": _max_diff(ref[-1], got[-1]), "n": int(len(ref[0]))}


def check_parity(graph: FullGraph, full: Path, segments: list[Path], x_val: np.ndarray, tol: float) -> dict[str, Any]:
    """Run the ONNX graphs with ONNX Runtime (CPU) and compare them to ``graph`` in PyTorch.

    Inputs: the normalised validation sample ``x_val`` (N, C, H, W) and random normal images of the same shape
    (batch 8). Raises :class:`ExportError` ("export parity broken") when a max |Δ| exceeds ``tol`` times the
    output's scale (max |logits|, at least 1: float32 rounding grows with the values, so a fixed absolute bound
    failed a sound ResNet-18 whose logits reach tens) or validation top-1 agreement is below 99.9 %; otherwise
    returns the report recorded under the manifest's ``parity`` (``segments_vs_full``: the largest chained-vs-full
    difference divided by its output's scale).
    """
    from edgekd.device.chain import Chain
    from edgekd.device.runners import make_runner

    n_exits = graph.net.num_exits
    names = full_output_names(n_exits)  # logits{i}, conf{i} per exit, then vote
    x_rand = torch.randn((8, *x_val.shape[1:]), generator=torch.Generator().manual_seed(0)).numpy()  # (8, C, H, W)
    report: dict[str, Any] = {"segments_vs_full": 0.0, "tolerance": float(tol)}
    chain_diffs = []
    with make_runner("onnxruntime", full) as full_runner, Chain("onnxruntime", segments) as chain:
        for key, x in (("val", x_val), ("random", x_rand)):
            got = _run_batched(lambda b: full_runner.infer({"image": b}, names), x, names)
            report[key] = _compare(_run_torch(graph, x), got, n_exits)
            chained = _run_batched(chain.run, x, names[:-1])  # the full graph's outputs but the vote
            chain_diffs += [_max_diff(a, b) / _scale(b) for a, b in zip(chained, got)]
    report["segments_vs_full"] = float(np.max(chain_diffs))
    _enforce(report, tol)
    return report


def _enforce(report: dict[str, Any], tol: float) -> None:
    """Raise "export parity broken" naming the first failed comparison (NaN fails too). Each difference is allowed
    ``tol`` times its output's scale (1 for the vote and the already scaled chained-vs-full difference)."""
    checks = [(f"exit {i} logits/conf on the {key} input", d, scale) for key in ("val", "random")
              for i, (d, scale) in enumerate(zip(report[key]["max_abs_diff"],
                                                 report[key].get("scale", [1.0] * len(report[key]["max_abs_diff"]))))]
    checks += [(f"vote on the {key} input", report[key]["vote_max_abs_diff"], 1.0) for key in ("val", "random")]
    checks += [("chained segments vs full graph", report["segments_vs_full"], 1.0)]
    for what, diff, scale in checks:
        if not diff <= tol * scale:
            bound = f"{tol:g}" if scale == 1.0 else f"{tol:g} × logit scale {scale:.3g}"
            raise ExportError(f"export parity broken: {what} differ by {diff:.3g} between ONNX Runtime and "
                              f"PyTorch (tolerance {bound})")
    for i, agree in enumerate(report["val"]["top1_agreement"]):
        if agree < MIN_AGREEMENT:
            raise ExportError(f"export parity broken: exit {i} top-1 agrees with PyTorch on {agree:.1f} % of the "
                              f"validation sample (needs {MIN_AGREEMENT} %)")


# ---------------------------------------------------------------------------------------------- data


def _sample_data(ckpt: dict[str, Any], val_size: int | None, calib_size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(val images (N, H, W, C) uint8, val labels (N,) int64, calib images (M, H, W, C) uint8) from the data the
    checkpoint was trained on; the validation split must be the recorded one. ``val_size`` None: the first
    :func:`edgekd.training.config.export_val_size` images of the split (all of it, up to a byte budget)."""
    from edgekd.training.data import reload_data

    if not isinstance(ckpt.get("data"), dict):
        raise CheckpointError("the checkpoint does not record its data source; cannot carve the validation sample")
    data = reload_data(ckpt["data"], augment=False)
    if data.split.sha256() != ckpt["split"]["sha256"]:
        raise DataError("the data changed since training: its validation split no longer matches the checkpoint's "
                        "(sha256 differs); export needs the same data")
    if list(data.spec.class_names) != list(ckpt["class_names"]):
        raise DataError("the data changed since training: its class names differ from the checkpoint's")
    n_val = export_val_size(len(data.val), data.val.raw(0).shape, val_size) if len(data.val) else 0
    val = np.stack([data.val.raw(i) for i in range(n_val)]).astype(np.uint8)  # (N, H, W, C)
    labels = np.asarray(data.val.labels[:n_val], dtype=np.int64)  # (N,)
    n_train = len(data.train)
    rng = np.random.default_rng(int(ckpt["split"]["seed"]))
    idx = np.sort(rng.choice(n_train, size=min(calib_size, n_train), replace=False))  # (M,)
    calib = np.stack([data.train.raw(int(i)) for i in idx]).astype(np.uint8)  # (M, H, W, C)
    return val, labels, calib


def _normalized(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H, W, C) uint8 → (N, C, H, W) float32 exactly as the runtime normalises camera frames."""
    out = np.empty((len(images), *spec.shape), dtype=np.float32)
    for j, img in enumerate(images):
        normalize(img, spec, out=out[j])
    return out


# ---------------------------------------------------------------------------------------------- manifest


def _plain(value: Any) -> Any:
    """JSON-safe copy: tensors/arrays → lists, numpy scalars → Python numbers, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _best_vote_rule(val_metrics: dict[str, Any], has_weights: bool) -> str | None:
    """The vote rule with the best validation top-1 (ties to the first in ``VOTE_RULES``: soft), as the reference
    of certified early exit is chosen; None when the checkpoint records no vote metrics (an older one)."""
    scores = val_metrics.get("vote") if isinstance(val_metrics, dict) else None
    if not isinstance(scores, dict):
        return None
    rules = [r for r in VOTE_RULES if isinstance(scores.get(r), (int, float)) and (r != "weighted" or has_weights)]
    return max(rules, key=lambda r: float(scores[r])) if rules else None  # max keeps the first of equals


def _vote_record(ckpt: dict[str, Any], n_exits: int) -> VoteRecord:
    """The vote's rule, weights and ``in_graph``: the bundle's default vote rule is the one with the best validation
    top-1 (ties to soft), not the training ``--vote`` (which only picked ``best.pt``; it stays the rule of a checkpoint
    that records no vote metrics). The hard vote needs logits, so the graph carries the soft one then."""
    val = ckpt["metrics"].get("val", {})
    weights = val.get("vote_weights") if isinstance(val, dict) else None
    rule = _best_vote_rule(val, weights is not None) or ckpt["method"].get("vote", "soft")
    if rule not in VOTE_RULES:
        raise CheckpointError(f"the checkpoint's vote rule {rule!r} is unknown")
    if weights is not None:
        weights = [float(w) for w in _plain(weights)]
        if len(weights) != n_exits or min(weights) < 0 or sum(weights) <= 0:
            raise CheckpointError(f"the checkpoint's vote weights {weights} do not fit {n_exits} exits")
    elif rule == "weighted":
        raise CheckpointError("the checkpoint's vote rule is 'weighted' but it records no vote weights")
    return VoteRecord(rule, weights, "soft" if rule == "hard" else rule)


def _val_probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """(E, N, K) per-exit probabilities of the eval-mode ``model`` on normalised images ``x`` (N, C, H, W)."""
    with torch.no_grad():
        chunks = [[softmax(z.float().numpy()) for z in model(torch.from_numpy(b)).logits] for b in _batches(x)]
    return np.stack([np.concatenate(parts) for parts in zip(*chunks)])


def _choose_answer(vote: VoteRecord, probs: np.ndarray, labels: np.ndarray) -> VoteRecord:
    """``vote`` with ``answer``: what ``--mode full-vote`` answers, chosen by the paired test of
    :func:`edgekd.core.vote.full_answer` on the bundle's validation sample — the deepest exit unless a vote rule
    beats it beyond noise (then that rule becomes ``rule``, computed in the graph unless it is the hard vote)."""
    chosen = full_answer(probs, labels, vote.weights)
    if chosen.answer == "deepest":
        return replace(vote, answer="deepest")
    rule = chosen.name.split(":", 1)[1]
    return replace(vote, rule=rule, in_graph="soft" if rule == "hard" else rule, answer="vote")


def _manifest(root: Path, ckpt: dict[str, Any], checkpoint: Path, name: str, vote: VoteRecord,
              parity: dict[str, Any], n_val: int, n_calib: int, exporter: str) -> Manifest:
    """The exported bundle's manifest, for the files written under ``root``."""
    import onnx
    import onnxruntime

    n = len(ckpt["exit_info"])
    split = ckpt["split"]
    return Manifest(
        name=name, spec=spec_from_checkpoint(ckpt),
        exits=[ExitInfo.from_json(_plain(e), i) for i, e in enumerate(ckpt["exit_info"])],
        vote=vote, thresholds=[DEFAULT_THRESHOLD] * (n - 1) + [0.0], precision="fp32", backend="onnx",
        graphs=Graphs(graph_entry(root, "full.onnx", ["image"], full_output_names(n)),
                      [graph_entry(root, f"segment{i}.onnx", [segment_input_name(i)], segment_output_names(i, n))
                       for i in range(n)]),
        files={"calib": file_entry(root, "calib.npz"), "val_sample": file_entry(root, "val_sample.npz")},
        parity=_plain(parity),
        split=_plain({"seed": split["seed"], "fraction": split["fraction"], "sha256": split["sha256"],
                      "n_val_sample": n_val, "n_calib": n_calib}),
        source=_plain({"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
                       "model": ckpt["model"], "method": {"name": ckpt["method"].get("name"),
                                                          "hparams": ckpt["method"].get("hparams", {})},
                       "metrics": ckpt["metrics"].get("val", {}), "data": ckpt.get("data")}),
        versions=_plain({"torch": str(torch.__version__), "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__, "edgekd": __version__,
                         "opset": _graph_opset(root / "full.onnx"), "exporter": exporter}),
        root=root)


# ---------------------------------------------------------------------------------------------- entry point


def _load_model(checkpoint: Path) -> tuple[dict[str, Any], nn.Module]:
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    if not hasattr(model, "forward_segment") or model.num_exits != len(ckpt["exit_info"]):
        raise CheckpointError(f"{checkpoint} does not hold a multi-exit model matching its exit_info")
    return ckpt, model


def _write_graphs(root: Path, full_graph: FullGraph, spec: InputSpec, opset: int) -> str:
    """full.onnx and segment{i}.onnx under ``root``; returns the exporter(s) used."""
    model, n = full_graph.net, full_graph.net.num_exits
    x = torch.randn((EXPORT_BATCH, *spec.shape), generator=torch.Generator().manual_seed(0))  # (B, C, H, W)
    used = {export_graph(full_graph, x, root / "full.onnx", "image", full_output_names(n), opset)}
    for i in range(n):
        used.add(export_graph(SegmentGraph(model, i), x, root / f"segment{i}.onnx", segment_input_name(i),
                              segment_output_names(i, n), opset))
        with torch.no_grad():
            x = model.forward_segment(i, x)[0]  # feat{i} (B, C_i, H_i, W_i): the next segment's example input
    return ",".join(sorted(used))


def _summary(console: Console, out: Path, manifest: Manifest) -> None:
    from rich.table import Table

    parity = manifest.parity or {}
    table = Table(title=f"bundle {out}", show_lines=False)
    for col in ("file", "size"):
        table.add_column(col)
    for path in sorted(out.iterdir()):
        table.add_row(path.name, f"{path.stat().st_size / 1024:.1f} KiB")
    console.print(table)
    diffs = ", ".join(f"{d:.2g}" for d in parity["val"]["max_abs_diff"])
    console.print(f"parity vs PyTorch (ONNX Runtime CPU): max |Δ| per exit [{diffs}], top-1 agreement "
                  f"{min(parity['val']['top1_agreement']):.1f} %, segments vs full {parity['segments_vs_full']:.2g} "
                  f"(tolerance {parity['tolerance']:g} × max(1, max |logits|))")
    scores = (manifest.source or {}).get("metrics", {}).get("vote") or {}
    shown = ", ".join(f"{r} {scores[r]:.2f}" for r in VOTE_RULES if isinstance(scores.get(r), (int, float)))
    console.print(f"default vote rule: {manifest.vote_rule}" + (f" (validation top-1 %: {shown})" if shown else "")
                  + f"; validation sample: {(manifest.split or {}).get('n_val_sample')} labelled images")
    answer = (f"exit {manifest.num_exits - 1} (no vote rule beat it beyond the {ANSWER_CONFIDENCE:.0%} paired "
              "interval on the validation sample)" if manifest.full_answer == "deepest" else
              f"the {manifest.vote_rule} vote (better than the deepest exit beyond the {ANSWER_CONFIDENCE:.0%} paired "
              "interval on the validation sample)")
    console.print(f"full-vote answers with {answer}")


def export_bundle(checkpoint: str | Path, out: str | Path, *, val_size: int | None = None,
                  calib_size: int = EXPORT_CALIB_SIZE, opset: int = EXPORT_OPSET, force: bool = False,
                  name: str | None = None, parity_tol: float = 1e-3, console: Console | None = None) -> Manifest:
    """Export ``checkpoint`` to the bundle directory ``out`` (see the module docstring); returns its manifest.

    ``val_sample.npz`` holds labelled validation images for build (verification and certified early-exit
    thresholds) and profile: ``val_size`` of them, or by default the whole validation split up to
    ``EXPORT_VAL_BYTES`` (20 MiB) of uint8 pixels and at least ``EXPORT_VAL_MIN`` (500) images
    (:func:`edgekd.training.config.export_val_size`: 32x32 RGB about 6,800 images, 224x224 RGB 500). The manifest's
    default vote rule is the one with the best validation top-1 (ties to soft), see :func:`_vote_record`.
    ``out`` appears complete or not at all; an existing ``out`` is only replaced with ``force``, and only when it is
    an edgekd bundle that does not hold the checkpoint (:func:`edgekd.core.manifest.bundle_directory`).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if (val_size is not None and val_size < 1) or calib_size < 1:
        raise ConfigError(f"val_size and calib_size must be at least 1, got {val_size} and {calib_size}")
    # before the work; again when it is done
    check_bundle_destination(out, force=force, inputs=[checkpoint], wording=OUT_WORDING)
    ckpt, model = _load_model(checkpoint)
    spec = spec_from_checkpoint(ckpt)
    vote = _vote_record(ckpt, model.num_exits)
    val, labels, calib = _sample_data(ckpt, val_size, calib_size)
    vote = _choose_answer(vote, _val_probs(model, _normalized(val, spec)), labels)
    weights = vote.weights if vote.in_graph == "weighted" else [1.0] * model.num_exits
    full_graph = FullGraph(model, weights).eval()
    with bundle_directory(out, force=force, inputs=[checkpoint], wording=OUT_WORDING) as tmp:
        np.savez_compressed(tmp / "calib.npz", images=calib)  # (M, H, W, C) uint8
        np.savez_compressed(tmp / "val_sample.npz", images=val, labels=labels)  # (N, H, W, C) uint8, (N,)
        exporter = _write_graphs(tmp, full_graph, spec, opset)
        segments = [tmp / f"segment{i}.onnx" for i in range(model.num_exits)]
        parity = check_parity(full_graph, tmp / "full.onnx", segments, _normalized(val, spec), parity_tol)
        manifest = _manifest(tmp, ckpt, checkpoint.resolve(), name or out.resolve().name, vote, parity,
                             len(val), len(calib), exporter)
        json.dumps(manifest.to_json(), allow_nan=False)  # fail here, not on the device, if anything is not JSON
        write_manifest(tmp, manifest)
    manifest = replace(manifest, root=out)
    if console is not None:
        _summary(console, out, manifest)
    return manifest

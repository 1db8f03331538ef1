"""The one-call early-exit graph (edgekd.device.compiler.early_exit_graph) on the tiny digits student, real ONNX
Runtime: it answers exactly as the chain does — the same exit, the same logits, the same confidence — for every
exit and every threshold on a grid (thresholds at observed confidences and an ulp above them included), in FP32,
FP16 and INT8; its INT8 segments keep ONNX Runtime's quantized fusions inside the If branches; build writes it and
the manifest hashes and checks it."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekd.core.early_exit import NEVER, simulate
from edgekd.core.manifest import EARLY_EXIT_INPUTS, EARLY_EXIT_OUTPUTS, ManifestError, load_manifest
from edgekd.device.chain import Chain, exit_probs, float32_thresholds, normalized_batches
from edgekd.device.compiler import build_bundle
from edgekd.device.compiler.early_exit_graph import assemble, write_early_exit_graph
from edgekd.device.runners import make_runner
from edgekd.device.runners.onnxruntime import create_session


@pytest.fixture(scope="module")
def built(tiny_bundle, tmp_path_factory) -> dict[str, Path]:
    """The tiny student built for ONNX Runtime in each precision (every build writes its one-call graph)."""
    root = tmp_path_factory.mktemp("early_exit_graph")
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        out[precision] = root / precision
        build_bundle(tiny_bundle, precision=precision, out=out[precision], cache_dir=None, max_drop=100.0)
    return out


def _images(m) -> np.ndarray:
    with np.load(m.file("val_sample")) as f:
        return f["images"][:160]  # (160, 16, 16, 1) uint8


def _threshold_grid(conf: np.ndarray) -> list[list[float]]:
    """Per-exit thresholds (E,) spreading answers over every exit: quantiles of the observed confidences (so some
    sit exactly on one), the same an ulp above (float64), mixed per exit, and the extremes."""
    e = conf.shape[0]
    grid = [[0.0] * e, [NEVER] * e, [np.inf] * e]
    for q in (0.1, 0.3, 0.5, 0.7, 0.9):
        at = [float(np.quantile(conf[i], q, method="nearest")) for i in range(e - 1)] + [0.0]
        grid += [at, [float(np.nextafter(t, 2.0)) for t in at[:-1]] + [0.0]]
    grid += [[float(np.quantile(conf[0], 0.8, method="nearest")), 0.0] + [0.0] * (e - 2),
             [NEVER, float(np.quantile(conf[1], 0.2, method="nearest"))] + [0.0] * (e - 2)]
    return grid


def test_fp16_early_exits_on_the_chain(built):
    """FP16 on ONNX Runtime's CPU gives confidences that depend on how the graph is cut (ONE_CALL_PRECISIONS): no
    one-call graph, and early exit chains."""
    from edgekd.device.runtime.pipeline import Pipeline

    m = load_manifest(built["fp16"])
    assert m.early_exit_graph() is None and m.graphs.early_exit is None
    with Pipeline(m) as pipe:
        assert pipe.early_exit_graph == "chain"
    with pytest.raises(Exception, match="no one-call early-exit graph"):
        Pipeline(m, early_exit_graph="one-call")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_one_call_graph_answers_exactly_as_the_chain(built, precision):
    m = load_manifest(built[precision])
    graph = m.early_exit_graph()
    assert graph is not None and graph.name == f"early_exit.{precision}.onnx"
    images = _images(m)
    xs = list(normalized_batches(images, m.spec, batch=1))
    with Chain.from_manifest(m) as chain, make_runner("onnxruntime", graph) as one:
        probs = chain.probs(images, m.spec)  # (E, N, K): what build certifies on
        conf = probs.max(axis=2)  # (E, N)
        exits_seen: set[int] = set()
        on_a_threshold = 0
        for thresholds in _threshold_grid(conf):
            sim = simulate(probs, thresholds)
            fed = float32_thresholds(thresholds)
            for j, x in enumerate(xs):
                got = one.infer({"image": x, "thresholds": fed}, list(EARLY_EXIT_OUTPUTS))
                ref = chain.early_exit(x, thresholds)
                k = int(got["exit"][0])
                assert got["exit"].dtype == np.int64 and got["exit"].shape == (1,)
                assert k == ref.exits[0] == sim.exit_taken[j], (thresholds, j)
                assert np.array_equal(got["conf"], conf[k, j:j + 1])  # bit for bit: the number decided on
                assert np.array_equal(exit_probs(got["logits"], got["conf"]), ref.probs)
                exits_seen.add(k)
                on_a_threshold += int(k < m.num_exits - 1 and conf[k, j] == thresholds[k])
    assert exits_seen == set(range(m.num_exits))
    assert on_a_threshold > 0, "the grid should put some confidences exactly on a threshold"


def test_int8_segments_keep_their_quantized_fusions_inside_the_branches(built, tmp_path):
    """ONNX Runtime optimizes If branches like top-level graphs: the one-call graph runs as many QLinearConv /
    QGemm (and as few DequantizeLinear) as the segment graphs do, measured on the optimized models ORT writes."""
    m = load_manifest(built["int8"])

    def optimized_ops(path: Path) -> collections.Counter:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(tmp_path / f"opt_{path.name}")
        create_session(path, so)
        counts: collections.Counter = collections.Counter()

        def walk(g: onnx.GraphProto) -> None:
            for node in g.node:
                counts[node.op_type] += 1
                for a in node.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        walk(a.g)

        walk(onnx.load(so.optimized_model_filepath).graph)
        return counts

    segments = sum((optimized_ops(m.segment_graph(i)) for i in range(m.num_exits)), collections.Counter())
    one = optimized_ops(m.early_exit_graph())
    assert segments["QLinearConv"] > 0 and segments["QGemm"] > 0
    for op in ("QLinearConv", "QGemm", "QLinearAdd", "QuantizeLinear", "DequantizeLinear", "Conv"):
        assert one[op] == segments[op], op
    assert one["If"] == m.num_exits - 1


def test_the_graph_declares_its_contract_and_the_manifest_hashes_it(built, tmp_path):
    m = load_manifest(built["int8"])
    model = onnx.load(str(m.early_exit_graph()))
    assert [i.name for i in model.graph.input] == list(EARLY_EXIT_INPUTS)
    assert [o.name for o in model.graph.output] == list(EARLY_EXIT_OUTPUTS)
    entry = m.graphs.early_exit
    assert entry.inputs == list(EARLY_EXIT_INPUTS) and entry.outputs == list(EARLY_EXIT_OUTPUTS)
    assert m.early_exit_graph() in m.paths()
    copy = Path(shutil.copytree(built["int8"], tmp_path / "copy"))
    with open(copy / entry.path, "ab") as f:  # a tampered graph
        f.write(b"\0")
    with pytest.raises(ManifestError, match="graphs.early_exit.*sha256"):
        load_manifest(copy)
    # a graph for another class count or exit count is refused by its declared shapes
    other = Path(shutil.copytree(built["int8"], tmp_path / "other"))
    data = json.loads((other / "manifest.json").read_text())
    data["graphs"]["early_exit"] = {**data["graphs"]["early_exit"], "path": data["graphs"]["stages"][0]["path"],
                                    "sha256": data["graphs"]["stages"][0]["sha256"]}
    (other / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="graphs.early_exit.*no input 'thresholds'"):
        load_manifest(other)


def test_assemble_refuses_segments_that_do_not_chain(built):
    m = load_manifest(built["fp32"])
    segments = [onnx.load(str(m.segment_graph(i))) for i in range(m.num_exits)]
    with pytest.raises(Exception, match="segment graph 1 lacks the tensors conf1, feat0, logits1"):
        assemble([segments[0], segments[2], segments[1]])
    with pytest.raises(Exception, match="at least one segment graph"):
        assemble([])


def test_an_exported_bundle_assembles_too_and_threshold_changes_need_no_rebuild(tiny_bundle, tmp_path):
    m = load_manifest(tiny_bundle)
    path = write_early_exit_graph([m.segment_graph(i) for i in range(m.num_exits)], tmp_path / "ee.onnx")
    x = next(normalized_batches(_images(m)[:1], m.spec, batch=1))
    with make_runner("onnxruntime", path) as one:
        exits = [int(one.infer({"image": x, "thresholds": float32_thresholds([t] * m.num_exits)})["exit"][0])
                 for t in (0.0, NEVER)]
    assert exits == [0, m.num_exits - 1]

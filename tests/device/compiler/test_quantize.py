"""INT8 calibration (cached ranges) and the two Q/DQ forms (ONNX Runtime CPU, TensorRT) on a small trained CNN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import RUNNER_BACKENDS, sha256_file
from edgekd.device.compiler import calibration
from edgekd.device.compiler.calibration import CALIB_METHODS, CalibrationCache, calibrate, compute_ranges, data_sha256
from edgekd.device.compiler.quantize import preprocess_for_quantization, quantize_qdq, topological_sort
from edgekd.device.runners.onnxruntime import create_session

torch = pytest.importorskip("torch")
nn = torch.nn

NUM_CLASSES = 6


def _templates() -> np.ndarray:
    return np.random.default_rng(123).standard_normal((NUM_CLASSES, 3, 16, 16)).astype(np.float32)


def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A separable synthetic task: one fixed random pattern per class, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = _templates()[y] + 0.8 * rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    return x.astype(np.float32), y


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def cbr(cin: int, cout: int, stride: int) -> list:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*cbr(3, 16, 1), *cbr(16, 32, 2), *cbr(32, 32, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.pool(self.body(x)).flatten(1))


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> dict:
    """The CNN trained for a few steps, exported (input ``image``, output ``logits0``, dynamic batch)."""
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(40):
        x, y = make_images(64, seed=1000 + step)
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    root = tmp_path_factory.mktemp("qnet")
    path = root / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.from_numpy(make_images(2, 0)[0]), str(path), input_names=["image"],
                          output_names=["logits0"], dynamic_axes={"image": {0: "n"}, "logits0": {0: "n"}},
                          opset_version=17, dynamo=False)
    pre = preprocess_for_quantization(path, root / "net.pre.onnx")
    calib = [{"image": make_images(16, seed=s)[0]} for s in range(8)]
    x_eval, y_eval = make_images(64, seed=99)
    ref = run(path, x_eval)
    assert (ref.argmax(1) == y_eval).mean() >= 0.9, "the fixture should have learned the synthetic task"
    return {"root": root, "path": path, "pre": pre, "calib": calib, "x": x_eval, "ref": ref,
            "ranges": compute_ranges(pre, calib, "minmax")}


def session(path: Path, *, optimize: bool = True, threads: int = 2) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return create_session(path, so)


def run(path: Path, x: np.ndarray, *, optimize: bool = True) -> np.ndarray:
    return session(path, optimize=optimize).run(["logits0"], {"image": x})[0]


def assert_close_to_reference(net: dict, logits: np.ndarray, *, rel: float = 0.1) -> None:
    ref = net["ref"]
    agreement = float((logits.argmax(1) == ref.argmax(1)).mean())
    rel_err = float(np.abs(logits - ref).max() / np.abs(ref).max())
    assert logits.dtype == np.float32 and logits.shape == ref.shape
    assert agreement >= 0.9, f"top-1 agreement with FP32 {agreement:.2%}"
    assert rel_err < rel, f"max |int8 - fp32| / max |fp32| = {rel_err:.3f}"


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def io_signature(model: onnx.ModelProto) -> tuple[list, list]:
    names = {i.name for i in model.graph.initializer}
    ins = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input if i.name not in names]
    return ins, [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if name in n.output), None)


# ------------------------------------------------------------------------------------------- calibration


def test_preprocessing_is_deterministic_and_marked(net, tmp_path):
    again = preprocess_for_quantization(net["path"], tmp_path / "again.onnx")
    assert sha256_file(again) == sha256_file(net["pre"])  # the cache key of a stage graph is stable
    model = onnx.load(str(again))
    assert {p.key: p.value for p in model.metadata_props}.get("onnx.quant.pre_process") == "onnxruntime.quant"
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    assert sorted(os.listdir(tmp_path)) == ["again.onnx"]  # no temporary left behind


def test_preprocessing_falls_back_to_a_copy(net, tmp_path, monkeypatch):
    import onnxruntime.quantization as oq

    def broken(*args, **kwargs):
        raise RuntimeError("symbolic shape inference exploded")

    monkeypatch.setattr(oq, "quant_pre_process", broken)
    with pytest.warns(RuntimeWarning, match="pre-processing failed"):
        out = preprocess_for_quantization(net["path"], tmp_path / "copy.onnx")
    model = onnx.load(str(out))
    assert io_signature(model) == io_signature(onnx.load(str(net["path"])))
    assert "edgekd.quant.pre_process" in {p.key for p in model.metadata_props}


@pytest.mark.parametrize("method", CALIB_METHODS)
def test_ranges_cover_every_quantized_activation(net, method, tmp_path):
    ranges = net["ranges"] if method == "minmax" else compute_ranges(net["pre"], net["calib"], method)
    pre = onnx.load(str(net["pre"]))
    weights = {i.name for i in pre.graph.initializer}
    lo_data = min(float(b["image"].min()) for b in net["calib"])
    hi_data = max(float(b["image"].max()) for b in net["calib"])
    for node in pre.graph.node:  # every activation a quantized op reads or writes has a sane range
        if node.op_type in ("Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"):
            for name in [*node.input, *node.output]:
                if name and name not in weights:
                    assert name in ranges, f"{method}: no range for {name}"
                    lo, hi = ranges[name]
                    assert np.isfinite(lo) and np.isfinite(hi) and lo <= hi, (name, lo, hi)
        if node.op_type == "Relu":
            assert ranges[node.output[0]][0] >= 0.0
    lo, hi = ranges["image"]
    assert lo_data - 1e-6 <= lo < 0 < hi <= hi_data + 1e-6
    if method == "minmax":
        assert (lo, hi) == (lo_data, hi_data)
    out = quantize_qdq(net["pre"], tmp_path / f"{method}.onnx", ranges, backend="onnxruntime")
    assert_close_to_reference(net, run(out, net["x"]))


def test_percentile_is_a_real_option(net):
    wide = compute_ranges(net["pre"], net["calib"], "percentile", percentile=100.0)
    narrow = compute_ranges(net["pre"], net["calib"], "percentile", percentile=99.0)
    assert wide.keys() == narrow.keys()
    assert all(narrow[k][1] <= wide[k][1] for k in wide)
    assert any(narrow[k][1] < wide[k][1] for k in wide)


def test_calibrate_reuses_the_cache_without_recalibrating(net, tmp_path, monkeypatch):
    cache = CalibrationCache(tmp_path / "calibration")
    ranges, reused = calibrate(net["pre"], net["calib"], "minmax", cache)
    assert not reused and ranges == net["ranges"]
    files = list(cache.root.iterdir())
    assert [f.suffix for f in files] == [".json"]  # one entry, no temporary left behind
    stamp = files[0].stat().st_mtime_ns

    def no_calibration(*args, **kwargs):
        raise AssertionError("ORT calibration ran although the cache holds the ranges")

    monkeypatch.setattr(calibration, "compute_ranges", no_calibration)
    again, reused = calibrate(net["pre"], net["calib"], "minmax", cache)
    assert reused and again == ranges
    assert files[0].stat().st_mtime_ns == stamp
    monkeypatch.undo()

    model_sha, data_sha = sha256_file(net["pre"]), data_sha256(net["calib"])
    key = cache.key(model_sha, "minmax", data_sha)
    assert files[0].name == f"{key}.json" and cache.load(key) == ranges
    assert cache.key(model_sha, "entropy", data_sha) != key
    changed = [dict(b) for b in net["calib"]]
    changed[3] = {"image": changed[3]["image"].copy()}
    changed[3]["image"][0, 0, 0, 0] += 1.0
    assert data_sha256(changed) != data_sha
    assert cache.key(model_sha, "minmax", data_sha256(changed)) != key
    assert cache.key(sha256_file(net["path"]), "minmax", data_sha) != key

    other, reused = calibrate(net["pre"], net["calib"], "entropy", cache)
    assert not reused and other != ranges and len(list(cache.root.iterdir())) == 2
    _, reused = calibrate(net["pre"], changed, "minmax", cache)
    assert not reused and len(list(cache.root.iterdir())) == 3
    _, reused = calibrate(net["pre"], net["calib"], "percentile", cache, percentile=99.9)
    _, reused_other_pct = calibrate(net["pre"], net["calib"], "percentile", cache, percentile=99.0)
    assert not reused and not reused_other_pct
    assert calibrate(net["pre"], net["calib"], "minmax", None) == (ranges, False)


def test_a_corrupt_cache_entry_is_a_miss(net, tmp_path):
    cache = CalibrationCache(tmp_path)
    key = cache.key(sha256_file(net["pre"]), "minmax", data_sha256(net["calib"]))
    (tmp_path / f"{key}.json").write_text("{ not json")
    with pytest.warns(RuntimeWarning, match="unreadable calibration cache"):
        ranges, reused = calibrate(net["pre"], net["calib"], "minmax", cache)
    assert not reused and ranges == net["ranges"] and cache.load(key) == ranges


def test_any_input_name_calibrates(net, tmp_path):
    """Stage graphs take ``feat{i}``: rename the input and calibrate/quantize with feeds keyed by that name."""
    model = onnx.load(str(net["path"]))
    model.graph.input[0].name = "feat0"
    for node in model.graph.node:
        node.input[:] = ["feat0" if i == "image" else i for i in node.input]
    path = tmp_path / "stage.onnx"
    onnx.save(model, str(path))
    feeds = [{"feat0": b["image"]} for b in net["calib"]]
    ranges = compute_ranges(path, feeds, "minmax")  # not pre-processed: done internally
    assert ranges["feat0"] == net["ranges"]["image"]
    out = quantize_qdq(path, tmp_path / "stage.int8.onnx", ranges, backend="tensorrt")
    got = session(out, optimize=False).run(["logits0"], {"feat0": net["x"]})[0]
    assert_close_to_reference(net, got)


GLOBAL_POOL_SCRIPT = """
import json, sys, warnings
import numpy as np
from edgekd.device.runners.onnxruntime import create_session, ensure_global_thread_pool
ensure_global_thread_pool(1)  # what a build does before it calibrates: ORT then refuses per-session thread pools
import onnxruntime as ort
from edgekd.device.compiler.calibration import CALIB_METHODS, compute_ranges
from edgekd.device.compiler.quantize import preprocess_for_quantization, quantize_qdq
from edgekd.core.manifest import sha256_file
warnings.simplefilter("error")
src, out, data = sys.argv[1:4]
pre = preprocess_for_quantization(src, out + "/pre.onnx")
batches = [{"image": a} for a in np.load(data)["calib"]]
ranges = {m: compute_ranges(pre, batches, m) for m in CALIB_METHODS}
q = quantize_qdq(pre, out + "/q.onnx", ranges["minmax"], backend="onnxruntime")
logits = create_session(q).run(
    None, {"image": np.load(data)["x"]})[0]
np.save(out + "/logits.npy", logits)
torch = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print(json.dumps({"sha": sha256_file(pre), "minmax": ranges["minmax"], "torch": torch}))
"""


def test_works_in_a_process_using_a_global_thread_pool(net, tmp_path):
    """A build opens edgekd's runners (ORT's global thread pool) before it calibrates: everything still works, gives
    the same pre-processed bytes and ranges as in a process with per-session threads, and never imports torch."""
    data = tmp_path / "data.npz"
    np.savez(data, calib=np.stack([b["image"] for b in net["calib"]]), x=net["x"])
    proc = subprocess.run([sys.executable, "-c", GLOBAL_POOL_SCRIPT, str(net["path"]), str(tmp_path), str(data)],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["sha"] == sha256_file(net["pre"])
    assert result["torch"] is False
    assert {k: tuple(v) for k, v in result["minmax"].items()} == net["ranges"]
    assert_close_to_reference(net, np.load(tmp_path / "logits.npy"))


# ------------------------------------------------------------------------------------------- Q/DQ forms


def test_onnxruntime_form(net, tmp_path):
    out = quantize_qdq(net["pre"], tmp_path / "ort.onnx", net["ranges"], backend="onnxruntime")
    assert sorted(os.listdir(tmp_path)) == ["ort.onnx"]
    model = onnx.load(str(out))
    assert io_signature(model) == ([("image", TensorProto.FLOAT)], [("logits0", TensorProto.FLOAT)])
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    values = inits(model)
    quantized_inputs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantized_inputs and all(values[n.input[2]].dtype == np.uint8 for n in quantized_inputs)
    assert any(n.input[0] == "image" for n in quantized_inputs)
    for conv in (n for n in model.graph.node if n.op_type in ("Conv", "Gemm")):
        act, weight = (producer(model, name) for name in conv.input[:2])
        assert act.op_type == weight.op_type == "DequantizeLinear"
        q_weight, scale, zero = (values[name] for name in weight.input)
        assert q_weight.dtype == np.int8 and zero.dtype == np.int8 and not zero.any()  # symmetric int8 weights
        channels = q_weight.shape[0]
        assert scale.shape == (channels,) and channels > 1  # per-channel
        assert len(set(scale.tolist())) > 1
        if len(conv.input) > 2:
            assert values[producer(model, conv.input[2]).input[0]].dtype == np.int32  # int32 bias
    assert producer(model, "logits0").op_type == "Gemm"  # the logits stay float
    assert_close_to_reference(net, run(out, net["x"]))


def test_tensorrt_form(net, tmp_path):
    out = quantize_qdq(net["pre"], tmp_path / "trt.onnx", net["ranges"], backend="tensorrt")
    model = onnx.load(str(out))
    assert io_signature(model) == ([("image", TensorProto.FLOAT)], [("logits0", TensorProto.FLOAT)])
    values = inits(model)
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs
    for node in qs + dqs:
        zero = values[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), node.name  # symmetric int8 everywhere, zero point 0
    for dq in dqs:  # TensorRT: no int8/int32 initializer straight into DQ, one consumer per Q/DQ pair
        assert dq.input[0] not in values, f"{dq.name} dequantizes an initializer"
        assert len(consumers(model, dq.output[0])) == 1
    for q in qs:
        assert len(consumers(model, q.output[0])) == 1
    for conv in (n for n in model.graph.node if n.op_type in ("Conv", "Gemm")):
        act, weight = (producer(model, name) for name in conv.input[:2])
        assert act.op_type == weight.op_type == "DequantizeLinear"
        q_weight = producer(model, weight.input[0])
        assert q_weight.op_type == "QuantizeLinear" and q_weight.input[0] in values  # float weight -> Q -> DQ
        assert values[q_weight.input[1]].shape == (values[q_weight.input[0]].shape[0],)  # per-channel
        if len(conv.input) > 2:
            assert conv.input[2] in values and values[conv.input[2]].dtype == np.float32  # float bias
        for c in consumers(model, conv.output[0]):  # weighted layers' outputs are not quantized
            assert c.op_type != "QuantizeLinear"
    # The reference (unfused) Q/DQ arithmetic is what TensorRT computes; ORT's fused s8s8 CPU kernels are not the
    # target of this form (and saturate on x86 without VNNI).
    assert_close_to_reference(net, run(out, net["x"], optimize=False))
    assert {p.key: p.value for p in model.metadata_props}["edgekd.quant.backend"] == "tensorrt"


@pytest.mark.parametrize("reduce_range", [False, True])
def test_reduce_range_gives_7_bit_weights(net, tmp_path, reduce_range):
    out = quantize_qdq(net["pre"], tmp_path / "r.onnx", net["ranges"], backend="onnxruntime",
                       reduce_range=reduce_range)
    model = onnx.load(str(out))
    values = inits(model)
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        q_weight = values[producer(model, conv.input[1]).input[0]]
        peak = np.abs(q_weight.reshape(q_weight.shape[0], -1)).max(1)
        assert (peak <= 64).all() if reduce_range else (peak == 127).all()
    assert {p.key: p.value for p in model.metadata_props}["edgekd.quant.reduce_range"] == str(reduce_range).lower()
    assert_close_to_reference(net, run(out, net["x"], optimize=False))


def test_reduce_range_default_follows_the_cpu(net, tmp_path):
    """On by default only where ORT's u8s8 kernels saturate (x86 without VNNI), and never for TensorRT."""
    from edgekd.device.compiler.quantize import u8s8_saturates

    for target, expected in (("onnxruntime", u8s8_saturates()), ("tensorrt", False)):
        model = onnx.load(str(quantize_qdq(net["pre"], tmp_path / f"{target}.onnx", net["ranges"], backend=target)))
        assert {p.key: p.value for p in model.metadata_props}["edgekd.quant.reduce_range"] == str(expected).lower()


def _with_confidence(net: dict, path: Path) -> Path:
    """The test net plus what exported bundle graphs end with: ``conf0`` (max softmax probability) and an in-graph
    soft ``vote`` (weighted sum of stacked probabilities)."""
    model = onnx.load(str(net["path"]))
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(np.array([0.3, 0.7], dtype=np.float32).reshape(2, 1, 1), "vote_w"),
    ])
    node = onnx.helper.make_node
    model.graph.node.extend([
        node("Softmax", ["logits0"], ["probs0"], axis=1, name="softmax0"),
        node("ReduceMax", ["probs0", "axis1"], ["conf0"], keepdims=0, name="conf0_max"),
        node("Unsqueeze", ["probs0", "axis0"], ["probs0_u"], name="unsqueeze0"),
        node("Concat", ["probs0_u", "probs0_u"], ["stack"], axis=0, name="stack"),
        node("Mul", ["stack", "vote_w"], ["weighted"], name="weigh"),
        node("ReduceSum", ["weighted", "axis0"], ["vote"], keepdims=0, name="vote_sum"),
    ])
    model.graph.output.extend([onnx.helper.make_tensor_value_info("conf0", TensorProto.FLOAT, ["n"]),
                               onnx.helper.make_tensor_value_info("vote", TensorProto.FLOAT, ["n", NUM_CLASSES])])
    model.opset_import[0].version = 18  # ReduceMax/ReduceSum take their axes as an input from opset 18
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("target", RUNNER_BACKENDS)
def test_logits_confidences_and_vote_stay_float(net, tmp_path, target):
    src = _with_confidence(net, tmp_path / "conf.onnx")
    pre = preprocess_for_quantization(src, tmp_path / "conf.pre.onnx")
    ranges = compute_ranges(pre, net["calib"], "minmax")
    model = onnx.load(str(quantize_qdq(pre, tmp_path / "conf.int8.onnx", ranges, backend=target)))
    assert [o.name for o in model.graph.output] == ["logits0", "conf0", "vote"]
    softmax = producer(model, producer(model, "conf0").input[0])
    assert softmax.op_type == "Softmax" and producer(model, softmax.input[0]).op_type == "Gemm"
    frontier, seen = list(softmax.output), set()
    while frontier:  # nothing fed by the softmax is quantized
        for node in consumers(model, frontier.pop()):
            assert node.op_type not in ("QuantizeLinear", "DequantizeLinear"), node.name
            if node.name not in seen:
                seen.add(node.name)
                frontier.extend(node.output)
    assert {"conf0_max", "stack", "weigh", "vote_sum"} <= seen
    ref = session(src).run(None, {"image": net["x"]})
    got = session(tmp_path / "conf.int8.onnx", optimize=False).run(None, {"image": net["x"]})
    for i in (1, 2):
        assert np.abs(got[i] - ref[i]).max() < 0.05
        assert len(np.unique(got[i])) > 32  # not rounded to a handful of 8-bit levels


def test_both_forms_come_from_the_same_ranges(net, tmp_path):
    """Same activation ranges: asymmetric uint8 scale = (hi - lo) / 255, symmetric int8 scale = max|.| / 127."""
    ort_model = onnx.load(str(quantize_qdq(net["pre"], tmp_path / "a.onnx", net["ranges"], backend="onnxruntime")))
    trt_model = onnx.load(str(quantize_qdq(net["pre"], tmp_path / "b.onnx", net["ranges"], backend="tensorrt")))
    q_ort = next(n for n in ort_model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
    q_trt = next(n for n in trt_model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
    lo, hi = net["ranges"]["image"]
    np.testing.assert_allclose(inits(ort_model)[q_ort.input[1]], (hi - lo) / 255, rtol=1e-5)
    np.testing.assert_allclose(inits(trt_model)[q_trt.input[1]], max(-lo, hi) / 127, rtol=1e-5)


def test_quantize_does_not_recalibrate(net, tmp_path):
    """Ranges are used as given: doubling one changes that tensor's scale and nothing else."""
    wide = dict(net["ranges"])
    lo, hi = wide["image"]
    wide["image"] = (2 * lo, 2 * hi)
    base = onnx.load(str(quantize_qdq(net["pre"], tmp_path / "a.onnx", net["ranges"], backend="tensorrt")))
    changed = onnx.load(str(quantize_qdq(net["pre"], tmp_path / "b.onnx", wide, backend="tensorrt")))
    a, b = inits(base), inits(changed)
    diff = sorted(k for k in a if not np.array_equal(a[k], b[k]))
    assert diff == ["image_scale"]
    np.testing.assert_allclose(b["image_scale"], 2 * a["image_scale"], rtol=1e-6)


def test_exclude_nodes_stay_float(net, tmp_path):
    first_conv = next(n.name for n in onnx.load(str(net["pre"])).graph.node if n.op_type == "Conv")
    out = quantize_qdq(net["pre"], tmp_path / "x.onnx", net["ranges"], backend="onnxruntime",
                       exclude_nodes=[first_conv])
    model = onnx.load(str(out))
    conv = next(n for n in model.graph.node if n.name == first_conv)
    assert conv.input[1] in inits(model) and inits(model)[conv.input[1]].dtype == np.float32
    assert_close_to_reference(net, run(out, net["x"]))


def test_cpu_latency_sanity_look(net, tmp_path, capsys):
    """Printed, not asserted: the test CNN is tiny, so Q/DQ overheads can outweigh int8 arithmetic here."""
    paths = {"fp32": net["path"],
             "ort-int8": quantize_qdq(net["pre"], tmp_path / "o.onnx", net["ranges"], backend="onnxruntime"),
             "trt-form": quantize_qdq(net["pre"], tmp_path / "t.onnx", net["ranges"], backend="tensorrt")}
    x = net["x"][:1]
    lines = []
    for name, path in paths.items():
        sess = session(path, threads=2)
        for _ in range(20):
            sess.run(None, {"image": x})
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(100):
                sess.run(None, {"image": x})
            best = min(best, (time.perf_counter() - t) / 100)
        lines.append(f"{name} {best * 1e3:.3f} ms")
    with capsys.disabled():
        print(f"\n[cpu latency, batch 1, 2 threads] {' | '.join(lines)}")


# ------------------------------------------------------------------------------------------- user errors


def test_user_errors(net, tmp_path):
    missing = tmp_path / "missing.onnx"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model")
    calib, ranges = net["calib"], net["ranges"]
    cases = [
        (lambda: compute_ranges(missing, calib, "minmax"), "not found"),
        (lambda: compute_ranges(garbage, calib, "minmax"), "garbage.onnx is not a readable ONNX graph"),
        (lambda: compute_ranges(net["pre"], calib, "kl"), "unknown calibration method"),
        (lambda: compute_ranges(net["pre"], [], "minmax"), "no calibration data"),
        (lambda: compute_ranges(net["pre"], [{}], "minmax"), "batch 0"),
        (lambda: compute_ranges(net["pre"], [{"feat3": calib[0]["image"]}], "minmax"), "feat3"),
        (lambda: compute_ranges(net["pre"], calib, "percentile", percentile=0.0), "percentile"),
        (lambda: compute_ranges(net["pre"], [{"image": np.zeros((1, 3, 8), np.float32)}], "minmax"), "failed"),
        (lambda: calibrate(missing, calib, "minmax", CalibrationCache(tmp_path)), "not found"),
        (lambda: calibrate(net["pre"], calib, "histogram", CalibrationCache(tmp_path)), "unknown calibration"),
        (lambda: calibrate(net["pre"], [], "minmax", CalibrationCache(tmp_path)), "no calibration data"),
        (lambda: CalibrationCache(tmp_path).key("../etc", "minmax", "ab"), "invalid"),
        (lambda: preprocess_for_quantization(missing, tmp_path / "p.onnx"), "not found"),
        (lambda: quantize_qdq(missing, tmp_path / "q.onnx", ranges, backend="onnxruntime"), "not found"),
        (lambda: quantize_qdq(net["pre"], tmp_path / "q.onnx", ranges, backend="openvino"), "unknown quantization"),
        (lambda: quantize_qdq(net["pre"], tmp_path / "q.onnx", {}, backend="tensorrt"), "no activation ranges"),
        (lambda: quantize_qdq(net["pre"], tmp_path / "q.onnx", {"x": (1.0, 0.0)}, backend="tensorrt"), "invalid"),
        (lambda: quantize_qdq(net["pre"], tmp_path / "q.onnx", {"other_model": (0.0, 1.0)}, backend="tensorrt"),
         "another model"),
        (lambda: quantize_qdq(net["pre"], tmp_path / "q.onnx", {k: v for k, v in ranges.items() if k != "image"},
                              backend="onnxruntime"), "miss"),
    ]
    for call, message in cases:
        with pytest.raises(EdgekdError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "p.onnx").exists()
    assert set(RUNNER_BACKENDS) == {"onnxruntime", "tensorrt"}


# ------------------------------------------------------------------------ residual Adds in the TensorRT form (issue 10)


@pytest.fixture(scope="module")
def resnet(tiny_bundle, tmp_path_factory) -> dict:
    """The tiny resnet8 student's graphs pre-processed and calibrated as a build does them (images for the full graph
    and segment 0, the FP32 segments' activations for the others)."""
    from edgekd.core.manifest import load_manifest
    from edgekd.device.chain import Chain

    m = load_manifest(tiny_bundle)
    root = tmp_path_factory.mktemp("resnet")
    with np.load(m.file("calib")) as f:
        calib = f["images"]
    feeds: dict = {i: [] for i in range(m.num_exits)}
    with Chain.from_manifest(m) as chain:
        chain.probs(calib, m.spec, batch=32, on_segment_input=lambda i, feed: feeds[i].append(dict(feed)))
    sources = [("full", m.full_graph(), feeds[0])]
    sources += [(f"segment{i}", m.segment_graph(i), feeds[i]) for i in range(m.num_exits)]
    graphs = {}
    for key, path, feed in sources:
        pre = preprocess_for_quantization(path, root / f"{key}.pre.onnx")
        graphs[key] = {"pre": pre, "feeds": feed, "ranges": compute_ranges(pre, feed, "minmax")}
    return {"manifest": m, "graphs": graphs}


def _previous_trt_config(backend: str):
    """The TensorRT form's ORT options before issue 10: outputs of everything but weighted layers quantized."""
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8, {"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                             "DedicatedQDQPair": True, "QuantizeBias": False,
                             "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose", "Gemm", "MatMul"]}


def previous_trt_form(src: Path, out: Path, ranges: dict) -> Path:
    """The TensorRT form as edgekd placed it before issue 10 (both Add inputs quantized), for comparison."""
    from edgekd.device.compiler import quantize

    mp = pytest.MonkeyPatch()
    mp.setattr(quantize, "_backend_config", _previous_trt_config)
    mp.setattr(quantize, "residual_add_branches", lambda model: {})
    try:
        return quantize_qdq(src, out, ranges, backend="tensorrt")
    finally:
        mp.undo()


def float_source(model: onnx.ModelProto, name: str) -> tuple[str, bool]:
    """(the float tensor read through ``name``, whether it is read through a Q -> DQ pair)."""
    dq = producer(model, name)
    if dq is not None and dq.op_type == "DequantizeLinear":
        q = producer(model, dq.input[0])
        assert q is not None and q.op_type == "QuantizeLinear", name
        return q.input[0], True
    return name, False


def kernel(model: onnx.ModelProto, conv: onnx.NodeProto) -> tuple:
    """The spatial kernel shape of ``conv`` (its weight is an initializer behind Q -> DQ in the TensorRT form)."""
    weight, _ = float_source(model, conv.input[1])
    return tuple(inits(model)[weight].shape[2:])


def residual_adds(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, list[tuple[str, bool]], int]]:
    """Every Add of two activations one of which comes from a convolution: (node, the float source and Q/DQ flag of
    each input, the index of the main-branch input). In resnet8 the main branch ends in a 3x3 convolution; the other
    input is the identity (a ReLU output) or the 1x1 projection shortcut (cifar_resnet.BasicBlock)."""
    found = []
    for node in model.graph.node:
        if node.op_type != "Add":
            continue
        sources = [float_source(model, t) for t in node.input]
        makers = [producer(model, t) for t, _ in sources]
        if not any(p is not None and p.op_type == "Conv" for p in makers):
            continue  # e.g. the vote's Adds (products of probabilities)
        main = [i for i, p in enumerate(makers) if p is not None and p.op_type == "Conv" and kernel(model, p) == (3, 3)]
        assert len(main) == 1, node.name
        found.append((node, sources, main[0]))
    return found


def test_tensorrt_form_quantizes_the_residual_not_the_conv_branch(resnet, tmp_path):
    """NVIDIA's placement (TensorRT guide, ModelOpt): each residual Add reads the convolution it is fused into in
    float (no Q/DQ: Conv+BN+Add+ReLU become one int8 kernel) and its identity/shortcut input through Q/DQ; no Q/DQ
    between the Add and its ReLU; every convolution's input and weights still quantized; nothing after a Softmax."""
    for key, g in resnet["graphs"].items():
        model = onnx.load(str(quantize_qdq(g["pre"], tmp_path / f"{key}.onnx", g["ranges"], backend="tensorrt")))
        adds = residual_adds(model)
        assert len(adds) == (3 if key == "full" else 1), key  # one BasicBlock per resnet8 stage
        for add, sources, main in adds:
            for i, (tensor, quantized) in enumerate(sources):
                if i == main:
                    assert not quantized, f"{key}: {add.name} reads its convolution branch {tensor} through Q/DQ"
                else:
                    assert quantized, f"{key}: {add.name} reads its residual {tensor} in float"
            assert [c.op_type for c in consumers(model, add.output[0])] == ["Relu"], f"{key}: Q/DQ after {add.name}"
        for conv in (n for n in model.graph.node if n.op_type == "Conv"):
            assert all(float_source(model, t)[1] for t in conv.input[:2]), f"{key}: {conv.name} not quantized"
        frontier = [n.output[0] for n in model.graph.node if n.op_type == "Softmax"]
        assert frontier
        while frontier:
            for node in consumers(model, frontier.pop()):
                assert node.op_type not in ("QuantizeLinear", "DequantizeLinear"), f"{key}: {node.name}"
                frontier.extend(node.output)


def test_the_previous_placement_quantized_the_conv_branch(resnet, tmp_path):
    """What the test above guards against, as edgekd did it before: both Add inputs and the Add output quantized."""
    g = resnet["graphs"]["segment1"]
    model = onnx.load(str(previous_trt_form(g["pre"], tmp_path / "old.onnx", g["ranges"])))
    (add, sources, main), = residual_adds(model)
    assert all(quantized for _, quantized in sources)
    assert consumers(model, add.output[0])[0].op_type == "QuantizeLinear"


def test_tensorrt_form_keeps_the_accuracy_of_the_previous_placement(resnet, tmp_path):
    """On the bundle's validation sample, run with ONNX Runtime (the Q/DQ arithmetic TensorRT reproduces): per exit
    and for the vote, the new placement is within a point of the previous one and of FP32."""
    from edgekd.core.vote import accuracy, vote
    from edgekd.device.chain import full_probs

    m, g = resnet["manifest"], resnet["graphs"]["full"]
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"], f["labels"]
    paths = {"fp32": m.full_graph(),
             "previous": previous_trt_form(g["pre"], tmp_path / "previous.onnx", g["ranges"]),
             "now": quantize_qdq(g["pre"], tmp_path / "now.onnx", g["ranges"], backend="tensorrt")}
    acc = {}
    for name, path in paths.items():
        probs = full_probs("onnxruntime", path, images, m.spec, m.num_exits)  # (E, N, K)
        weights = np.asarray(m.vote_weights) if m.vote_weights else None
        acc[name] = [accuracy(p.argmax(1), labels) for p in probs]
        acc[name].append(accuracy(vote(probs, m.vote_rule, weights), labels))
    print(f"\n[top-1 % per exit + vote, {len(labels)} val images] {acc}")
    for i in range(len(acc["now"])):
        assert abs(acc["now"][i] - acc["previous"][i]) <= 1.0, (i, acc)
        assert acc["now"][i] >= acc["fp32"][i] - 1.0, (i, acc)


MODELOPT_SCRIPT = """
import sys
import numpy as np
from modelopt.onnx.quantization import quantize
src, calib, out = sys.argv[1:4]
quantize(src, quantize_mode="int8", calibration_data=dict(np.load(calib)), calibration_method="max",
         calibration_eps=["cpu"], output_path=out, high_precision_dtype="fp32", log_level="ERROR")
"""


def _modelopt_python() -> str | None:
    """An interpreter with NVIDIA ModelOpt: this one, or ``$EDGEKD_MODELOPT_PYTHON`` (ModelOpt pulls a CUDA torch,
    so it lives in a venv of its own); None when neither has it."""
    import importlib.util

    if importlib.util.find_spec("modelopt") is not None:
        return sys.executable
    return os.environ.get("EDGEKD_MODELOPT_PYTHON") or None


def qdq_inputs(model: onnx.ModelProto, op_types: tuple) -> set[tuple[str, int]]:
    """(node name, input index) of every ``op_types`` node input read through a Q -> DQ pair, on the image side of
    the graph (edgekd keeps everything a Softmax feeds float; ModelOpt quantizes the vote's Adds)."""
    fed_by_softmax: set[str] = set()
    tainted: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Softmax" or any(t in tainted for t in node.input):
            tainted.update(node.output)
            fed_by_softmax.add(node.name)
    return {(n.name, i) for n in model.graph.node if n.op_type in op_types and n.name not in fed_by_softmax
            for i, t in enumerate(n.input) if t and float_source(model, t)[1]}


def test_tensorrt_form_places_qdq_where_modelopt_does(resnet, tmp_path):
    """NVIDIA ModelOpt's ONNX INT8 quantizer (optional, never required) on the same pre-processed full graph: Q/DQ on
    the same Conv, Add, ReLU and pooling inputs, the three residual Adds included.

    Not compared: ModelOpt leaves the classifier Gemm float (its GEMV rule), quantizes the vote after the Softmax,
    and writes opset 19 with ReduceMax axes as an input (which TensorRT 8.x misreads). The segment graphs are not
    compared either: where a block's input is the graph input, ModelOpt's lowest-common-ancestor search finds no
    common node and falls back to leaving Add input 1 -- the 1x1 shortcut -- unquantized."""
    python = _modelopt_python()
    if python is None:
        pytest.skip("NVIDIA ModelOpt is not installed (optional: pip install 'nvidia-modelopt[onnx]' into a venv of "
                    "its own and set EDGEKD_MODELOPT_PYTHON to its python)")
    g = resnet["graphs"]["full"]
    calib = tmp_path / "calib.npz"
    np.savez(calib, image=np.concatenate([f["image"] for f in g["feeds"]]))
    theirs = tmp_path / "full.modelopt.onnx"
    proc = subprocess.run([python, "-c", MODELOPT_SCRIPT, str(g["pre"]), str(calib), str(theirs)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = onnx.load(str(quantize_qdq(g["pre"], tmp_path / "full.ours.onnx", g["ranges"], backend="tensorrt")))
    reference = onnx.load(str(theirs))
    ops = ("Conv", "Add", "Relu", "GlobalAveragePool")
    assert len([n for n in reference.graph.node if n.op_type == "Add"]) >= 3
    assert qdq_inputs(ours, ops) == qdq_inputs(reference, ops)


# -- topological order (issue 21) --------------------------------------------------------------------------------
def _unsorted_graph() -> onnx.ModelProto:
    """x -> Relu -> Neg -> y, its nodes stored reader first (as a quantizer that appends nodes may leave them)."""
    from onnx import helper

    nodes = [helper.make_node("Neg", ["r"], ["y"], name="neg"), helper.make_node("Relu", ["x"], ["r"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_topological_sort_puts_producers_first_and_onnx_checker_accepts_it():
    model = _unsorted_graph()
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)  # the rule: ONNX's IR spec, enforced by onnx.checker
    assert topological_sort(model.graph)
    assert [n.name for n in model.graph.node] == ["relu", "neg"]
    onnx.checker.check_model(model)
    assert not topological_sort(model.graph)  # already in order: unchanged


@pytest.mark.parametrize("target", RUNNER_BACKENDS)
def test_quantized_graphs_pass_onnx_checker(net, tmp_path, target):
    out = quantize_qdq(net["pre"], tmp_path / f"{target}.onnx", net["ranges"], backend=target)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    seen = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    for node in model.graph.node:  # every input is produced before it is read
        assert all(name in seen for name in node.input if name), node.name
        seen.update(node.output)

"""edgekd export on the tiny student: graph contract, dynamic batch, stage chaining, parity, bundle data (the
validation sample's size cap), the default vote rule chosen on validation, manifest validation, atomic output and
clean errors."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekd.core.errors import CheckpointError, DataError, EdgekdError
from edgekd.core.manifest import (
    ManifestError,
    full_output_names,
    load_manifest,
    segment_input_name,
    segment_output_names,
)
from edgekd.core.preprocess import normalize
from edgekd.core.vote import softmax, vote_scores
from edgekd.device.runners.onnxruntime import create_session
from edgekd.training import export as ex
from edgekd.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from edgekd.training.data import reload_data


@pytest.fixture(scope="module")
def ckpt(tiny_runs) -> dict:
    return load_checkpoint(tiny_runs["student"].best)


@pytest.fixture(scope="module")
def model(ckpt) -> torch.nn.Module:
    return model_from_checkpoint(ckpt).eval()


@pytest.fixture(scope="module")
def manifest(tiny_bundle):
    return load_manifest(tiny_bundle)


@pytest.fixture(scope="module")
def val_x(manifest) -> np.ndarray:
    """The bundle's validation sample normalised as the runtime does: (N, C, H, W) float32."""
    with np.load(manifest.file("val_sample")) as f:
        images = f["images"]
    return np.stack([normalize(img, manifest.spec) for img in images])


def _session(path: Path) -> ort.InferenceSession:
    return create_session(path)


def _chain(manifest, x: np.ndarray) -> list[np.ndarray]:
    """Per-exit logits from chaining the stage graphs."""
    logits, feed = [], x
    for i in range(manifest.num_exits):
        sess = _session(manifest.segment_graph(i))
        out = dict(zip(segment_output_names(i, manifest.num_exits), sess.run(None, {segment_input_name(i): feed})))
        logits.append(out[f"logits{i}"])
        feed = out.get(f"feat{i}")
    return logits


# ---------------------------------------------------------------------------------------------- graphs


def test_parity_is_recorded_and_within_tolerance(manifest):
    parity = manifest.parity
    n = manifest.num_exits
    assert parity["tolerance"] == 1e-3
    for key in ("val", "random"):
        assert len(parity[key]["max_abs_diff"]) == len(parity[key]["top1_agreement"]) == n
        assert len(parity[key]["scale"]) == n and min(parity[key]["scale"]) >= 1.0
        for diff, scale in zip(parity[key]["max_abs_diff"], parity[key]["scale"]):
            assert diff <= parity["tolerance"] * scale
        assert parity[key]["vote_max_abs_diff"] <= parity["tolerance"]
    assert min(parity["val"]["top1_agreement"]) >= 99.9
    assert parity["val"]["n"] == manifest.split["n_val_sample"]
    assert 0.0 <= parity["segments_vs_full"] <= parity["tolerance"]


def test_graph_names_shapes_and_ops_follow_the_contract(manifest):
    n, spec = manifest.num_exits, manifest.spec
    graphs = [(manifest.full_graph(), ["image"], full_output_names(n), spec.shape)]
    graphs += [(manifest.segment_graph(i), [segment_input_name(i)], segment_output_names(i, n),
                spec.shape if i == 0 else tuple(manifest.exits[i - 1].feat_shape)) for i in range(n)]
    for path, inputs, outputs, shape in graphs:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        assert [i.name for i in model.graph.input] == inputs, path.name
        assert [o.name for o in model.graph.output] == outputs, path.name
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and tuple(d.dim_value for d in dims[1:]) == tuple(shape), path.name
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}, path.name  # standard ops only
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert manifest.graphs.full.outputs == full_output_names(n)
    assert [g.inputs for g in manifest.graphs.segments] == [[segment_input_name(i)] for i in range(n)]


@pytest.mark.parametrize("batch", [1, 7])
def test_full_graph_has_a_dynamic_batch_and_the_declared_conf_and_vote(manifest, val_x, batch):
    n, k = manifest.num_exits, manifest.spec.num_classes
    out = dict(zip(full_output_names(n), _session(manifest.full_graph()).run(None, {"image": val_x[:batch]})))
    probs = np.stack([softmax(out[f"logits{i}"].astype(np.float64)) for i in range(n)])  # (E, N, K)
    for i in range(n):
        assert out[f"logits{i}"].shape == (batch, k) and out[f"conf{i}"].shape == (batch,)
        np.testing.assert_allclose(out[f"conf{i}"], probs[i].max(axis=1), atol=1e-5)
    vote = manifest.vote
    assert vote.in_graph == ("soft" if vote.rule == "hard" else vote.rule)
    expected = vote_scores(probs, vote.in_graph, vote.weights)
    np.testing.assert_allclose(out["vote"], expected, atol=1e-5)


def test_chained_stages_equal_the_full_graph_and_the_torch_model(manifest, val_x, model):
    chained = _chain(manifest, val_x)
    full = _session(manifest.full_graph()).run([f"logits{i}" for i in range(manifest.num_exits)], {"image": val_x})
    with torch.no_grad():
        reference = model(torch.from_numpy(val_x)).logits
    for i in range(manifest.num_exits):
        assert np.abs(chained[i] - full[i]).max() <= 1e-4
        assert np.abs(chained[i] - reference[i].numpy()).max() <= 1e-4


def test_parity_check_fails_loudly_when_graph_and_model_differ(manifest, val_x, ckpt):
    changed = model_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        next(changed.heads[0].parameters()).add_(0.05)  # the graphs keep the original weights
    graph = ex.FullGraph(changed, [1.0] * manifest.num_exits).eval()
    stages = [manifest.segment_graph(i) for i in range(manifest.num_exits)]
    with pytest.raises(ex.ExportError, match="export parity broken"):
        ex.check_parity(graph, manifest.full_graph(), stages, val_x[:32], 1e-3)


@pytest.mark.parametrize("field, value, message", [
    ("max_abs_diff", [0.0, float("nan")], "exit 1 logits/conf on the val input"),
    ("vote_max_abs_diff", 0.01, "vote on the val input"),
    ("top1_agreement", [100.0, 99.0], "exit 1 top-1 agrees .* 99.0 %"),
])
def test_parity_rules_catch_nan_vote_and_disagreement(field, value, message):
    def part():
        return {"max_abs_diff": [0.0, 0.0], "top1_agreement": [100.0, 100.0], "vote_max_abs_diff": 0.0, "n": 4}

    report = {"val": part(), "random": part(), "segments_vs_full": 0.0, "tolerance": 1e-3}
    ex._enforce(report, 1e-3)  # a clean report passes
    report["val"][field] = value
    with pytest.raises(ex.ExportError, match=f"export parity broken: {message}"):
        ex._enforce(report, 1e-3)


def test_parity_tolerance_scales_with_the_logits():
    """float32 rounding grows with the values: a 2e-3 difference on logits of magnitude 20 is rounding (a sound
    ResNet-18 export failed on it with a fixed bound), the same difference on logits within ±1 is not."""
    def part(scale):
        return {"max_abs_diff": [2e-3], "scale": [scale], "top1_agreement": [100.0], "vote_max_abs_diff": 0.0,
                "n": 4}

    ex._enforce({"val": part(20.0), "random": part(20.0), "segments_vs_full": 0.0, "tolerance": 1e-3}, 1e-3)
    small = r"exit 0 logits/conf on the val input differ by 0.002 .*tolerance 0.001\)"
    with pytest.raises(ex.ExportError, match=small):
        ex._enforce({"val": part(1.0), "random": part(20.0), "segments_vs_full": 0.0, "tolerance": 1e-3}, 1e-3)
    with pytest.raises(ex.ExportError, match=r"tolerance 0.001 × logit scale 1.5"):
        ex._enforce({"val": part(1.5), "random": part(20.0), "segments_vs_full": 0.0, "tolerance": 1e-3}, 1e-3)


def _opset18_reductions(axes_from_input: bool = False) -> onnx.ModelProto:
    """x (N, 4, 3, 3) -> spatial ReduceMean (keepdims), ReduceMax over channels, ReduceSum over channels: the opset 18
    forms the dynamo exporter writes (axes as constant inputs)."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])
    axes = helper.make_tensor_value_info("axes_in", TensorProto.INT64, [1])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
            for n, shape in (("pool", ["N", 4, 1, 1]), ("peak", ["N", 3, 3]), ("total", ["N", 3, 3]))]
    inits = [numpy_helper.from_array(np.array([-1, -2], np.int64), "hw"),
             numpy_helper.from_array(np.array([1], np.int64), "c")]
    nodes = [helper.make_node("ReduceMean", ["x", "hw"], ["pool"], name="mean", keepdims=1, noop_with_empty_axes=0),
             helper.make_node("ReduceMax", ["x", "axes_in" if axes_from_input else "c"], ["peak"], name="max",
                              keepdims=0),
             helper.make_node("ReduceSum", ["x", "c"], ["total"], name="sum", keepdims=0)]
    inputs = [x, axes] if axes_from_input else [x]
    graph = helper.make_graph(nodes, "g", inputs, outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_make_portable_brings_opset_18_reductions_to_what_tensorrt_8_reads(tmp_path):
    from edgekd.device.tensorrt.parser_rules import graph_problems

    before = _opset18_reductions()
    assert graph_problems(before, (8, 5))  # ReduceMean/ReduceMax axes inputs: TensorRT 8.x reduces every axis
    after = ex.make_portable(_opset18_reductions(), 17)
    onnx.checker.check_model(after, full_check=True)
    assert [(o.domain, o.version) for o in after.opset_import] == [("", 17)] and after.ir_version == 8
    ops = {n.name: n for n in after.graph.node}
    assert ops["mean"].op_type == "GlobalAveragePool"
    assert list(ops["max"].input) == ["x"] and onnx.helper.get_attribute_value(ops["max"].attribute[0]) == [1]
    assert list(ops["sum"].input) == ["x", "c"]  # opset 13's form, which every parser reads
    assert [t.name for t in after.graph.initializer] == ["c"]
    assert graph_problems(after, (8, 5)) == []
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    results = []
    for name, model in (("before", before), ("after", after)):
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        results.append(_session(tmp_path / f"{name}.onnx").run(None, {"x": x}))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_make_portable_refuses_what_it_cannot_rewrite_faithfully():
    from onnx import TensorProto, helper

    with pytest.raises(ValueError, match="cannot become an attribute"):
        ex.make_portable(_opset18_reductions(axes_from_input=True), 17)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    ys = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")]
    split = helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)  # num_outputs is new in opset 18
    model = helper.make_model(helper.make_graph([split], "g", [x], ys), opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ValueError, match="Split changed between opset 17 and 18"):
        ex.make_portable(model, 17)


def test_weighted_vote_in_the_torch_wrapper(model):
    weights = [0.2, 0.3, 0.5][: model.num_exits]
    x = torch.randn(5, model.in_chans, *model.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ex.FullGraph(model, [2 * w for w in weights]).eval()(x)
    probs = np.stack([softmax(out[2 * i].numpy().astype(np.float64)) for i in range(model.num_exits)])
    np.testing.assert_allclose(out[-1].numpy(), vote_scores(probs, "weighted", weights), atol=1e-6)


# ---------------------------------------------------------------------------------------------- bundle data + manifest


def test_manifest_contents(manifest, ckpt, tiny_runs):
    d = json.loads((manifest.root / "manifest.json").read_text())  # the file, as every edgekd reads it
    n = manifest.num_exits
    assert (d["precision"], d["backend"], d["name"]) == ("fp32", "onnx", "bundle")
    assert d["exits"] == ckpt["exit_info"] and d["input_spec"] == ckpt["input_spec"]
    assert manifest.thresholds == [0.9] * (n - 1) + [0.0]
    scores = ckpt["metrics"]["val"]["vote"]  # the best validation top-1, ties to the first of soft, hard, weighted
    assert d["vote"]["rule"] == next(r for r in ("soft", "hard", "weighted") if scores[r] == max(scores.values()))
    assert d["vote"]["weights"] == pytest.approx(ckpt["metrics"]["val"]["vote_weights"])
    assert d["split"]["sha256"] == ckpt["split"]["sha256"] and d["split"]["seed"] == ckpt["split"]["seed"]
    assert d["source"]["checkpoint_sha256"] == ex.sha256_file(tiny_runs["student"].best)
    assert d["source"]["model"] == ckpt["model"] and d["source"]["method"]["name"] == ckpt["method"]["name"]
    assert d["versions"]["opset"] == 17 and d["versions"]["torch"] == str(torch.__version__)


def test_val_sample_matches_the_checkpoint_validation_split(manifest, ckpt):
    data = reload_data(ckpt["data"])
    assert data.split.sha256() == ckpt["split"]["sha256"]
    with np.load(manifest.file("val_sample")) as f:
        images, labels = f["images"], f["labels"]
    n = min(400, len(data.val))
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert images.shape == (n, manifest.spec.height, manifest.spec.width, manifest.spec.channels)
    np.testing.assert_array_equal(labels, data.val.labels[:n])
    np.testing.assert_array_equal(images, np.stack([data.val.raw(i) for i in range(n)]))


def _ckpt(scores, weights=(0.2, 0.3, 0.5), trained_on="soft"):
    val = {"vote": scores} if scores is not None else {}
    if weights is not None:
        val["vote_weights"] = list(weights)
    return {"method": {"vote": trained_on}, "metrics": {"val": val}}


@pytest.mark.parametrize("scores, weights, trained_on, rule", [
    ({"soft": 90.0, "hard": 92.0, "weighted": 91.0}, (0.2, 0.3, 0.5), "soft", "hard"),  # not the training --vote
    ({"soft": 92.0, "hard": 92.0, "weighted": 92.0}, (0.2, 0.3, 0.5), "weighted", "soft"),  # ties go to soft
    ({"soft": 90.0, "hard": 91.0, "weighted": 91.0}, (0.2, 0.3, 0.5), "soft", "hard"),  # then VOTE_RULES order
    ({"soft": 90.0, "hard": 89.0, "weighted": 95.0}, (0.2, 0.3, 0.5), "hard", "weighted"),
    ({"soft": 90.0, "hard": 89.0, "weighted": 95.0}, None, "soft", "soft"),  # no weights: no weighted vote
    (None, None, "hard", "hard"),  # an older checkpoint without vote metrics: its training rule
])
def test_default_vote_rule_is_the_best_on_validation(scores, weights, trained_on, rule):
    vote = ex._vote_record(_ckpt(scores, weights, trained_on), 3)
    assert vote.rule == rule
    assert vote.weights == (None if weights is None else pytest.approx(list(weights)))
    assert vote.in_graph == ("soft" if rule == "hard" else rule)


def test_val_sample_size_is_the_split_up_to_a_byte_budget_with_a_floor():
    from edgekd.training import config

    assert (config.EXPORT_VAL_BYTES, config.EXPORT_VAL_MIN) == (20 * 2**20, 500)
    assert config.export_val_size(5_000, (32, 32, 3)) == 5_000  # all of CIFAR's validation split
    assert config.export_val_size(50_000, (32, 32, 3)) == 20 * 2**20 // 3072 == 6826
    assert config.export_val_size(50_000, (224, 224, 3)) == 500  # 139 fit the budget; the floor wins
    assert config.export_val_size(300, (224, 224, 3)) == 300  # never more than there are
    assert config.export_val_size(50_000, (224, 224, 3), requested=40) == 40  # --val-size N is taken as given
    assert config.export_val_size(10, (32, 32, 3), requested=40) == 10


def test_default_export_carries_the_validation_split_up_to_the_cap(tiny_runs, ckpt, tmp_path, monkeypatch):
    """Without --val-size the bundle holds the first images of the validation split up to the byte budget (here
    shrunk to 60 images of 16x16 grey), with the vote rule chosen on validation and both said on the console."""
    from rich.console import Console

    from edgekd.training import config

    data = reload_data(ckpt["data"])
    per_image = int(np.prod(data.val.raw(0).shape))
    assert len(data.val) > 60 and config.export_val_size(len(data.val), data.val.raw(0).shape) == len(data.val)
    monkeypatch.setattr(config, "EXPORT_VAL_BYTES", 60 * per_image)
    monkeypatch.setattr(config, "EXPORT_VAL_MIN", 10)
    buf = io.StringIO()
    m = ex.export_bundle(tiny_runs["student"].best, tmp_path / "b", calib_size=16, console=Console(file=buf, width=200))
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"], f["labels"]
    assert m.split["n_val_sample"] == len(labels) == 60
    np.testing.assert_array_equal(labels, data.val.labels[:60])
    np.testing.assert_array_equal(images, np.stack([data.val.raw(i) for i in range(60)]))
    text = buf.getvalue()
    assert f"default vote rule: {m.vote_rule} (validation top-1 %: soft " in text and "60 labelled images" in text


def test_calib_holds_distinct_train_images(manifest, ckpt):
    data = reload_data(ckpt["data"])
    with np.load(manifest.file("calib")) as f:
        images = f["images"]
    spec = manifest.spec
    assert images.dtype == np.uint8
    assert images.shape == (min(128, len(data.train)), spec.height, spec.width, spec.channels)
    train = {data.train.raw(i).tobytes() for i in range(len(data.train))}
    assert all(img.tobytes() in train for img in images)
    assert len({img.tobytes() for img in images}) == len(images)


def _mutate(bundle: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    path = copy / "manifest.json"
    data = json.loads(path.read_text())
    change(data, copy)
    path.write_text(json.dumps(data))
    return copy


def _set(keys, value):
    def change(data, _root):
        node = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return change


def _tamper(data, root):
    with open(root / data["files"]["calib"]["path"], "ab") as f:
        f.write(b"\0")


def _outside(data, root):
    shutil.copy(root / "full.onnx", root.parent / "full.onnx")  # the hash would match: only the path is wrong
    data["graphs"]["full"]["path"] = "../full.onnx"


def _absolute(data, root):
    data["files"]["calib"]["path"] = str((root / "calib.npz").resolve())


@pytest.mark.parametrize("change, message", [
    (_set(["schema_version"], 99), "unknown schema_version 99"),
    (lambda d, r: d.pop("exits"), "missing key 'exits'"),
    (_set(["thresholds"], "0.9"), "'thresholds' must be list"),
    (_set(["thresholds"], [0.9]), "thresholds must be"),
    (_tamper, "does not match its sha256"),
    (_outside, "leaves the bundle"),
    (_absolute, "leaves the bundle"),
], ids=["schema_version", "missing_key", "wrong_type", "thresholds_length", "tampered", "dotdot", "absolute"])
def test_manifest_validation_rejects_malformed_bundles(tiny_bundle, tmp_path, change, message):
    bundle = _mutate(tiny_bundle, tmp_path, change)
    with pytest.raises(ManifestError, match=message):
        load_manifest(bundle)


# ---------------------------------------------------------------------------------------------- atomicity + errors


def test_existing_output_without_force_fails_and_stays_untouched(tiny_runs, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EdgekdError, match="already exists; pass --force"):
        ex.export_bundle(tiny_runs["student"].best, out)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def _without_dynamo(monkeypatch) -> None:
    """Make the dynamo exporter fail so export falls back to TorchScript (also ~4x faster for these tests)."""
    original = ex._run_exporter

    def run(exporter, *args):
        if exporter == "dynamo":
            raise RuntimeError("simulated dynamo failure")
        return original(exporter, *args)

    monkeypatch.setattr(ex, "_run_exporter", run)


def test_force_replaces_an_existing_bundle_with_the_fallback_exporter(tiny_runs, tiny_bundle, tmp_path, monkeypatch):
    from rich.console import Console

    _without_dynamo(monkeypatch)
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)  # an earlier bundle: --force replaces it
    (out / "old.txt").write_text("old")
    buf = io.StringIO()
    with pytest.warns(UserWarning, match="simulated dynamo failure; used the torchscript exporter"):
        m = ex.export_bundle(tiny_runs["student"].best, out, val_size=40, calib_size=16, force=True, name="tiny",
                             console=Console(file=buf, width=120))
    assert not (out / "old.txt").exists() and m.name == "tiny"
    m = load_manifest(out)
    assert m.versions["exporter"] == "torchscript" and m.split["n_val_sample"] == 40
    for path in [m.full_graph(), *(m.segment_graph(i) for i in range(m.num_exits))]:  # the fallback is portable too
        graph = onnx.load(str(path))
        assert graph.opset_import[0].version == 17, path.name
        assert not [n for n in graph.graph.node if n.op_type.startswith("Reduce") and len(n.input) > 1], path.name
    assert max(m.parity["val"]["max_abs_diff"]) <= 1e-3
    assert [o.name for o in onnx.load(str(m.full_graph())).graph.output] == full_output_names(m.num_exits)
    assert "full.onnx" in buf.getvalue() and "parity" in buf.getvalue()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary or old directories left


@pytest.mark.parametrize("existing", [False, True])
def test_failure_midway_leaves_nothing_behind(tiny_runs, tiny_bundle, tmp_path, monkeypatch, existing):
    seen = []

    def broken(graph, full, stages, x_val, tol):
        seen.append(full.exists() and all(p.exists() for p in stages))  # the graphs were written already
        raise ex.ExportError("export parity broken: injected")

    _without_dynamo(monkeypatch)
    monkeypatch.setattr(ex, "check_parity", broken)
    out = tmp_path / "bundle"
    if existing:
        shutil.copytree(tiny_bundle, out)
        (out / "keep.txt").write_text("mine")
    with pytest.warns(UserWarning), pytest.raises(ex.ExportError, match="injected"):
        ex.export_bundle(tiny_runs["student"].best, out, val_size=40, calib_size=16, force=True)
    assert seen == [True]
    if existing:  # the old bundle survives a failed --force export
        assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
        assert (out / "keep.txt").read_text() == "mine"
        assert load_manifest(out).to_json() == load_manifest(tiny_bundle).to_json()
    else:
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoint_is_a_clean_error(tiny_runs, tmp_path, content):
    bad = tmp_path / "bad.pt"
    if content == "truncated":
        whole = Path(tiny_runs["student"].best).read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    else:
        bad.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        ex.export_bundle(bad, tmp_path / "bundle")
    assert "bad.pt" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "bundle").exists()


def test_missing_checkpoint_is_a_clean_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ex.export_bundle(tmp_path / "nope.pt", tmp_path / "bundle")


def test_changed_data_is_refused(ckpt, tmp_path):
    changed = {k: v for k, v in ckpt.items() if k not in ("format", "format_version")}
    changed["split"] = {**ckpt["split"], "sha256": "0" * 64}
    save_checkpoint(tmp_path / "changed.pt", changed)
    with pytest.raises(DataError, match="data changed"):
        ex.export_bundle(tmp_path / "changed.pt", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def _three_exits(n: int, deep_wrong: int, weights=None):
    """(E, N, K) probabilities where exits 0 and 1 are right everywhere and exit 2 is wrong on ``deep_wrong``."""
    labels = np.zeros(n, dtype=np.int64)
    right = np.tile([0.7, 0.3], (n, 1))
    deep = right.copy()
    deep[:deep_wrong] = [0.3, 0.7]
    return np.stack([right, right, deep]), labels


@pytest.mark.parametrize("n, deep_wrong, answer, rule", [
    (10, 3, "deepest", "hard"),  # the votes are 30 points ahead on 10 images: not beyond noise
    (400, 40, "vote", "soft"),  # beyond noise: the most accurate rule that beats it (ties: soft first)
    (400, 0, "deepest", "hard"),  # every answer ties
])
def test_full_vote_answer_is_the_deepest_exit_unless_a_vote_beats_it_beyond_noise(n, deep_wrong, answer, rule):
    probs, labels = _three_exits(n, deep_wrong)
    vote = ex._choose_answer(ex.VoteRecord("hard", [0.2, 0.3, 0.5], "soft"), probs, labels)
    assert (vote.answer, vote.rule) == (answer, rule)
    assert vote.in_graph == ("soft" if rule == "hard" else rule)


def test_the_manifest_records_and_validates_the_full_answer(manifest, tmp_path):
    assert manifest.full_answer in ("deepest", "vote")
    copy = tmp_path / "b"
    shutil.copytree(manifest.root, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["vote"]["answer"] = "exit0"
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="vote.answer"):
        load_manifest(copy)
    del data["vote"]["answer"]  # a bundle written before the choice existed: it votes
    (copy / "manifest.json").write_text(json.dumps(data))
    assert load_manifest(copy).full_answer == "vote"

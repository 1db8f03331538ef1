"""edgekd build on the tiny exported student: fp32/int8/fp16 with ONNX Runtime, verification, certified
thresholds (and the point fit), calibration cache, clean failures, atomic output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.certify import GRID, reference_predictions
from edgekd.core.early_exit import fit_thresholds, simulate
from edgekd.core.manifest import load_manifest
from edgekd.device.chain import Chain, full_probs
from edgekd.device.compiler import BuildError, build_bundle
from tests.helpers import assert_cli_runs_without_torch


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("calib_cache")


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("built") / "int8"
    build_bundle(tiny_bundle, precision="int8", out=out, cache_dir=str(cache_dir))
    return out


def _val(m):
    with np.load(m.file("val_sample")) as f:
        return f["images"], f["labels"]


def _chain(m):
    images, _ = _val(m)
    with Chain.from_manifest(m) as chain:
        return chain.probs(images, m.spec)


def test_int8_keeps_every_exit_within_max_drop(int8_bundle):
    m = load_manifest(int8_bundle)
    assert (m.precision, m.backend) == ("int8", "onnxruntime")
    ver = m.build.verification
    assert ver["max_drop"] <= 1.0 and len(ver["rows"]) == m.num_exits + 1
    # the stored verification is real: recompute exit top-1 from the built full graph
    images, labels = _val(m)
    probs = full_probs("onnxruntime", m.full_graph(), images, m.spec, m.num_exits)
    for i, row in enumerate(ver["rows"][:-1]):
        assert row["built_top1"] == pytest.approx(100 * np.mean(probs[i].argmax(1) == labels))
    # the graphs really are quantized, with uint8 activations for ONNX Runtime
    import onnx

    g = onnx.load(str(m.full_graph())).graph
    assert any(n.op_type == "QuantizeLinear" for n in g.node)
    zps = [i for i in g.initializer if i.name.endswith("zero_point") and i.data_type == onnx.TensorProto.UINT8]
    assert zps


def test_int8_stage_chain_matches_full_graph_within_tolerance(int8_bundle, tiny_bundle):
    m = load_manifest(int8_bundle)
    images, _ = _val(m)
    full = full_probs("onnxruntime", m.full_graph(), images, m.spec, m.num_exits)
    chain = _chain(m)
    agreement = np.mean(full.argmax(2) == chain.argmax(2))
    assert agreement >= 0.97 and np.abs(full - chain).max() < 0.25


def _reference(m):
    """The built full graph's best full answer on the validation sample, chosen here."""
    images, labels = _val(m)
    probs = full_probs("onnxruntime", m.full_graph(), images, m.spec, m.num_exits)
    return reference_predictions(probs, labels, m.vote_weights)


def test_default_build_stores_the_certificate_and_keeps_the_safe_set_on_400_images(int8_bundle):
    """ε = 0.5 points at 90% confidence needs at least 460 images without one early-exit error; the bundle has 400,
    so nothing is certified and only the last exit answers, and the manifest says so."""
    m = load_manifest(int8_bundle)
    info = m.build.thresholds
    _, labels = _val(m)
    assert info["fit"] == "certified" and info["certified"] is False and info["cost"] == "macs"
    assert info["epsilon"] == 0.5 and info["delta"] == pytest.approx(0.1) and info["n"] == len(labels) == 400
    assert info["data"] == {"source": "val_sample", "n": 400} and info["images_needed"] == 460
    assert m.thresholds == [GRID[0]] * (m.num_exits - 1) + [0.0] == info["thresholds"]
    name, ref, scores = _reference(m)
    assert info["reference"] == name and info["reference_accuracy"] == pytest.approx(scores[name])
    macs = [e.macs for e in m.exits]
    res = simulate(_chain(m), m.thresholds, macs, labels)
    assert res.exit_fraction[-1] == 1.0 and info["accuracy"] == pytest.approx(res.accuracy)
    assert info["loss_rate"] == pytest.approx(100 * np.mean((res.pred != labels) & (ref == labels)))
    assert info["saving"] == 0.0 and info["upper_bound"] >= info["loss_rate"]


@pytest.fixture(scope="module")
def certified(tiny_bundle, tmp_path_factory):
    """An FP32 build with a 5-point budget at 80% confidence: enough for 400 images to certify early exit."""
    out = tmp_path_factory.mktemp("certified") / "fp32"
    result = CliRunner().invoke(app, ["build", str(tiny_bundle), "--precision", "fp32", "--out", str(out),
                                      "--target-drop", "5", "--confidence", "0.8"])
    assert result.exit_code == 0, result.output
    return out, result


def test_a_larger_budget_certifies_early_exit_and_says_so(certified):
    out, result = certified
    m = load_manifest(out)
    info = m.build.thresholds
    assert info["fit"] == "certified" and info["certified"] is True and info["epsilon"] == 5.0
    assert info["delta"] == pytest.approx(0.2) and info["upper_bound"] <= 5.0 and info["saving"] > 0
    assert m.thresholds == info["thresholds"] and m.thresholds[0] < 1.0 and m.thresholds[-1] == 0.0
    _, labels = _val(m)
    name, ref, _ = _reference(m)
    res = simulate(_chain(m), m.thresholds, [e.macs for e in m.exits], labels)
    assert res.exit_fraction[-1] < 1.0 and info["exit_fraction"] == pytest.approx(res.exit_fraction)
    assert info["loss_rate"] == pytest.approx(100 * np.mean((res.pred != labels) & (ref == labels)))
    output = " ".join(result.output.split())
    assert f"certified: early exit within 5 points of {name} with 80% confidence (400 images" in output


def test_build_measures_whether_early_exit_pays_here_and_says_so(certified):
    """Build times early exit at the certified thresholds against the full graph on this device, prints the verdict
    and keeps the figure with the device (the value is a timing: only its form and consistency are tested)."""
    from edgekd.device.profile.environment import device_name
    from edgekd.device.profile.payoff import payoff_line

    out, result = certified
    m = load_manifest(out)
    record = m.build.early_exit
    assert record["device"] == device_name("onnxruntime") and record["batch"] == 1
    assert record["thresholds"] == m.thresholds and record["images"] == 64 and record["rounds"] >= 1
    assert set(record["ms"]) == {"one-call", "chain", "full-vote"} and all(v > 0 for v in record["ms"].values())
    assert record["graph"] == min(("one-call", "chain"), key=lambda g: record["ms"][g])
    assert record["saving"] == pytest.approx(1 - record["ms"][record["graph"]] / record["ms"]["full-vote"])
    assert sum(record["exit_fraction"]) == pytest.approx(1.0) and record["exit_fraction"][-1] < 1.0
    line = payoff_line(record)
    assert line.startswith("early exit saves " if record["saving"] > 0 else "early exit costs ")
    assert line.endswith("; use --mode full-vote") == (record["saving"] <= 0)
    assert " ".join(line.split()) in " ".join(result.output.split())


def test_the_payoff_line_says_saves_or_costs_and_what_to_use():
    from edgekd.device.profile.payoff import payoff_line

    record = {"ms": {"one-call": 0.6, "chain": 0.9, "full-vote": 1.0}, "graph": "one-call", "saving": 0.4}
    assert payoff_line(record).startswith("early exit saves 40% of the latency here (0.600 ms per frame on the "
                                          "one-call graph against 1.000 ms for the full graph")
    record = {"ms": {"chain": 1.25, "full-vote": 1.0}, "graph": "chain", "saving": -0.25}
    line = payoff_line(record)
    assert line.startswith("early exit costs 25% more here (1.250 ms per frame on the chain graph")
    assert line.endswith("; use --mode full-vote")


def test_run_shows_the_certificate_line(certified, tiny_bundle, tmp_path):
    """`edgekd run` ends with the line of the certificate behind the thresholds it used; --threshold, or a bundle
    without a certificate, says "thresholds not certified"."""
    import io

    import cv2
    from rich.console import Console

    from edgekd.device.runtime.app import RunOptions, run_stream

    out, _ = certified
    images, _ = _val(load_manifest(out))
    for i, img in enumerate(images[:4]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    line = load_manifest(out).build.thresholds

    def run(bundle, **options):
        buf = io.StringIO()
        summary = run_stream(bundle, str(tmp_path), RunOptions(display="off", **options),
                             console=Console(file=buf, width=400))
        return summary, " ".join(buf.getvalue().split())

    summary, text = run(out)
    assert summary["thresholds"].startswith("certified: early exit within 5 points of " + line["reference"])
    assert summary["thresholds"] in text
    from edgekd.device.profile.payoff import payoff_line

    record = load_manifest(out).build.early_exit  # and whether early exit pays here, from build
    assert summary["early_exit"] == f"{record['graph']} graph; {payoff_line(record)}"
    assert summary["early_exit"] in text
    summary, text = run(out, threshold=0.5)
    assert summary["thresholds"].startswith("thresholds not certified (the thresholds in use are not those")
    assert "thresholds not certified" in text
    summary, text = run(tiny_bundle)  # exported: no certificate
    assert summary["thresholds"] == "thresholds not certified" and "thresholds not certified" in text
    assert run(out, mode="full-vote")[0]["thresholds"] is None  # no thresholds in play


def test_the_not_certified_message(tiny_bundle, tmp_path):
    result = CliRunner().invoke(app, ["build", str(tiny_bundle), "--precision", "fp32", "--out", str(tmp_path / "n")])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "no early exit certified within 0.5 points of" in output and "at 90% confidence on 400 images" in output
    assert "kept the safe set" in output and "at least 460 images" in output
    assert "edgekd profile --write-thresholds --data" in output


def test_point_fit_still_works_and_is_labelled_not_certified(tiny_bundle, tmp_path):
    result = CliRunner().invoke(app, ["build", str(tiny_bundle), "--precision", "fp32", "--out", str(tmp_path / "p"),
                                      "--fit", "point", "--target-drop", "0.5"])
    assert result.exit_code == 0, result.output
    assert "point estimate, not certified" in " ".join(result.output.split())
    m = load_manifest(tmp_path / "p")
    info = m.build.thresholds
    assert info["fit"] == "point" and info["certified"] is False and info["delta"] is None
    assert info["upper_bound"] is None and info["method"].startswith("point estimate, not certified")
    _, labels = _val(m)
    name, _, scores = _reference(m)
    macs = [e.macs for e in m.exits]
    fit = fit_thresholds(_chain(m), labels, macs, reference_accuracy=scores[name], target_drop=0.5)
    assert m.thresholds == pytest.approx(fit.thresholds) and info["accuracy"] == pytest.approx(fit.accuracy)
    assert fit.accuracy >= scores[name] - 0.5 - 1e-9 or not fit.feasible


@pytest.mark.parametrize("args, message", [
    (["--confidence", "1"], "--confidence"), (["--confidence", "0.4"], "--confidence"),
    (["--confidence", "nan"], "--confidence"), (["--target-drop", "0"], "--target-drop"),
    (["--target-drop", "-1", "--fit", "point"], "--target-drop"), (["--fit", "guess"], "--fit"),
])
def test_bad_threshold_options_fail_before_any_work(tiny_bundle, tmp_path, args, message):
    result = CliRunner().invoke(app, ["build", str(tiny_bundle), "--precision", "fp32", "--out", str(tmp_path / "b"),
                                      *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_fp32_build_is_exact_and_cache_is_reused(tiny_bundle, int8_bundle, cache_dir, tmp_path):
    m = build_bundle(tiny_bundle, precision="fp32", backend="onnxruntime", out=tmp_path / "fp32")
    assert m.build.verification["max_drop"] == 0.0
    assert all(r["agreement"] == 100.0 for r in m.build.verification["rows"])
    n_cached = len(list(cache_dir.iterdir()))
    again = build_bundle(tiny_bundle, precision="int8", out=tmp_path / "int8b", cache_dir=str(cache_dir))
    assert all(again.build.calibration["reused"].values())
    assert len(list(cache_dir.iterdir())) == n_cached
    first = load_manifest(int8_bundle)
    assert again.graphs.full.sha256 == first.graphs.full.sha256


def test_fp16_build_runs_and_says_it_is_slow_on_cpu(tiny_bundle, tmp_path):
    result = CliRunner().invoke(app, ["build", str(tiny_bundle), "--precision", "fp16", "--out", str(tmp_path / "h")])
    assert result.exit_code == 0, result.output
    assert "slower than FP32" in result.output
    assert load_manifest(tmp_path / "h").precision == "fp16"


def test_target_that_cannot_do_int8_fails_before_any_work(tiny_bundle, tmp_path):
    result = CliRunner().invoke(app, ["build", str(tiny_bundle), "--precision", "int8", "--target", "jetson-nano",
                                      "--out", str(tmp_path / "n")])
    assert result.exit_code == 2 and "jetson-nano" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "101"])
def test_a_max_drop_that_is_not_a_budget_fails_before_any_work(tiny_bundle, tmp_path, value):
    result = CliRunner().invoke(app, ["build", str(tiny_bundle), "--precision", "int8", "--max-drop", value,
                                      "--out", str(tmp_path / "f"), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2 and "--max-drop" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "f").exists() and list(tmp_path.glob(".f.*")) == [] and not (tmp_path / "c").exists()


def test_existing_output_needs_force_and_interrupted_build_leaves_nothing(tiny_bundle, tmp_path, monkeypatch):
    import shutil

    from edgekd.core.errors import EdgekdError

    out = tmp_path / "o"
    shutil.copytree(tiny_bundle, out)  # an earlier bundle: --force may replace it
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EdgekdError, match="--force"):
        build_bundle(tiny_bundle, precision="fp32", out=out)
    assert (out / "keep.txt").read_text() == "mine"
    import edgekd.device.compiler.builder as builder

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "early_exit_thresholds", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_bundle(tiny_bundle, precision="fp32", out=out, force=True)
    assert (out / "keep.txt").read_text() == "mine"  # the old directory survives an interrupted rebuild
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_calib_data_from_npz_and_a_built_bundle_cannot_be_rebuilt(tiny_bundle, int8_bundle, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", images=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8))
    m = build_bundle(tiny_bundle, precision="int8", out=tmp_path / "c", calib_data=tmp_path / "calib.npz",
                     cache_dir=None, max_drop=100.0)
    assert m.build.calibration["images"] == 40
    with pytest.raises(BuildError, match="already built"):
        build_bundle(int8_bundle, precision="int8", out=tmp_path / "d")


def test_build_never_imports_torch(tiny_bundle, tmp_path):
    assert_cli_runs_without_torch(["build", str(tiny_bundle), "--precision", "int8", "--out", str(tmp_path / "nt"),
                                   "--cache-dir", str(tmp_path / "cc")])


def test_the_default_calibration_cache_is_the_users_not_the_working_directory(tmp_path, monkeypatch):
    """Issue 22: an int8 build without --cache-dir keeps its ranges under $EDGEKD_CACHE/calibration (the per-user
    cache, beside the engine cache), and writes nothing into the directory it runs from."""
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "bundle-abf6d4b"
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "user"))
    build_bundle(fixture, precision="int8", out=tmp_path / "int8", max_drop=100.0)
    assert list((tmp_path / "user" / "calibration").glob("*.json"))
    assert list(here.iterdir()) == []

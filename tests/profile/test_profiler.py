"""`edgekd profile` on tiny built bundles: report contents, independent accuracy, --write-thresholds, no torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.build import build_bundle
from edgekd.build import evaluate as ev
from edgekd.cli import app
from edgekd.core.manifest import load_manifest
from tests.helpers import assert_cli_runs_without_torch

FIELDS = ("min", "mean", "median", "p90", "p95", "p99", "max", "cv")


@pytest.fixture(scope="module")
def bundles(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("prof")
    out = {}
    for p in ("fp32", "int8"):
        out[p] = root / p
        build_bundle(tiny_bundle, precision=p, backend="onnxruntime", out=out[p], cache_dir=None, max_drop=100.0)
    return out


@pytest.fixture(scope="module")
def report(bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["profile", str(bundles["fp32"]), str(bundles["int8"]), "--out", str(out),
                                      "--iterations", "20", "--warmup", "0.05", "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert "early exit" in result.output
    return json.loads((out / "report.json").read_text())


def test_report_has_every_bundle_exit_and_field(report):
    assert [b["precision"] for b in report["bundles"]] == ["fp32", "int8"]
    for b in report["bundles"]:
        n = len(b["accuracy"]["exits"])
        assert n == 3
        for key in [f"stage{i}" for i in range(n)] + [f"exit{i}" for i in range(n)] + ["full"]:
            stats = b["latency"][key]["latency"]
            values = [stats[f] for f in FIELDS]
            assert all(np.isfinite(values))
            assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["p95"] <= stats["p99"] <= stats["max"]
            assert b["latency"][key]["batched"]["batch"] == 4
        assert b["operating_point"]["operating_point"] is True
        assert b["pareto"] and all(0 <= i < len(b["sweep"]) for i in b["pareto"])
        assert b["energy"] == "not available"  # no power rails on this machine: reported, never guessed
        assert b["environment"]["cpu"] and b["environment"]["backend"] == "onnxruntime"


def test_accuracy_equals_an_independent_count(report, bundles):
    m = load_manifest(bundles["int8"])
    with np.load(m.file("val_sample")) as f:
        images, labels = f["images"], f["labels"]
    runner = ev.open_runners("onnxruntime", [m.full_graph()])[0]
    probs = ev.run_full(runner, images, m.spec, m.num_exits)
    runner.deactivate()
    got = report["bundles"][1]["accuracy"]["exits"]
    for i in range(m.num_exits):
        assert got[i]["top1"] == pytest.approx(100 * np.mean(probs[i].argmax(1) == labels))
        top5 = np.argsort(-probs[i], axis=1)[:, :5]
        assert got[i]["top5"] == pytest.approx(100 * np.mean((top5 == labels[:, None]).any(1)))


def test_sweep_end_points(report):
    b = report["bundles"][0]
    zero = next(p for p in b["sweep"] if p["threshold"] == 0.0)
    assert zero["exit_fraction"][0] == 1.0 and zero["accuracy"] == pytest.approx(b["accuracy"]["exits"][0]["top1"],
                                                                                 abs=1.0)
    never = max((p for p in b["sweep"] if p["threshold"] != "fitted"), key=lambda p: p["threshold"])
    assert never["exit_fraction"][-1] == 1.0


def test_write_thresholds_changes_only_the_thresholds(bundles, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundles["int8"], copy)
    before = json.loads((copy / "manifest.json").read_text())
    before["thresholds"] = [0.0, 0.0, 0.0]  # a different starting point, so the refit must change it
    (copy / "manifest.json").write_text(json.dumps(before))
    result = CliRunner().invoke(app, ["profile", str(copy), "--out", str(tmp_path / "r"), "--iterations", "5",
                                      "--warmup", "0.01", "--write-thresholds", "--target-drop", "0.5"])
    assert result.exit_code == 0, result.output
    after = json.loads((copy / "manifest.json").read_text())
    assert after["thresholds"] != before["thresholds"] and after["thresholds"][-1] == 0.0
    assert {k: v for k, v in after.items() if k != "thresholds"} == \
        {k: v for k, v in before.items() if k != "thresholds"}
    load_manifest(copy)  # still valid


def test_profile_never_imports_torch(bundles, tmp_path):
    assert_cli_runs_without_torch(["profile", str(bundles["int8"]), "--out", str(tmp_path / "r"), "--iterations",
                                   "5", "--warmup", "0.01"])

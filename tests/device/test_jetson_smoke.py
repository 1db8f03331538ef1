"""scripts/harness/jetson_smoke.sh, the script a Jetson owner runs on a workstation-made bundle: its bash syntax, and real
runs on this CPU with the ONNX Runtime backend forced (EDGEKD_SMOKE_BACKEND=onnxruntime), checking the archive.

The TensorRT steps themselves (the script's default backend) have not run anywhere: there is no Jetson or GPU here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "harness" / "jetson_smoke.sh"
STEPS = ["system", "doctor", "build-fp16", "build-int8", "video", "run-fp16-early-exit", "run-fp16-full-vote",
         "run-int8-early-exit", "run-int8-full-vote", "profile", "report"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None,
                                reason="needs bash and tar")


def smoke(bundle: Path, out: Path, frames: int = 8, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "EDGEKD_SMOKE_BACKEND": "onnxruntime",
            "EDGEKD_SMOKE_OUT": str(out), "EDGEKD_SMOKE_FRAMES": str(frames), "EDGEKD_SMOKE_ITERATIONS": "3",
            "EDGEKD_THREADS": "2", **env}
    return subprocess.run(["bash", str(SCRIPT), str(bundle)], capture_output=True, text=True, env=full,
                          cwd=out.parent, timeout=600)


def summary(out: Path) -> dict:
    lines = (out / "summary.tsv").read_text().splitlines()
    assert lines[0] == "step\tstatus\tseconds"
    return {name: status for name, status, _ in (line.split("\t") for line in lines[1:])}


def test_bash_syntax():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert SCRIPT.read_text().splitlines()[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_usage_and_bad_backend(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "BUNDLE" in proc.stderr
    proc = smoke(tmp_path / "bundle", tmp_path / "out", EDGEKD_SMOKE_BACKEND="cuda")
    assert proc.returncode == 2 and "tensorrt or onnxruntime" in proc.stderr


def test_full_run_on_the_tiny_bundle(tiny_bundle, tmp_path):
    """Every step passes on a CPU with ONNX Runtime, and the archive holds what a Jetson owner would send back."""
    out = tmp_path / "smoke"
    proc = smoke(tiny_bundle, out, EDGEKD_SMOKE_FORCE="1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert summary(out) == {step: "0" for step in STEPS}
    archive = Path(f"{out}.tar.gz")
    assert f"archive: {archive}" in proc.stdout

    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        member = lambda name: tar.extractfile(f"smoke/{name}").read().decode()  # noqa: E731
        for name in ("summary.tsv", "doctor.json", "doctor.txt", "manifests/fp16.json", "manifests/int8.json",
                     "profile/report.json", "profile/report.md", "runs/video-labels.json", "acceptance.json"):
            assert f"smoke/{name}" in names, sorted(names)
        logs = sorted(n.split("/")[-1] for n in names if n.startswith("smoke/logs/"))
        assert logs == [f"{i:02d}-{step}.log" for i, step in enumerate(STEPS, 1)]
        assert not [n for n in names if n.startswith(("smoke/builds", "smoke/video", "smoke/calibration",
                                                      "smoke/engine-cache"))]

        doctor = json.loads(member("doctor.json"))
        assert doctor["target"]["name"] == "x86-cpu" and doctor["problems"] == []
        assert json.loads(member("manifests/int8.json"))["precision"] == "int8"
        labels = json.loads(member("runs/video-labels.json"))
        assert len(labels) == 8
        for precision in ("fp16", "int8"):
            for mode in ("early-exit", "full-vote"):
                records = [json.loads(line) for line in member(f"runs/{precision}-{mode}.jsonl").splitlines()]
                assert [r["index"] for r in records] == list(range(8))
                assert all(isinstance(r["label"], int) and r["exit"] >= 0 for r in records)
        report = json.loads(member("profile/report.json"))
        assert len(report["bundles"]) == 2

        accept = json.loads(member("acceptance.json"))  # the one file a user attaches to a bug report
        assert accept["passed"] is True and accept["backend"] == "onnxruntime" and accept["target"] == "x86-cpu"
        assert accept["doctor"] == doctor and accept["profile"] == report
        assert set(accept["steps"]) == set(STEPS) - {"report"}
        assert set(accept["builds"]) == {"fp16", "int8"}
        for name, build in accept["builds"].items():
            check = build["accuracy_vs_onnxruntime_fp32"]  # the build's verification against ONNX Runtime FP32
            assert build["precision"] == name and check["n"] > 0
            assert check == json.loads(member(f"manifests/{name}.json"))["build"]["verification"]
        assert set(accept["runs"]) == {f"{p}-{m}" for p in ("fp16", "int8") for m in ("early-exit", "full-vote")}
        for name, run in accept["runs"].items():
            records = [json.loads(line) for line in member(f"runs/{name}.jsonl").splitlines()]
            right = sum(r["label"] == labels[r["index"]] for r in records)
            assert run["frames"] == 8 and run["top1_vs_video_labels"] == right / 8
            assert sum(run["exits"].values()) == 8
    assert "acceptance report:" in proc.stdout


def test_a_failed_step_is_recorded_and_the_rest_goes_on(tmp_path):
    """A bundle that is not there: both builds fail, what needs them is skipped, the archive is still written."""
    out = tmp_path / "smoke"
    proc = smoke(tmp_path / "no-such-bundle", out)
    assert proc.returncode == 1, proc.stdout[-3000:]
    status = summary(out)
    assert status["system"] == status["doctor"] == "0"
    assert status["build-fp16"] == status["build-int8"] == "2"  # edgekd's one-line error exit
    assert status["video"] != "0"
    assert status["run-int8-full-vote"].startswith("skipped") and status["profile"].startswith("skipped")
    assert "error:" in (out / "logs" / "03-build-fp16.log").read_text()
    assert Path(f"{out}.tar.gz").is_file() and f"archive: {out}.tar.gz" in proc.stdout
    accept = json.loads((out / "acceptance.json").read_text())  # written even when the builds failed
    assert accept["passed"] is False and accept["builds"] == {} and accept["steps"]["build-fp16"] == "2"

"""``edgekd run --record-frames``: frames of the site kept losslessly, then certified without labels by
``edgekd profile --data DIR --write-thresholds`` (the disagreement loss)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.manifest import load_manifest
from edgekd.device.runtime.record import FrameRecorder
from tests.device.runtime.test_app import N_FRAMES, _decoded, built, frames, video  # noqa: F401  (fixtures)


def _run(*args):
    return CliRunner().invoke(app, ["run", *map(str, args), "--headless"])


def test_recorded_frames_are_the_source_frames_every_nth_and_certify_without_labels(built, video, tmp_path):
    rec = tmp_path / "site"
    result = _run(built, "--source", video, "--record-frames", rec, "--record-every", 2)
    assert result.exit_code == 0, result.output
    files = sorted(rec.iterdir())
    assert [f.name for f in files] == [f"frame-{i:06d}.png" for i in range(N_FRAMES // 2)]
    decoded = _decoded(video)[::2]
    for path, frame in zip(files, decoded):
        assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), frame)  # lossless, as the source gave it
    assert f"{N_FRAMES // 2} frames in" in " ".join(result.output.split())

    copy = tmp_path / "b"
    shutil.copytree(built, copy)
    result = CliRunner().invoke(app, ["profile", str(copy), "--out", str(tmp_path / "r"), "--iterations", "3",
                                      "--warmup", "0.01", "--batch", "1", "--frame-size", "64x48",
                                      "--write-thresholds", "--target-drop", "5", "--data", str(rec)])
    assert result.exit_code == 0, result.output
    record = json.loads((copy / "manifest.json").read_text())["build"]["thresholds"]
    m = load_manifest(copy)
    answer = f"exit{m.num_exits - 1}" if m.full_answer == "deepest" else f"vote:{m.vote_rule}"
    assert record["loss"] == "disagreement" and record["reference"] == answer
    assert record["data"] == {"source": "unlabelled", "n": N_FRAMES // 2, "path": str(rec)}
    assert record["accuracy"] is None and record["n"] == N_FRAMES // 2
    # the point fit needs labels: one line, nothing written
    before = (copy / "manifest.json").read_bytes()
    result = CliRunner().invoke(app, ["profile", str(copy), "--out", str(tmp_path / "r2"), "--write-thresholds",
                                      "--fit", "point", "--data", str(rec)])
    assert result.exit_code == 2 and "needs labels" in result.output
    assert (copy / "manifest.json").read_bytes() == before


def test_recording_never_mixes_with_other_files_and_checks_its_options(built, video, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    result = _run(built, "--source", video, "--record-frames", busy)
    assert result.exit_code == 2 and "new or empty folder" in result.output
    assert [p.name for p in busy.iterdir()] == ["mine.txt"]
    result = _run(built, "--source", video, "--record-frames", tmp_path / "x", "--record-every", 0)
    assert result.exit_code == 2 and "--record-every" in result.output
    assert not (tmp_path / "x").exists()


def test_the_recorder_stops_at_its_cap(tmp_path, monkeypatch):
    import edgekd.device.runtime.record as record

    monkeypatch.setattr(record, "RECORD_MAX", 3)
    rec = FrameRecorder(tmp_path / "f")
    for _ in range(5):
        rec.add(np.zeros((4, 4, 3), dtype=np.uint8))
    assert rec.saved == 3 and len(list((tmp_path / "f").iterdir())) == 3 and "cap of 3" in rec.summary()

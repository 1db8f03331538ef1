"""Issue 14 on the training wing: a checkpoint that loads but holds the wrong types, a binary or too-deep --config,
an --out that cannot be written (refused before any data is read or any epoch trained), and valid images too
small for the fast 1/8-scale readability check. Each is one line ``error: …`` and exit 2, or is read right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the torch wing's faults: skipped in the device-only venvs (make test)

from edgekd.core.errors import CheckpointError
from edgekd.training.checkpoint import FORMAT, FORMAT_VERSION, REQUIRED_KEYS, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def edgekd(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr[-3000:])
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _checkpoint(path: Path, **values) -> Path:
    """A file that loads with weights_only and has every required key, with ``values`` in place of the defaults."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **{k: {} for k in REQUIRED_KEYS}}
    payload.update(exit_info=[], class_names=["a", "b"], state_dict={"w": torch.zeros(1)},
                   model={"name": "resnet8", "kwargs": {}},
                   input_spec={"height": 8, "width": 8, "channels": 1, "mean": [0.5], "std": [0.5],
                               "class_names": ["a", "b"]})
    payload.update(values)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("values, needle", [
    ({"model": "resnet8"}, "'model' must be a mapping"),
    ({"model": {"name": "resnet8", "kwargs": "x"}}, "'model' must be a mapping"),
    ({"state_dict": {"w": "not a tensor"}}, "'state_dict' must map"),
    ({"exit_info": "x"}, "'exit_info' must be a list"),
    ({"input_spec": {"height": "big"}}, "input_spec"),
], ids=["model-string", "kwargs-string", "state-not-tensors", "exit-info", "spec"])
def test_a_checkpoint_of_the_wrong_shape_is_refused_in_one_line(tmp_path, values, needle):
    path = _checkpoint(tmp_path / "bad.pt", **values)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_export_of_a_checkpoint_whose_model_is_a_bare_string_is_one_line(tmp_path):
    path = _checkpoint(tmp_path / "bad.pt", model="resnet8")  # a TypeError deep in the export before
    one_line_error(edgekd("export", path, "--out", tmp_path / "bundle", cwd=tmp_path), "'model' must be a mapping")
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, ("[" * 20000).encode()], ids=["binary", "deep"])
def test_a_config_file_that_is_not_yaml_text_is_one_line(tmp_path, content):
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    one_line_error(edgekd("train", "--config", config, "--out", tmp_path / "run", cwd=tmp_path), "cannot parse")
    assert not (tmp_path / "run").exists()


def test_outputs_under_a_regular_file_are_refused_before_training_or_exporting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(edgekd("train", "--epochs", "1", "--out", blocker / "run", cwd=tmp_path), "--out",
                   "is not a directory")
    one_line_error(edgekd("export", tmp_path / "missing.pt", "--out", blocker / "bundle", cwd=tmp_path), "--out",
                   "is not a directory")


def test_valid_images_smaller_than_eight_pixels_are_readable(tmp_path):
    from edgekd.training.data.folder import is_readable, scan_folder

    for cls in ("a", "b"):
        for i, shape in enumerate([(4, 4, 3), (1, 1), (7, 3, 3)]):
            (tmp_path / cls).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), np.full(shape, 100 + i, np.uint8))
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    assert is_readable(str(tmp_path / "a" / "0.png")) and not is_readable(str(tmp_path / "a" / "broken.png"))
    scan = scan_folder(tmp_path, skip_bad=True)
    assert len(scan.train) == 6 and scan.skipped == [str(tmp_path / "a" / "broken.png")]

"""Bundles exported before the layout change (issue 9) still load, build, run and profile.

The fixture was written by edgekd at commit abf6d4b (see tests/fixtures/README.md): its segment graphs are named
``stage{i}.onnx`` and its parity report says ``stages_vs_full``; nothing in it was regenerated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.manifest import load_manifest
from edgekd.device.compiler.builder import build_bundle
from edgekd.device.runtime.pipeline import Pipeline

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "bundle-abf6d4b"


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory) -> Path:
    """A copy (builds write next to it and the manifest must not change in the repository)."""
    dest = tmp_path_factory.mktemp("old") / "bundle"
    shutil.copytree(OLD, dest)
    return dest


def _frames(manifest):
    with np.load(manifest.file("val_sample")) as f:
        return f["images"], f["labels"]


def test_old_manifest_validates_with_every_hash(old_bundle):
    m = load_manifest(old_bundle)
    assert (m.backend, m.precision, m.num_exits) == ("onnx", "fp32", 3)
    assert [m.segment_graph(i).name for i in range(3)] == ["stage0.onnx", "stage1.onnx", "stage2.onnx"]


@pytest.mark.parametrize("mode, threshold", [("early-exit", None), ("early-exit", 0.0), ("full-vote", None)])
def test_old_bundle_runs(old_bundle, mode, threshold):
    m = load_manifest(old_bundle)
    images, labels = _frames(m)
    with Pipeline.from_bundle(old_bundle, mode=mode, threshold=threshold) as pipe:
        preds = [pipe(img) for img in images]  # grayscale frames
    accuracy = np.mean(np.array([p.label for p in preds]) == labels)
    assert accuracy > 0.3  # a 2-epoch model on 10 classes: well above chance
    exits = {p.exit for p in preds}
    if threshold == 0.0:
        assert exits == {0}  # every frame answered by segment 0 alone
    elif mode == "full-vote":
        assert exits == {2}  # the vote reports the last exit


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_old_bundle_builds(old_bundle, tmp_path, precision):
    built = build_bundle(old_bundle, precision=precision, out=tmp_path / precision, cache_dir=None, max_drop=100.0)
    assert (built.backend, built.precision) == ("onnxruntime", precision)
    assert load_manifest(built.root).num_exits == 3

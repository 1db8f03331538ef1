"""Hostile bundle files the manifest's validation must refuse in one line (issue 24): a truncated ONNX graph whose
sha256 was recomputed (item 7), an input spec whose std is zero in float32 (item 14), a manifest.json that is a link
to a file outside the bundle (item 14), a ``build`` record that is not an object (item 10). Torch-free: the bundle
is the committed fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekd.core.errors import ConfigError
from edgekd.core.manifest import ManifestError, load_manifest, sha256_file
from edgekd.core.onnx_external import OnnxFormatError, external_data_locations, graph_io
from edgekd.core.spec import InputSpec

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bundle-abf6d4b"


@pytest.fixture
def bundle(tmp_path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(FIXTURE, root)
    return root


def _edit(root: Path, change) -> None:
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data, indent=2))


def test_every_cut_of_a_graph_is_a_format_error_never_a_crash(tmp_path):
    """A length-delimited field was trusted past the end of the file: an IndexError for some cut points."""
    raw = (FIXTURE / "stage0.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    for n in sorted({*range(1, 400), *range(1, len(raw), max(1, len(raw) // 300))}):
        cut.write_bytes(raw[:n])
        for read in (graph_io, external_data_locations):
            try:
                read(cut)
            except OnnxFormatError:
                pass


def test_a_truncated_graph_whose_sha256_matches_is_one_line(bundle):
    graph = bundle / "full.onnx"
    graph.write_bytes(graph.read_bytes()[:len(graph.read_bytes()) // 2])
    _edit(bundle, lambda d: d["graphs"]["full"].update(sha256=sha256_file(graph)))
    with pytest.raises(ManifestError, match="full.onnx"):
        load_manifest(bundle)


@pytest.mark.parametrize("std", [1e-300, 1e-46, 1e-9])
def test_a_std_that_is_zero_in_float32_or_divides_to_infinity_is_refused(bundle, std):
    _edit(bundle, lambda d: d["input_spec"].update(std=[std]))
    with pytest.raises(ManifestError, match="std"):
        load_manifest(bundle)
    with pytest.raises(ConfigError, match="std"):
        InputSpec(height=16, width=16, channels=1, mean=(0.5,), std=(std,), class_names=("a", "b"))


def test_a_manifest_json_linked_to_a_file_outside_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.move(str(bundle / "manifest.json"), str(outside))
    (bundle / "manifest.json").symlink_to(outside)
    with pytest.raises(ManifestError, match="manifest.json.*link"):
        load_manifest(bundle)


def test_a_link_to_a_manifest_inside_the_bundle_is_still_read(bundle):
    shutil.move(str(bundle / "manifest.json"), str(bundle / "real.json"))
    (bundle / "manifest.json").symlink_to("real.json")
    assert load_manifest(bundle).num_exits == 3


@pytest.mark.parametrize("build", [[1, 2, 3], "x", 7])
def test_a_build_record_that_is_not_an_object_is_refused(bundle, build):
    _edit(bundle, lambda d: d.update(build=build))
    with pytest.raises(ManifestError, match="'build' must be"):
        load_manifest(bundle)

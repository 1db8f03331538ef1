"""Hostile bundle files the manifest's validation must refuse in one line (issue 24): a truncated ONNX graph whose
sha256 was recomputed (item 7), an input spec whose std is zero in float32 (item 14), a manifest.json that is a link
to a file outside the bundle (item 14), a ``build`` record that is not an object (item 10), npz archives whose
arrays declare more memory than there is (zip bombs, item 11). Torch-free: the bundle is the committed fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.errors import ConfigError, DataError
from edgekd.core.labelled import load_labelled
from edgekd.core.manifest import ManifestError, load_manifest, read_bundle_npz, sha256_file
from edgekd.core.npz import declared_bytes, npz_problem
from edgekd.core.onnx_graph import OnnxFormatError, external_data_locations, graph_io
from edgekd.core.spec import InputSpec
from tests.helpers import memory_available_now, write_npz_declaring

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


def _bomb(path: Path, *, labelled: bool = True) -> Path:
    """Images (N, 16, 16, 1) uint8 declaring twice the memory available now (and labels to match)."""
    n = 2 * memory_available_now() // 256 + 1
    arrays = {"images": ((n, 16, 16, 1), "uint8")}
    if labelled:
        arrays["labels"] = ((n,), "int64")
    return write_npz_declaring(path, arrays)


def test_an_npz_declaring_more_than_the_memory_available_is_refused_before_inflating(tmp_path):
    bomb = _bomb(tmp_path / "bomb.npz")
    assert declared_bytes(bomb) >= 2 * memory_available_now() and npz_problem(bomb)
    spec = load_manifest(FIXTURE).spec
    with pytest.raises(DataError, match="memory available"):
        load_labelled(bomb, spec, option="--data")
    with pytest.raises(ManifestError, match="memory available"):
        read_bundle_npz(bomb, spec, labelled=True)


def test_an_honest_npz_is_read(tmp_path):
    ok = tmp_path / "ok.npz"
    np.savez_compressed(ok, images=np.zeros((5, 16, 16, 1), np.uint8), labels=np.arange(5))
    assert declared_bytes(ok) == 5 * 256 + 5 * 8 and npz_problem(ok) is None
    assert len(load_labelled(ok, load_manifest(FIXTURE).spec, option="--data")[1]) == 5


def test_a_bundle_whose_val_sample_is_a_bomb_is_refused_and_run_does_not_read_it(bundle):
    _bomb(bundle / "val_sample.npz")
    _edit(bundle, lambda d: d["files"]["val_sample"].update(sha256=sha256_file(bundle / "val_sample.npz")))
    with pytest.raises(ManifestError, match="memory available"):
        load_manifest(bundle)
    assert load_manifest(bundle, read_data=False).num_exits == 3  # hashed, not read (what run asks for)


def test_a_nul_byte_in_a_graph_path_is_refused(bundle):
    _edit(bundle, lambda d: d["graphs"]["full"].update(path="full\u0000.onnx"))
    with pytest.raises(ManifestError, match="NUL"):
        load_manifest(bundle)


def test_a_graph_linked_to_itself_is_refused(bundle):
    (bundle / "full.onnx").unlink()
    (bundle / "full.onnx").symlink_to("full.onnx")
    with pytest.raises(ManifestError, match="graphs.full"):
        load_manifest(bundle)

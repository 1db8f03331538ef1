"""Every file a bundle's graphs load is hashed: ONNX external-data files are listed under their graph's
``external_data`` with a sha256, a tampered or unlisted one is refused on load; a bundle that an interrupted
``--force`` left aside is put back by the next reader; what counts as a bundle for ``--force``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.manifest import (
    ManifestError,
    file_entry,
    load_manifest,
    looks_like_bundle,
    sha256_file,
    write_manifest,
)
from edgekd.core.onnx_graph import OnnxFormatError, external_data_locations

onnx = pytest.importorskip("onnx")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bundle-abf6d4b"


@pytest.fixture
def external(tmp_path) -> Path:
    """The fixture bundle with full.onnx's weights moved to full.onnx.data, its manifest written by this edgekd."""
    root = tmp_path / "bundle"
    shutil.copytree(FIXTURE, root)
    model = onnx.load(str(root / "full.onnx"))
    onnx.save_model(model, str(root / "full.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="full.onnx.data", size_threshold=0)
    data = json.loads((root / "manifest.json").read_text())
    data["graphs"]["full"] = {**data["graphs"]["full"], **file_entry(root, "full.onnx").to_json()}
    write_manifest(root, data)
    return root


def test_external_data_is_listed_with_its_hash(external):
    entry = json.loads((external / "manifest.json").read_text())["graphs"]["full"]
    assert [x["path"] for x in entry["external_data"]] == ["full.onnx.data"]
    m = load_manifest(external)
    assert external / "full.onnx.data" in m.paths()


def test_a_tampered_external_data_file_is_refused(external):
    weights = external / "full.onnx.data"
    raw = bytearray(weights.read_bytes())
    raw[100:104] = np.array([np.nan], dtype=np.float32).tobytes()
    weights.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match="full.onnx.data does not match its sha256"):
        load_manifest(external)


def test_a_graph_that_loads_a_file_the_manifest_does_not_hash_is_refused(external):
    data = json.loads((external / "manifest.json").read_text())
    del data["graphs"]["full"]["external_data"]  # as an edgekd that did not hash them wrote it
    (external / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="loads full.onnx.data, which the manifest does not hash"):
        load_manifest(external)


def test_a_missing_external_data_file_is_refused(external):
    (external / "full.onnx.data").unlink()
    with pytest.raises(ManifestError, match="full.onnx.data is missing"):
        load_manifest(external)


def test_external_data_may_not_leave_the_bundle(tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(FIXTURE, root)
    onnx.save_model(onnx.load(str(root / "stage0.onnx")), str(root / "stage0.onnx"), save_as_external_data=True,
                    location="outside.bin", size_threshold=0)
    model = onnx.load(str(root / "stage0.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:  # (onnx itself refuses to write such a location)
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.bin"
    (root / "stage0.onnx").write_bytes(model.SerializeToString())
    data = json.loads((root / "manifest.json").read_text())
    data["graphs"]["stages"][0]["sha256"] = sha256_file(root / "stage0.onnx")  # the graph itself is as listed
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="leaves the bundle"):
        load_manifest(root)


def test_locations_are_found_in_subgraphs_and_inline_graphs_have_none(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    assert external_data_locations(FIXTURE / "full.onnx") == []
    w = numpy_helper.from_array(np.ones((4,), np.float32), "w")
    then = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[w])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "else", [],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["out"], then_branch=then, else_branch=other)], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])])
    onnx.save_model(helper.make_model(graph), str(tmp_path / "if.onnx"), save_as_external_data=True,
                    location="branch.bin", size_threshold=0)
    assert external_data_locations(tmp_path / "if.onnx") == ["branch.bin"]
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xff\xff")
    with pytest.raises(OnnxFormatError, match="not a readable ONNX graph"):
        external_data_locations(tmp_path / "junk.onnx")


def test_what_counts_as_a_bundle_for_force(tmp_path):
    assert looks_like_bundle(FIXTURE)
    (tmp_path / "manifest.json").write_text('{"kind": "something-else"}')
    assert not looks_like_bundle(tmp_path) and not looks_like_bundle(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("{not json")
    assert not looks_like_bundle(tmp_path)


def test_loading_a_bundle_an_interrupted_force_left_aside_puts_it_back(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / ".bundle.edgekd-old")  # killed between the two renames of a --force
    m = load_manifest(tmp_path / "bundle")
    assert m.num_exits == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]

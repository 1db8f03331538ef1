"""The manifest's records (issue 22): ``Manifest.from_json`` → ``to_json`` gives back the JSON it read, for the
bundle an earlier edgekd wrote (``tests/fixtures/bundle-abf6d4b``), a freshly exported one and a freshly built one,
so bundles written now keep the keys, nesting and value types the last release reads; keys a later edgekd adds
survive a round trip; records are frozen and derived with ``dataclasses.replace``; a bad value in each record is
one line naming the field."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from edgekd.core.manifest import MANIFEST_NAME, Manifest, load_manifest, write_manifest
from edgekd.core.manifest_records import BuildRecord, ExitInfo, FileEntry, GraphEntry, Graphs, ManifestError, VoteRecord

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bundle-abf6d4b"


def _json(root: Path) -> dict:
    return json.loads((root / MANIFEST_NAME).read_text())


def _round_trip(root: Path) -> None:
    data = _json(root)
    manifest = Manifest.from_json(copy.deepcopy(data), root)
    again = manifest.to_json()
    assert again == data
    assert json.dumps(again, sort_keys=True) == json.dumps(data, sort_keys=True)  # the same value types: 0.0 not 0
    assert Manifest.from_json(again, root) == manifest


def test_the_old_bundle_round_trips():
    _round_trip(FIXTURE)
    m = load_manifest(FIXTURE)
    assert isinstance(m.exits[0], ExitInfo) and isinstance(m.graphs.segments[0], GraphEntry)
    assert m.graphs.segments[0].path == "stage0.onnx" and m.build is None and m.certificate_record is None


def test_a_fresh_export_round_trips(tiny_bundle):
    _round_trip(tiny_bundle)


@pytest.fixture(scope="module")
def built_fp32(tiny_bundle, tmp_path_factory) -> Path:
    from edgekd.device.compiler.builder import build_bundle

    out = tmp_path_factory.mktemp("records") / "fp32"
    build_bundle(tiny_bundle, precision="fp32", backend="onnxruntime", out=out, cache_dir=None, max_drop=100.0)
    return out


def test_a_fresh_build_round_trips(built_fp32):
    _round_trip(built_fp32)
    data = _json(built_fp32)
    assert "calibration" in data["build"] and data["build"]["calibration"] is None  # a float build writes null
    m = load_manifest(built_fp32)
    assert m.build is not None and m.build.target == "x86-cpu" and m.certificate_record == data["build"]["thresholds"]


def test_keys_a_later_edgekd_adds_survive_a_round_trip(tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(FIXTURE, root)
    data = _json(root)
    data["future"] = {"a": [1, 2]}
    data["exits"][0]["future"] = 1
    data["vote"]["future"] = "x"
    data["graphs"]["future"] = []
    data["graphs"]["full"]["future"] = {"b": None}
    data["files"]["calib"]["future"] = 2.5
    data["build"] = {"target": "x86-cpu", "calibration": None, "future": True}
    written = write_manifest(root, data)
    assert _json(root) == data == written.to_json()
    assert written.extra == {"future": {"a": [1, 2]}} and written.exits[0].extra == {"future": 1}
    assert load_manifest(root).to_json() == data


def test_records_are_frozen_and_derived_with_replace():
    m = load_manifest(FIXTURE)
    for record, name in ((m, "thresholds"), (m.exits[0], "macs"), (m.vote, "rule"), (m.graphs, "full"),
                         (m.graphs.full, "path"), (m.files["calib"], "sha256"), (BuildRecord(), "target")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, name, None)
    before = m.to_json()
    derived = dataclasses.replace(m, thresholds=[0.5, 0.6, 0.0], vote=dataclasses.replace(m.vote, rule="hard"),
                                  build=BuildRecord(thresholds={"fit": "point"}))
    assert m.to_json() == before  # the original is untouched
    after = derived.to_json()
    assert after["thresholds"] == [0.5, 0.6, 0.0] and after["vote"]["rule"] == "hard"
    assert after["build"] == {"thresholds": {"fit": "point"}}  # no build ran: no calibration key
    assert {k: v for k, v in after.items() if k not in ("thresholds", "vote", "build")} == \
        {k: v for k, v in before.items() if k not in ("thresholds", "vote")}


def test_the_segment_input_shape_is_the_image_then_the_previous_feature_map():
    m = load_manifest(FIXTURE)
    assert m.segment_input_shape(0) == tuple(m.spec.shape) == (1, 16, 16)
    assert [m.segment_input_shape(i) for i in (1, 2)] == [m.exits[0].feat_shape, m.exits[1].feat_shape]


@pytest.mark.parametrize("read, value, message", [
    (lambda v: ExitInfo.from_json(v, 0), {"index": 0}, r"^exits\[0\] needs keys"),
    (lambda v: ExitInfo.from_json(v, 1), {"index": 0, "stage": 0, "channels": 1, "reduction": 1,
                                          "feat_shape": [1, 1, 1], "macs": 1}, r"^exits\[1\]\.index must be 1"),
    (lambda v: ExitInfo.from_json(v, 0), {"index": 0, "stage": 0, "channels": 1, "reduction": 1,
                                          "feat_shape": [1, 1], "macs": 1}, r"^exits\[0\]\.feat_shape must be 3"),
    (lambda v: FileEntry.from_json(v, "files.calib"), {"path": "calib.npz"}, r"^files\.calib: needs 'path' and"),
    (lambda v: FileEntry.from_json(v, "files.calib"), {"path": "", "sha256": "0"}, r"path must be a non-empty"),
    (lambda v: GraphEntry.from_json(v, "graphs.full"), {"path": "a.onnx", "sha256": "0", "external_data": {}},
     r"^graphs\.full\.external_data must be a list"),
    (lambda v: Graphs.from_json(v, 2), {"full": {"path": "a.onnx", "sha256": "0"}, "stages": []},
     r"^graphs\.stages must list one segment graph per exit \(2\)"),
    (lambda v: VoteRecord.from_json(v, 3), {"rule": "mean"}, r"^vote\.rule must be one of"),
    (lambda v: VoteRecord.from_json(v, 3), {"rule": "weighted", "weights": [1, 2]}, r"^vote\.weights must list 3"),
    (lambda v: BuildRecord.from_json(v), [1], r"^'build' must be an object, got list"),
])
def test_a_bad_value_in_each_record_is_one_line_naming_the_field(read, value, message):
    with pytest.raises(ManifestError, match=message) as err:
        read(value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["exits"][1].update(macs=-1), r"exits\[1\]\.macs must be an integer in 0\.\.2\^53"),
    (lambda d: d["graphs"]["stages"][2].pop("sha256"), r"graphs\.stages\[2\]: needs 'path' and 'sha256'"),
    (lambda d: d["vote"].update(answer="maybe"), r"vote\.answer must be one of"),
    (lambda d: d.update(build="done"), r"'build' must be an object, got str"),
    (lambda d: d.update(thresholds=[0.5, 0.5]), r"thresholds must be 3 finite non-negative numbers"),
])
def test_the_manifest_names_itself_in_front_of_a_record_error(change, message):
    data = _json(FIXTURE)
    change(data)
    with pytest.raises(ManifestError, match=message) as err:
        Manifest.from_json(data, FIXTURE)
    assert str(err.value).startswith(f"{FIXTURE / MANIFEST_NAME}: ") and "\n" not in str(err.value)

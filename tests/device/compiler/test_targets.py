"""Device targets: the shipped YAMLs load, and malformed target files fail with the file and field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekd.core.errors import ConfigError
from edgekd.device.compiler.targets import DeviceTarget, list_targets, load_target

SHIPPED = ["agx-orin", "agx-xavier", "jetson-nano", "jetson-tx2", "orin-nano", "orin-nx", "x86-cpu", "xavier-nx"]

VALID = {
    "name": "my-board",
    "description": "a test board",
    "backend": "tensorrt",
    "precisions": ["fp32", "fp16", "int8"],
    "default_precision": "int8",
    "workspace_mib": 256,
    "dla_cores": 0,
    "batch": {"min": 1, "opt": 2, "max": 4},
    "threads": None,
}


def write_target(tmp_path: Path, filename: str = "board.yaml", **changes) -> Path:
    data = {**VALID, **changes}
    data = {k: v for k, v in data.items() if v != "<drop>"}
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_list_targets_has_all_eight():
    assert set(SHIPPED) <= set(list_targets())
    assert list_targets() == sorted(list_targets())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_target_loads(name):
    prof = load_target(name)
    assert isinstance(prof, DeviceTarget)
    assert prof.name == name == prof.source.stem
    assert prof.default_precision in prof.precisions
    assert prof.batch_min <= prof.batch_opt <= prof.batch_max
    assert prof.backend in ("tensorrt", "onnxruntime")
    prof.check_precision(prof.default_precision)


def test_device_facts():
    assert load_target("jetson-nano").precisions == ("fp32", "fp16")
    assert load_target("jetson-nano").default_precision == "fp16"
    assert "int8" not in load_target("jetson-tx2").precisions
    assert {load_target(n).dla_cores for n in ("jetson-nano", "jetson-tx2", "orin-nano", "x86-cpu")} == {0}
    assert {load_target(n).dla_cores for n in ("xavier-nx", "agx-xavier", "orin-nx", "agx-orin")} == {2}
    for name in ("xavier-nx", "agx-xavier", "orin-nano", "orin-nx", "agx-orin"):
        assert load_target(name).precisions == ("fp32", "fp16", "int8")
        assert load_target(name).backend == "tensorrt"


def test_x86_cpu_is_onnxruntime_int8_all_cores():
    prof = load_target("x86-cpu")
    assert prof.backend == "onnxruntime"
    assert prof.default_precision == "int8"
    assert prof.threads is None


def test_nano_rejects_int8_clearly():
    with pytest.raises(ConfigError, match=r"target jetson-nano cannot build int8 \(supports fp16, fp32\): .*fp16"):
        load_target("jetson-nano").check_precision("int8")


def test_unknown_precision_rejected():
    with pytest.raises(ConfigError, match="unknown precision"):
        load_target("orin-nano").check_precision("int4")


def test_target_by_path(tmp_path):
    path = write_target(tmp_path)
    prof = load_target(str(path))
    assert (prof.name, prof.batch, prof.source) == ("my-board", (1, 2, 4), path)
    assert load_target(path) == prof  # a Path works too


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="unknown device target 'orin-mega'.*orin-nano"):
        load_target("orin-mega")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_target("/nonexistent/board.yaml")


@pytest.mark.parametrize("changes, field", [
    ({"colour": "green"}, "colour"),
    ({"threads": "<drop>"}, "threads"),
    ({"default_precision": "int8", "precisions": ["fp32", "fp16"]}, "default_precision"),
    ({"precisions": ["fp32", "bf16"]}, "precisions"),
    ({"precisions": []}, "precisions"),
    ({"batch": {"min": 8, "opt": 4, "max": 2}}, "batch"),
    ({"batch": {"min": 1, "max": 2}}, "batch"),
    ({"batch": {"min": 0, "opt": 1, "max": 2}}, "batch.min"),
    ({"backend": "openvino"}, "backend"),
    ({"dla_cores": -1}, "dla_cores"),
    ({"dla_cores": 2, "backend": "onnxruntime"}, "dla_cores"),
    ({"workspace_mib": "lots"}, "workspace_mib"),
    ({"threads": 0}, "threads"),
    ({"name": ""}, "name"),
])
def test_invalid_targets_name_file_and_field(tmp_path, changes, field):
    path = write_target(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        load_target(str(path))
    message = str(info.value)
    assert str(path) in message
    assert f": {field}:" in message


def test_not_yaml_or_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_target(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml.*mapping"):
        load_target(str(bad))

"""Build options are checked once, when a :class:`BuildOptions` is made (issue 22): ``edgekd build`` makes one from
its flags and ``build_bundle`` from its keywords, so both refuse a bad value with the same one-line message before
any work, and the plan carries them to every step. Torch-free: the bundle is the committed fixture."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from edgekd.device.compiler import BuildError, BuildOptions, build_bundle
from edgekd.device.compiler.builder import plan_build

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "bundle-abf6d4b"


@pytest.mark.parametrize("given, message", [
    ({"max_drop": float("nan")}, "--max-drop must be a number at least 0 and at most 100"),
    ({"max_drop": 100.5}, "--max-drop must be a number at least 0 and at most 100"),
    ({"dla_core": 16}, "--dla-core must be an integer at least 0 and at most 15"),
    ({"calib_method": "mean"}, "--calib-method must be one of"),
    ({"cost": "watts"}, "--cost must be macs or latency"),
    ({"mixed_precision": "half"}, "--mixed-precision must be one of"),
    ({"fit": "guess"}, "--fit must be one of"),
    ({"confidence": 1.0}, "--confidence must be at least"),
    ({"target_drop": 0.0}, "--target-drop must be above 0"),
])
def test_a_bad_option_is_one_line_before_any_work(tmp_path, given, message):
    with pytest.raises(BuildError, match=message) as err:
        BuildOptions(**given)
    assert "\n" not in str(err.value)
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=message):  # the library refuses it the same way, before reading the bundle
        build_bundle(tmp_path / "no-such-bundle", out=out, **given)
    assert not out.exists()


def test_options_are_frozen_and_the_defaults_are_accepted():
    options = BuildOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_drop = 5.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="options or keywords, not both"):
        build_bundle(FIXTURE, options, max_drop=1.0)


def test_the_plan_resolves_target_precision_and_destination(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURE, bundle)
    plan = plan_build(bundle, BuildOptions(backend="onnxruntime", precision="int8"))
    assert (plan.target.name, plan.precision, plan.qdq_backend) == ("x86-cpu", "int8", "onnxruntime")
    assert plan.out == tmp_path / "bundle-int8" and plan.source.root == bundle
    with pytest.raises(BuildError, match="--dla-core runs on TensorRT only"):
        plan_build(bundle, BuildOptions(backend="onnxruntime", dla_core=0))
    with pytest.raises(BuildError, match="inside"):
        plan_build(bundle, BuildOptions(backend="onnxruntime", out=bundle / "built"))

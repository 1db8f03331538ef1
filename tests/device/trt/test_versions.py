"""The one TensorRT version gate and the DLA rules per release (edgekd.device.tensorrt.versions). Where a test
needs a ``tensorrt`` module it is a fake carrying only a version (``VersionOnlyTensorRT``): it tests edgekd's
decisions, never TensorRT."""

from __future__ import annotations

import pytest

from edgekd.core.errors import EdgekdError
from edgekd.device.tensorrt import versions
from edgekd.device.tensorrt.versions import check_tensorrt, tensorrt_version_problem, use_implicit_calibrator
from tests.helpers import VersionOnlyTensorRT


@pytest.mark.parametrize("major, dla, expected", [
    (8, True, True),     # TensorRT 8.x on DLA: no explicit quantization, calibrate implicitly
    (8, False, False),   # GPU: the Q/DQ graph carries the scales
    # TensorRT 10 still: the DLA takes implicit quantization only (NVIDIA/Model-Optimizer PR 1661, "DLA still only
    # supports IQ"; NVIDIA/TensorRT issue 2222); the calibrator API is there through 10.x (pyInt8 in release/10.3)
    (10, True, True),
    (10, False, False),
    (11, False, False),
    (11, True, False),   # TensorRT 11 removed the calibrators: Q/DQ on the DLA (11.4+, unverified)
])
def test_use_implicit_calibrator(major, dla, expected):
    assert use_implicit_calibrator(major, dla) is expected


@pytest.mark.parametrize("version, major", [("8.5.2.2", 8), ("8.6.1", 8), ("10.3.0", 10), ("10.13.3.9", 10),
                                            ("11.1.0.106", 11)])
def test_supported_tensorrt_versions_pass_the_gate(version, major):
    assert check_tensorrt(VersionOnlyTensorRT(version)) == major
    assert tensorrt_version_problem(version) is None


@pytest.mark.parametrize("version", ["8.4.3.1", "8.2.1", "7.1.3", "12.0.0", "13.1", "unknown", ""])
def test_unsupported_tensorrt_versions_are_refused_in_one_line(version):
    with pytest.raises(EdgekdError) as info:
        check_tensorrt(VersionOnlyTensorRT(version))
    message = str(info.value)
    assert "\n" not in message and f"TensorRT {version} is not supported" in message
    assert "8.5 to 11.x" in message and "JetPack 5.1: 8.5" in message


# -- DLA per TensorRT version (issue 21) ------------------------------------------------------------------------------
@pytest.mark.parametrize("version, refused", [("8.5.2.2", False), ("8.6.2", False), ("10.3.0.30", False),
                                              ("11.0.0", True), ("11.3.9", True), ("11.4.0", False), ("12.0", False)])
def test_dla_is_refused_on_the_tensorrt_11_releases_without_it(version, refused):
    problem = versions.dla_problem(version)
    assert (problem is not None) is refused
    if refused:
        assert version in problem and "\n" not in problem and "--dla-core" in problem


@pytest.mark.parametrize("version, precision, dla, unverified", [
    ("10.3.0", "int8", True, False), ("11.4.0", "int8", True, True), ("11.4.0", "fp16", True, False),
    ("11.4.0", "int8", False, False)])
def test_dla_int8_on_tensorrt_11_4_is_labelled_unverified(version, precision, dla, unverified):
    assert versions.dla_int8_unverified(version, precision, dla) is unverified

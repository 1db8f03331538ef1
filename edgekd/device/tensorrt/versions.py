"""Which TensorRT releases edgekd builds and runs engines with, and what each can do: the one version gate.

Every path that touches TensorRT goes through :func:`check_tensorrt` (the builder, the runner, ``edgekd build``'s
checks before any work), so a release outside :data:`MIN_TENSORRT` .. :data:`MAX_TENSORRT_MAJOR` is refused in
one line naming the supported releases, before any other TensorRT name is touched. The DLA rules per release
live here too: which releases have no DLA (:func:`dla_problem`), which calibrate implicitly on it
(:func:`use_implicit_calibrator`) and which DLA path is unverified (:func:`dla_int8_unverified`).

Pure: imports nothing of TensorRT, so every rule is tested on any machine.
"""

from __future__ import annotations

import re
from typing import Any

from edgekd.core.errors import EdgekdError

#: The oldest TensorRT edgekd supports (JetPack 5.1; the runner needs the name-based tensor API of 8.5, and the
#: exported graphs must be read right by its ONNX parser) and the newest major (11: strongly typed networks only).
MIN_TENSORRT = (8, 5)
MAX_TENSORRT_MAJOR = 11
SUPPORTED_TENSORRT = "8.5 to 11.x (JetPack 5.1: 8.5, JetPack 6.0: 8.6, JetPack 6.1/6.2: 10.3, desktop: 10.x or 11.x)"

#: The first TensorRT major without calibrators and builder precision flags: networks are strongly typed.
STRONGLY_TYPED_MAJOR = 11
#: The TensorRT 11 releases without DLA support, (major, minor) first and last inclusive; 11.4 has it again.
NO_DLA = ((11, 0), (11, 3))


def parse_version(version: str) -> tuple[int, int]:
    """``"10.3.0.26"`` → ``(10, 3)``, ``"10"`` → ``(10, 0)``; ``(0, 0)`` when ``version`` does not start with a
    number (no release is 0.0, so that reads as "unknown")."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", str(version))
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)


def tensorrt_version_problem(version: str) -> str | None:
    """None when edgekd supports TensorRT ``version``; else the one-line reason, naming the supported versions."""
    major, minor = parse_version(version)
    if (major, minor) >= MIN_TENSORRT and major <= MAX_TENSORRT_MAJOR:
        return None
    return f"TensorRT {version} is not supported: edgekd builds and runs engines with TensorRT {SUPPORTED_TENSORRT}"


def check_tensorrt(trt: Any) -> int:
    """The major version of the imported ``tensorrt`` module, or :class:`EdgekdError` (one line) when edgekd does not
    support it. Reads nothing but ``trt.__version__``, so it runs before any other TensorRT name is touched."""
    version = str(getattr(trt, "__version__", "unknown"))
    problem = tensorrt_version_problem(version)
    if problem:
        raise EdgekdError(problem)
    return parse_version(version)[0]


def dla_problem(version: str) -> str | None:
    """None when TensorRT ``version`` can build for a DLA core; else the one-line reason (11.0-11.3 have no DLA)."""
    if NO_DLA[0] <= parse_version(version) <= NO_DLA[1]:
        return (f"TensorRT {version} cannot build for a DLA core (TensorRT {NO_DLA[0][0]}.{NO_DLA[0][1]} to "
                f"{NO_DLA[1][0]}.{NO_DLA[1][1]} have no DLA support): drop --dla-core, or use the TensorRT of JetPack "
                "(8.5 or 10.3)")
    return None


def use_implicit_calibrator(trt_major: int, dla: bool) -> bool:
    """True when int8 must be calibrated implicitly: a DLA build on any TensorRT that has calibrators (8.5-10.x).

    The DLA takes only implicit (calibrator) quantization, TensorRT 10 included: NVIDIA/Model-Optimizer pull request
    1661 ("DLA still only supports IQ"; the Q/DQ Translator of NVIDIA/Deep-Learning-Accelerator-SW turns Q/DQ scales
    back into a calibration cache for the DLA) and NVIDIA/TensorRT issue 2222 (DLA: no explicit quantization, only
    ``IInt8EntropyCalibrator2``). TensorRT 11 removed the calibrators. Every other int8 build uses the explicit Q/DQ
    graph and sets no calibrator."""
    return bool(dla) and trt_major < STRONGLY_TYPED_MAJOR


def dla_int8_unverified(version: str, precision: str, dla: bool) -> bool:
    """True for a DLA int8 build with TensorRT 11.4 or newer: Q/DQ int8 on the DLA with no calibrator, a path no
    device has run for edgekd yet (the build says so, and the sidecar records ``"verified": false``)."""
    return bool(dla) and precision == "int8" and parse_version(version)[0] >= STRONGLY_TYPED_MAJOR


__all__ = ["MAX_TENSORRT_MAJOR", "MIN_TENSORRT", "NO_DLA", "STRONGLY_TYPED_MAJOR", "SUPPORTED_TENSORRT",
           "check_tensorrt", "dla_int8_unverified", "dla_problem", "parse_version", "tensorrt_version_problem",
           "use_implicit_calibrator"]

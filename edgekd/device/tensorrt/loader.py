"""Importing TensorRT and creating its objects: the one place that does either, for the builder, the runner and
``edgekd doctor``'s probe.

:func:`import_tensorrt` imports ``tensorrt`` and applies the version gate (:func:`~edgekd.device.tensorrt.versions.
check_tensorrt`), so a build and a run refuse the same releases in the same line. :func:`tensorrt_available` says
whether engines can be built and run here (TensorRT importable *and* a CUDA runtime that sees a GPU).
:func:`tensorrt_logger` is the process's one TensorRT logger, and :func:`create_builder` / :func:`create_runtime`
turn TensorRT's "factory function returned nullptr" into one line naming the usual causes.

``tensorrt`` is imported inside the functions, never at import time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgekd.core.errors import EdgekdError
from edgekd.device import cuda
from edgekd.device.tensorrt.versions import check_tensorrt

if TYPE_CHECKING:  # annotations only (never evaluated); they also type the API-surface test's checks
    import tensorrt


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, once it passed the version gate; a one-line :class:`EdgekdError` when it is missing
    or a release edgekd does not support."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgekdError("tensorrt is not installed (it ships with JetPack; on x86 `pip install tensorrt`)") from None
    check_tensorrt(trt)
    return trt


def tensorrt_available() -> tuple[bool, str]:
    """``(True, tensorrt version)`` when engines can be built, verified and run here, else ``(False, reason)``.

    A working CUDA runtime (:func:`edgekd.device.cuda.status`) is required, not only an importable TensorRT: the
    build verifies every engine through it, so without one a build would compile every engine and fail only at the
    verification. The reason carries the real CUDA error and the driver/runtime versions (e.g.
    ``cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version (driver 11.4,
    runtime 12.6; …)``)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        if exc.name == "tensorrt":
            return False, "tensorrt is not installed"
        return False, f"tensorrt cannot be imported: {' '.join(str(exc).split())}"  # e.g. libnvinfer.so.10 missing
    except Exception as exc:  # e.g. the Python package is there but libnvinfer is not
        return False, f"tensorrt cannot be imported: {exc}"
    state = cuda.status()
    if not state.ok:  # no CUDA runtime, or one that fails: engines could be built but never verified or run
        why = state.detail if state.found else f"no CUDA runtime for edgekd's CUDA layer: {state.detail}"
        return False, why
    return True, str(trt.__version__)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


_LOGGER: list[Any] = []  # [(the tensorrt module, its logger)]: the process's one TensorRT logger


def tensorrt_logger(trt: Any, log: Callable[[str], Any] | None = None) -> Any:
    """The process's one TensorRT logger, now forwarding warnings and errors to ``log`` (default: stderr), its
    kept errors cleared.

    TensorRT keeps a single logger for every builder, runtime and refitter of a process: one created with another
    logger gets a warning on every run ("The logger passed into createInferRuntime differs from one already
    provided for an existing builder, runtime, or refitter. TensorRT maintains only a single logger pointer at any
    given time", NVIDIA/TensorRT issues 1475 and 1539). So the builder and the runner share this one."""
    if not _LOGGER or _LOGGER[0][0] is not trt:
        _LOGGER[:] = [(trt, _make_logger(trt))]
    logger = _LOGGER[0][1]
    logger.sink = log or _to_stderr
    logger.errors = []
    return logger


def _make_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class _Logger(trt.ILogger):
        """Forwards TensorRT warnings and errors to ``sink`` and keeps the errors for the failure message."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.sink: Callable[[str], Any] = _to_stderr

        def log(self, sev: Any, msg: str) -> None:
            # brackets → parentheses: TensorRT's "[file.cpp::fn::line]" tags would read as markup to rich
            text = " ".join(str(msg).split()).replace("[", "(").replace("]", ")")
            if sev in errors:
                self.errors.append(text)
            if sev in errors or sev == severity.WARNING:
                self.sink(f"tensorrt: {text}")

    return _Logger()


#: Why TensorRT's Builder or Runtime constructor gives nothing back (one line, naming the usual causes).
CANNOT_START = ("TensorRT could not create its {what} ({detail}): usually the GPU is out of memory (close other GPU "
                "programs), or this user or container cannot open the GPU devices (/dev/nvhost-* and /dev/nvmap on "
                "a Jetson, /dev/nvidia* elsewhere: add the user to the video group, or start the container with "
                "--runtime nvidia)")


def create_builder(trt: Any, logger: Any) -> tensorrt.Builder:
    """``trt.Builder(logger)``, or a one-line :class:`EdgekdError` (:data:`CANNOT_START`) when TensorRT cannot start."""
    try:
        builder = trt.Builder(logger)
    except TypeError as exc:  # pybind11: "factory function returned nullptr"
        raise EdgekdError(CANNOT_START.format(what="builder", detail=" ".join(str(exc).split()))) from None
    if builder is None:
        raise EdgekdError(CANNOT_START.format(what="builder", detail="it returned None"))
    return builder


def create_runtime(trt: Any, logger: Any) -> tensorrt.Runtime:
    """``trt.Runtime(logger)``, or a one-line :class:`EdgekdError` (:data:`CANNOT_START`) when TensorRT cannot start.

    Both constructors are pybind11 factories over ``createInferBuilder`` / ``createInferRuntime``; when those return
    nullptr (no GPU memory for TensorRT's context, device nodes the process cannot open) pybind11 raises
    ``TypeError: pybind11::init(): factory function returned nullptr`` (NVIDIA/TensorRT ``python/src/infer/pyCore.cpp``
    and pybind11's ``init.h``)."""
    try:
        runtime = trt.Runtime(logger)
    except TypeError as exc:
        raise EdgekdError(CANNOT_START.format(what="runtime", detail=" ".join(str(exc).split()))) from None
    if runtime is None:
        raise EdgekdError(CANNOT_START.format(what="runtime", detail="it returned None"))
    return runtime


__all__ = ["CANNOT_START", "create_builder", "create_runtime", "import_tensorrt", "tensorrt_available",
           "tensorrt_logger"]

"""Runners: one interface (:class:`Runner`) over ONNX Runtime and TensorRT, chosen by name.

Backend modules are imported only when asked for, so TensorRT and CUDA bindings stay optional.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import RUNNER_BACKENDS
from edgekd.device.runners.base import Runner

#: Where each of :data:`~edgekd.core.manifest.RUNNER_BACKENDS` is implemented (module, class), imported on demand.
IMPLEMENTATIONS = {
    "onnxruntime": ("edgekd.device.runners.onnxruntime", "OnnxRuntimeRunner"),
    "tensorrt": ("edgekd.device.tensorrt.runner", "TensorRTRunner"),
}


def make_runner(backend: str, path: str | Path, **options: Any) -> Runner:
    """A (not yet active) runner of ``backend`` for the graph or engine at ``path``."""
    if backend not in IMPLEMENTATIONS:
        raise EdgekdError(f"unknown backend {backend!r}; choose one of {', '.join(RUNNER_BACKENDS)}")
    module_name, class_name = IMPLEMENTATIONS[backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EdgekdError(f"backend {backend} is not available here: {exc}") from None
    return getattr(module, class_name)(path, **options)


__all__ = ["IMPLEMENTATIONS", "Runner", "make_runner"]

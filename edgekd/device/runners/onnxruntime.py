"""ONNX Runtime backend (CPU by default; CUDA/TensorRT execution providers when asked and available).

All sessions in the process share ONNX Runtime's global thread pool (``use_per_session_threads = False``):
chaining stage graphs with one spinning pool per session measured 5x slower than the full graph on 2 cores,
because idle pools spin against the busy one.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekd.core.errors import EdgekdError
from edgekd.device.options import env_threads
from edgekd.device.runners.base import Runner

_GLOBAL_POOL: dict[str, int] = {}
#: Threads of every session when this ONNX Runtime has no global pool (set by the first runner; 0: ORT's default).
_PER_SESSION: dict[str, int] = {}


def ensure_global_thread_pool(threads: int | None = None) -> int:
    """Create ONNX Runtime's process-wide thread pool once (before the first session); return its size.

    ONNX Runtime releases without ``set_global_thread_pool_sizes`` in Python (1.19, the last for Python 3.8 and so
    for JetPack 5.1) get per-session pools of that size with spinning turned off instead: idle pools then sleep
    rather than spin against the busy one, which is what the shared pool is for.
    """
    if not _GLOBAL_POOL and not _PER_SESSION:
        n = threads or env_threads() or os.cpu_count() or 1  # a bad $EDGEKD_THREADS: one line
        if hasattr(ort, "set_global_thread_pool_sizes"):
            ort.set_global_thread_pool_sizes(n, 1)
            _GLOBAL_POOL["intra"] = n
        else:
            _PER_SESSION["intra"] = n
    return _GLOBAL_POOL.get("intra") or _PER_SESSION["intra"]


def create_session(model: str | Path, so: ort.SessionOptions | None = None, *,
                   providers: list[str] | None = None) -> ort.InferenceSession:
    """An ``InferenceSession`` in whichever threading mode this process allows.

    Once the global thread pool exists, ONNX Runtime refuses sessions with per-session threads, and without it,
    sessions without them. Every session edgekd makes (runners, export parity, calibration) comes from here.
    """
    so = so or ort.SessionOptions()
    so.log_severity_level = 3
    if _PER_SESSION:
        so.intra_op_num_threads = _PER_SESSION["intra"]
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    shared = bool(_GLOBAL_POOL)
    error: Exception | None = None
    for use_shared in (shared, not shared):
        if hasattr(so, "use_per_session_threads"):  # absent before the global pool existed in Python (ORT < 1.20)
            so.use_per_session_threads = not use_shared
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints an "EP Error" banner before raising
                return ort.InferenceSession(str(model), so, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            if "thread" not in str(exc).lower():
                raise
            error = exc
    assert error is not None
    raise error


class OnnxRuntimeRunner(Runner):
    """Options: ``providers`` (default CPU), ``threads`` (global pool size, first session only)."""

    backend = "onnxruntime"

    def _activate(self) -> None:
        opts: dict[str, Any] = self.options
        ensure_global_thread_pool(opts.get("threads"))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = create_session(self.path, so, providers=opts.get("providers"))
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise EdgekdError(f"onnxruntime cannot load {self.path}: {str(exc).splitlines()[0]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        del self.session

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        values = self.session.run(outputs, {name: feed[name] for name in self.input_names})
        return dict(zip(outputs, values))

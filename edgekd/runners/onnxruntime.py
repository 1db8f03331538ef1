"""ONNX Runtime backend (CPU by default; CUDA/TensorRT execution providers when asked and available).

All sessions in the process share ONNX Runtime's global thread pool (``use_per_session_threads = False``):
chaining stage graphs with one spinning pool per session measured 5x slower than the full graph on 2 cores,
because idle pools spin against the busy one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekd.core.errors import EdgekdError
from edgekd.runners.base import Runner

_GLOBAL_POOL: dict[str, int] = {}


def ensure_global_thread_pool(threads: int | None = None) -> int:
    """Create ONNX Runtime's process-wide thread pool once (before the first session); return its size."""
    if not _GLOBAL_POOL:
        n = threads or int(os.environ.get("EDGEKD_THREADS", "0")) or os.cpu_count() or 1
        ort.set_global_thread_pool_sizes(n, 1)
        _GLOBAL_POOL["intra"] = n
    return _GLOBAL_POOL["intra"]


def session_options(*, shared_pool: bool = True, threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if shared_pool:
        ensure_global_thread_pool(threads)
        so.use_per_session_threads = False
    elif threads:
        so.intra_op_num_threads = threads
    return so


class OnnxRuntimeRunner(Runner):
    """Options: ``providers`` (default CPU), ``threads`` (global pool size, first session only),
    ``shared_pool`` (default True)."""

    backend = "onnxruntime"

    def _activate(self) -> None:
        opts: dict[str, Any] = self.options
        providers = opts.get("providers") or ["CPUExecutionProvider"]
        so = session_options(shared_pool=opts.get("shared_pool", True), threads=opts.get("threads"))
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise EdgekdError(f"onnxruntime cannot load {self.path}: {str(exc).splitlines()[0]}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _deactivate(self) -> None:
        del self.session

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        values = self.session.run(outputs, {name: feed[name] for name in self.input_names})
        return dict(zip(outputs, values))

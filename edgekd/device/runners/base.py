"""The one runner interface over every backend.

A runner owns one compiled graph (an ONNX file for ONNX Runtime, an engine for TensorRT). It is a context
manager: ``activate()`` loads it (sessions, engines, device buffers), ``deactivate()`` frees it. ``infer`` takes
and returns numpy arrays by tensor name, whatever the backend::

    with make_runner("onnxruntime", "bundle/segment0.onnx") as runner:
        out = runner.infer({"image": x})  # {"feat0": ..., "logits0": ..., "conf0": ...}

Backends subclass :class:`Runner` and override only what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.errors import EdgekdError


class Runner:
    """Base class: lifecycle and name checks; backends implement ``_activate``, ``_deactivate``, ``_infer``."""

    backend = "base"

    def __init__(self, path: str | Path, **options: Any):
        self.path = Path(path)
        self.options = options
        self.is_active = False
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    # lifecycle -------------------------------------------------------------------------------------------------
    def activate(self) -> Runner:
        if not self.is_active:
            if not self.path.exists():
                raise EdgekdError(f"{self.backend}: graph not found: {self.path}")
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # inference -------------------------------------------------------------------------------------------------
    @property
    def batch_range(self) -> tuple[int, int | None]:
        """The batch sizes this runner accepts, ``(min, max)``; ``max`` None: any. A TensorRT engine takes the range
        of its optimization profile (the device target's batch range); an ONNX graph with a dynamic batch any.
        Callers that batch many images (build's verification, profile's accuracy and throughput) stay within it."""
        return (1, None)

    def infer(self, feed: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph on ``feed`` (name → array) and return the requested outputs (default: all)."""
        if not self.is_active:
            raise EdgekdError(f"{self.backend} runner for {self.path.name} is not active (use it as a context manager)")
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise EdgekdError(f"{self.path.name}: missing inputs {missing}; it takes {self.input_names}")
        lo, hi = self.batch_range
        n = len(feed[self.input_names[0]]) if self.input_names else None
        if n is not None and (n < lo or (hi is not None and n > hi)):
            raise EdgekdError(f"{self.path.name}: a batch of {n} is outside the {lo}..{hi} this {self.backend} "
                              "graph was built for")
        return self._infer(feed, outputs or self.output_names)

    # backend hooks ---------------------------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

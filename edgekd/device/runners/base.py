"""The one runner interface over every backend.

A runner owns one compiled graph (an ONNX file for ONNX Runtime, an engine for TensorRT). It is a context
manager: ``activate()`` loads it (sessions, engines, device buffers), ``deactivate()`` frees it. ``infer`` takes
and returns numpy arrays by tensor name, whatever the backend::

    with make_runner("onnxruntime", "bundle/segment0.onnx") as runner:
        out = runner.infer({"image": x})  # {"feat0": ..., "logits0": ..., "conf0": ...}

Two optional parameters let a backend with device memory keep a chain's feature maps on the device; ONNX Runtime
ignores both: ``activate(follows=previous_runner)`` (share the previous segment's stream) and
``infer(..., keep_on_device=["feat0"])`` (return those outputs as :class:`edgekd.device.cuda.DeviceArray`, read
back only when someone asks, and accept such arrays as inputs).

Backends subclass :class:`Runner` and override only what differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.errors import EdgekdError


class Runner:
    """Base class: lifecycle and name checks; backends implement ``_activate``, ``_deactivate``, ``_infer``."""

    backend = "base"
    #: True when the backend pads a batch smaller than ``batch_range[0]`` itself (TensorRT engines with a fixed or
    #: minimum batch); otherwise such a batch is refused like one above ``batch_range[1]``.
    pads_short_batches = False

    def __init__(self, path: str | Path, **options: Any):
        self.path = Path(path)
        self.options = options
        self.is_active = False
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.follows: Runner | None = None

    # lifecycle -------------------------------------------------------------------------------------------------
    def activate(self, follows: Runner | None = None) -> Runner:
        """Load the graph. ``follows``: the active runner whose outputs this one takes as inputs (the previous
        segment of a chain); a backend with device memory shares its stream, ONNX Runtime ignores it."""
        if not self.is_active:
            if not self.path.exists():
                raise EdgekdError(f"{self.backend}: graph not found: {self.path}")
            self.follows = follows
            try:
                self._activate()
            except BaseException:
                self.follows = None
                raise
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self._deactivate()
            finally:
                self.is_active = False
                self.follows = None

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # inference -------------------------------------------------------------------------------------------------
    @property
    def batch_range(self) -> tuple[int, int | None]:
        """The batch sizes the graph was built for, ``(min, max)``; ``max`` None: any. A TensorRT engine takes the
        range of its optimization profile (the device target's batch range; it pads a smaller batch itself, see
        :attr:`pads_short_batches`); an ONNX graph with a dynamic batch any. Callers that batch many images
        (build's verification, profile's accuracy and throughput) stay at or below ``max``."""
        return (1, None)

    def infer(self, feed: dict[str, Any], outputs: list[str] | None = None, *,
              keep_on_device: Sequence[str] = ()) -> dict[str, Any]:
        """Run the graph on ``feed`` (name → array) and return the requested outputs (default: all) as numpy arrays.

        ``keep_on_device``: outputs that may stay in device memory, where the backend has any (TensorRT returns
        them as :class:`edgekd.device.cuda.DeviceArray`; ``np.asarray`` reads one back); ONNX Runtime ignores it.
        """
        if not self.is_active:
            raise EdgekdError(f"{self.backend} runner for {self.path.name} is not active (use it as a context manager)")
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise EdgekdError(f"{self.path.name}: missing inputs {missing}; it takes {self.input_names}")
        lo, hi = self.batch_range
        n = len(feed[self.input_names[0]]) if self.input_names else None
        if n is not None and ((n < lo and not self.pads_short_batches) or (hi is not None and n > hi) or n < 1):
            raise EdgekdError(f"{self.path.name}: a batch of {n} is outside the {lo}..{hi} this {self.backend} "
                              "graph was built for")
        return self._run(feed, outputs or self.output_names, keep_on_device)

    # backend hooks ---------------------------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _run(self, feed: dict[str, Any], outputs: list[str], keep_on_device: Sequence[str]) -> dict[str, Any]:
        """``infer`` after its checks; a backend with device memory overrides this, the others ``_infer``."""
        return self._infer(feed, outputs)

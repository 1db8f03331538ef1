"""The values ``edgekd build`` options take, defined once (dependency-free, so the CLI offers them as choices).

Precisions, vote rules and backends belong to the bundle contract and live in :mod:`edgekd.core.manifest` and
:mod:`edgekd.core.vote`; these are the build's own.
"""

from __future__ import annotations

#: Activation-range calibrators (ONNX Runtime's), see :mod:`edgekd.device.compiler.calibration`.
CALIB_METHODS = ("minmax", "entropy", "percentile")
#: ``--calib-method auto`` tries every calibrator and keeps the one with the smallest accuracy drop.
CALIB_AUTO = "auto"
CALIB_CHOICES = (*CALIB_METHODS, CALIB_AUTO)
#: What early-exit thresholds minimise: cumulative MACs (from the manifest) or measured segment latency.
COSTS = ("macs", "latency")
#: ``--backend``: a runner backend, or ``auto`` (TensorRT where it can run, else ONNX Runtime).
BACKEND_AUTO = "auto"

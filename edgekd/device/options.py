"""The values and defaults of the device commands' options (build, run, profile), each defined once.

Dependency-free, so the CLI offers them as choices and quotes the defaults without loading the device wing, and
the library functions take the same defaults. Precisions, backends, vote rules and run modes belong to the bundle
contract and live in the core (:mod:`edgekd.core.manifest`, :mod:`edgekd.core.vote`, :mod:`edgekd.core.early_exit`).
"""

from __future__ import annotations

# -- edgekd build ----------------------------------------------------------------------------------------------
#: Activation-range calibrators (ONNX Runtime's), see :mod:`edgekd.device.compiler.calibration`.
CALIB_METHODS = ("minmax", "entropy", "percentile")
#: ``--calib-method auto`` tries every calibrator and keeps the one with the smallest accuracy drop.
CALIB_AUTO = "auto"
CALIB_CHOICES = (*CALIB_METHODS, CALIB_AUTO)
#: What early-exit thresholds minimise: cumulative MACs (from the manifest) or measured segment latency.
COSTS = ("macs", "latency")
#: ``--backend``: a runner backend, or ``auto`` (TensorRT where it can run, else ONNX Runtime).
BACKEND_AUTO = "auto"
MAX_DROP = 1.0  # points of top-1 any exit or the vote may lose against FP32 before a build fails
TARGET_DROP = 0.5  # points of top-1 early exit may lose against the full vote (build, profile --write-thresholds)
CACHE_DIR = "calibration"  # the calibration cache (the repository's calibration/ folder)
MAX_CALIB_IMAGES = 1024  # --calib-data reads at most this many images

# -- edgekd run ------------------------------------------------------------------------------------------------
DISPLAYS = ("auto", "on", "off")

# -- edgekd profile --------------------------------------------------------------------------------------------
ITERATIONS = 200  # timed calls per graph
WARMUP_S = 0.2  # warm-up seconds per graph
BATCH = 8  # the larger batch of the throughput figures (batch 1 is always measured)
FRAME_SIZE = (640, 480)  # (width, height) of a typical USB/CSI camera stream, for the per-frame timing
REPORTS_DIR = "profiles"  # where `edgekd profile` writes its reports by default (the repository's profiles/)

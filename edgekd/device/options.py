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
TARGET_DROP = 0.5  # ε: points of top-1 early exit may lose against the full answer (build, profile --write-thresholds)
#: ``--confidence``: the probability (1 − δ) with which certified thresholds keep ``--target-drop`` on new images.
CONFIDENCE = 0.9
MIN_CONFIDENCE = 0.5  # below it a "guarantee" is a coin toss; 1 itself is never reachable with finitely many images
#: ``--fit``: thresholds certified by Learn-then-Test (:mod:`edgekd.core.certify`), or the old minimum-cost point
#: estimate on the same images (not certified). Also the manifest's ``build.thresholds.fit``.
FITS = ("certified", "point")
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


# -- checks shared by build and profile --------------------------------------------------------------------
def threshold_option_problem(fit: str, target_drop: float, confidence: float) -> str | None:
    """What is wrong with ``--fit``, ``--target-drop`` and ``--confidence`` together, or None (build and profile)."""
    if fit not in FITS:
        return f"--fit must be one of {', '.join(FITS)}, got {fit!r}"
    if not MIN_CONFIDENCE <= confidence < 1.0:
        return (f"--confidence must be at least {MIN_CONFIDENCE:g} and below 1 (the probability that the certified "
                f"thresholds keep --target-drop), got {confidence:g}")
    if fit == FITS[0] and not 0.0 < target_drop < 100.0:
        return (f"--target-drop must be above 0 and below 100 points for certified thresholds (no number of images "
                f"certifies a loss of exactly 0; --fit point accepts 0), got {target_drop:g}")
    if not 0.0 <= target_drop < 100.0:
        return f"--target-drop must be at least 0 and below 100 points of top-1, got {target_drop:g}"
    return None


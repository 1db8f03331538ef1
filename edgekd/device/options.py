"""The values and defaults of the device commands' options (build, run, profile), each defined once.

Dependency-free, so the CLI offers them as choices and quotes the defaults without loading the device wing, and
the library functions take the same defaults. Precisions, backends, vote rules and run modes belong to the bundle
contract and live in the core (:mod:`edgekd.core.manifest`, :mod:`edgekd.core.vote`, :mod:`edgekd.core.early_exit`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

from edgekd.core.destination import Wording
from edgekd.core.errors import ConfigError
from edgekd.device.user_cache import cache_off, calibration_cache

#: How the commands (export, build, profile, train) name their output folder and the permission to replace it, in
#: the one-line refusals of :mod:`edgekd.core.destination`.
OUT_WORDING = Wording(option="--out", force="--force")

# -- edgekd build ----------------------------------------------------------------------------------------------
#: Activation-range calibrators (ONNX Runtime's), see :mod:`edgekd.device.compiler.calibration`.
CALIB_METHODS = ("minmax", "entropy", "percentile")
#: ``--calib-method auto`` tries every calibrator and keeps the best verdict against ``--max-drop``, then the
#: smallest drop.
CALIB_AUTO = "auto"
CALIB_CHOICES = (*CALIB_METHODS, CALIB_AUTO)
#: What early-exit thresholds minimise: cumulative MACs (from the manifest) or measured segment latency.
COSTS = ("macs", "latency")
#: ``--backend``: a runner backend, or ``auto`` (TensorRT where it can run, else ONNX Runtime).
BACKEND_AUTO = "auto"
MAX_DROP = 1.0  # points of top-1 any exit or the vote may lose against FP32 before a build fails
#: Two-sided confidence of the drop's interval in build's verification: a build fails (or mixed precision steps in)
#: only when the whole interval is above ``--max-drop`` (:mod:`edgekd.device.compiler.verify`).
VERDICT_CONFIDENCE = 0.95
#: ``--mixed-precision``: when INT8 is confidently over ``--max-drop``, ``auto`` leaves the most sensitive nodes in
#: float until no output is (:mod:`edgekd.device.compiler.mixed`); ``off`` fails instead.
MIXED_PRECISION = ("auto", "off")
TARGET_DROP = 0.5  # ε: points of top-1 early exit may lose against the full answer (build, profile --write-thresholds)
#: ``--confidence``: the probability (1 − δ) with which certified thresholds keep ``--target-drop`` on new images.
CONFIDENCE = 0.9
MIN_CONFIDENCE = 0.5  # below it a "guarantee" is a coin toss; 1 itself is never reachable with finitely many images
#: ``--fit``: thresholds certified by Learn-then-Test (:mod:`edgekd.core.certify`), or the point fit (the
#: minimum-cost thresholds on the same images, not certified). Also the manifest's ``build.thresholds.fit``.
FITS = ("certified", "point")
MAX_CALIB_IMAGES = 1024  # --calib-data reads at most this many images

# -- edgekd run ------------------------------------------------------------------------------------------------
DISPLAYS = ("auto", "on", "off")
#: How early exit runs one frame: ``auto`` (what build measured faster on this device; the one-call graph where
#: nothing was measured here), ``one-call`` (the bundle's early-exit graph, ONNX Runtime builds), ``chain`` (one
#: call per segment). Batches, TensorRT and ``--mode exit`` always chain.
EARLY_EXIT_GRAPHS = ("auto", "one-call", "chain")

# -- edgekd profile --------------------------------------------------------------------------------------------
ITERATIONS = 200  # timed calls per graph
WARMUP_S = 0.2  # warm-up seconds per graph
BATCH = 8  # the larger batch of the throughput figures (batch 1 is always measured)
FRAME_SIZE = (640, 480)  # (width, height) of a typical USB/CSI camera stream, for the per-frame timing
REPORTS_DIR = "profiles"  # where `edgekd profile` writes its reports by default (the repository's profiles/)
#: Whether early exit pays (build and profile): batch-1 frames of the validation images through early exit and
#: the full graph, interleaved, this many images per round and this many timed rounds (medians of the rounds).
PAYOFF_IMAGES = 64
PAYOFF_ROUNDS = 9


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



# -- one check per option, shared by every command that takes it -----------------------------------------------
class Bound(NamedTuple):
    """The values an option takes: an integer or a finite number within ``low``..``high`` (None: unbounded);
    ``open_low``/``open_high`` exclude the bound itself. ``means`` ends the message."""

    kind: type  # int or float
    low: Optional[float]
    high: Optional[float]
    open_low: bool = False
    open_high: bool = False
    means: str = ""


#: The numeric options of build, run, profile and export, by flag: one rule each, so no command accepts what another
#: refuses. Typer checks the type; these the value. (``--threshold``, ``--smoothing`` and ``--exit`` are checked by
#: the one place that takes them, :class:`edgekd.device.runtime.pipeline.Pipeline`; ``--target-drop``,
#: ``--confidence`` and ``--fit`` together by :func:`threshold_option_problem`.)
OPTION_BOUNDS: Dict[str, Bound] = {
    "--threads": Bound(int, 1, 1024, means="ONNX Runtime threads"),
    "--max-frames": Bound(int, 1, None, means="frames to run before stopping"),
    "--camera": Bound(int, 0, None, means="a V4L2 camera index"),
    "--max-drop": Bound(float, 0.0, 100.0, means="points of top-1"),
    "--dla-core": Bound(int, 0, 15, means="a DLA core index"),
    "--iterations": Bound(int, 1, None, means="timed calls per graph"),
    "--duration": Bound(float, 0.0, 86400.0, open_low=True, means="seconds per graph"),
    "--warmup": Bound(float, 0.0, 3600.0, means="seconds"),
    "--batch": Bound(int, 1, 4096, means="images per call"),
    "--limit": Bound(int, 1, None, means="labelled images"),
    "--val-size": Bound(int, 1, None, means="validation images in the bundle"),
    "--calib-size": Bound(int, 1, None, means="calibration images in the bundle"),
}


def _range_words(b: Bound) -> str:
    low = None if b.low is None else ("above " if b.open_low else "at least ") + f"{b.low:g}"
    high = None if b.high is None else ("below " if b.open_high else "at most ") + f"{b.high:g}"
    words = " and ".join(w for w in (low, high) if w)
    what = "an integer" if b.kind is int else "a number"
    return f"{what} {words}" if words else what


def option_problem(flag: str, value: Any) -> Optional[str]:
    """What is wrong with ``value`` for the option ``flag`` (:data:`OPTION_BOUNDS`), or None (also for None: not
    given). NaN and infinities are never a value."""
    if value is None:
        return None
    b = OPTION_BOUNDS[flag]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and b.kind is int:
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if ok:
        ok = math.isfinite(value)
    if ok and b.low is not None:
        ok = value > b.low if b.open_low else value >= b.low
    if ok and b.high is not None:
        ok = value < b.high if b.open_high else value <= b.high
    if ok:
        return None
    means = f" ({b.means})" if b.means else ""
    return f"{flag} must be {_range_words(b)}{means}, got {value!r}"


#: The environment variable that sizes ONNX Runtime's thread pool when --threads is not given (the target's
#: ``threads`` for build); read only through :func:`env_threads`, under --threads' own bound.
THREADS_ENV = "EDGEKD_THREADS"


def env_threads_problem() -> Optional[str]:
    """What is wrong with ``$EDGEKD_THREADS`` (a whole number within --threads' bound), or None (also when unset
    or empty). Checked by every device command before any work: 100000 threads would hang the machine."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    value: Any = int(raw) if re.fullmatch(r"[+-]?[0-9]{1,12}", raw) else raw
    problem = option_problem("--threads", value)
    return problem and problem.replace("--threads", THREADS_ENV, 1)


def env_threads() -> Optional[int]:
    """``$EDGEKD_THREADS`` as a thread count, None when unset; a bad value raises :class:`ConfigError`."""
    problem = env_threads_problem()
    if problem:
        raise ConfigError(problem)
    raw = os.environ.get(THREADS_ENV, "").strip()
    return int(raw) if raw else None


def options_problem(**values: Any) -> Optional[str]:
    """The first problem among options given by name (``max_frames=0`` is ``--max-frames``), or None."""
    for name, value in values.items():
        problem = option_problem("--" + name.replace("_", "-"), value)
        if problem:
            return problem
    return None


def dla_core_problem(dla_core: Optional[int], backend: str, dla_cores: int, where: str) -> Optional[str]:
    """The one DLA rule: ``--dla-core`` on a target or device (``where``: ``"target orin-nano"``, ``"this device"``)
    that has no such core, or on ONNX Runtime (no DLA), is refused in one line rather than ignored, since the build
    or the run would silently use the GPU or CPU. ``edgekd build`` asks it of the target, the TensorRT builder of the
    device's builder, the TensorRT runner of the device's runtime (``num_DLA_cores``)."""
    problem = option_problem("--dla-core", dla_core)
    if problem or dla_core is None:
        return problem
    if backend != "tensorrt":
        return f"--dla-core runs on TensorRT only; {where} builds for {backend} (drop --dla-core)"
    if dla_core >= dla_cores:
        has = f"DLA cores 0..{dla_cores - 1}" if dla_cores else "no DLA core"
        return f"--dla-core {dla_core}: {where} has {has}"
    return None


def engine_cache_choice(option: Optional[str]) -> "Path | bool":
    """What ``build --engine-cache`` asks for, as the TensorRT builder's ``engine_cache``: None (not given) → True
    (``$EDGEKD_ENGINE_CACHE``, else the per-user cache), off/none/0/false/no → False (no cache), else that folder.
    Here, not in the TensorRT module, so checking the option loads nothing of TensorRT or CUDA."""
    if option is None:
        return True
    if cache_off(option):
        return False
    return Path(option).expanduser()


def calibration_cache_dir(option: "str | Path | bool | None") -> Optional[Path]:
    """The calibration cache folder ``build`` uses: True (``--cache-dir`` not given) → the per-user cache
    (:func:`edgekd.device.user_cache.calibration_cache`; None when ``$EDGEKD_CACHE`` is off), None, False or an
    off word (``''``, ``off``, …) → no cache, else that folder."""
    if option is True:
        return calibration_cache()
    if option is None or option is False or cache_off(str(option)):
        return None
    return Path(option).expanduser()

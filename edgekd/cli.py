"""The ``edgekd`` command line: thin typer commands that parse, call one function, and turn expected errors
into a one-line message and a non-zero exit.

Every expected failure is one line ``error: …`` on stderr and exit status 2: edgekd's own errors, usage errors
(click's, which typer would draw as a multi-line box: :class:`OneLineErrors`), and the operating system refusing a
file (:func:`run_guarded`). The libraries' own chatter (OpenCV, FFmpeg, ONNX Runtime, torch warnings) is silenced
unless ``edgekd --verbose`` (:func:`quiet_libraries`), so that the line is the whole message. Exit 1 is left to
real internal errors, with their traceback.

Torch is imported only inside the commands that need it (train, quickstart), so ``edgekd --help`` and the
device-side commands start without it.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from edgekd import quickstart as qs
from edgekd.core.destination import is_within
from edgekd.core.writable import check_writable
from edgekd.core.certify import FAMILIES
from edgekd.core.early_exit import RUN_MODES
from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import PRECISIONS, RUNNER_BACKENDS
from edgekd.core.spec import MAX_INPUT_SIDE
from edgekd.core.vote import VOTE_RULES
from edgekd.device import options as dev
from edgekd.device.options import BACKEND_AUTO, CALIB_CHOICES, COSTS, DISPLAYS, FITS
from edgekd.training.config import (
    EXPORT_CALIB_SIZE,
    EXPORT_OPSET,
    EXPORT_VAL_BYTES,
    EXPORT_VAL_MIN,
    METHOD_HELP,
    METHOD_TERMS,
    OBJECTIVE_DEFAULTS,
    PHASE_SCHEDULES,
    SCHEDULES,
    TrainConfig,
)

console = Console()
err_console = Console(stderr=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_error(message: str) -> None:
    """``error: MESSAGE`` as one line on stderr (whitespace, newlines included, collapsed)."""
    err_console.print(f"[bold red]error:[/] {escape(_one_line(message))}", highlight=False, soft_wrap=True)


# Typer 0.2x vendors click (``typer._click``, whose Abort is typer's own); older typer (Python 3.8) uses click itself.
_CLICK: Any = getattr(typer.core, "_click", None) or getattr(typer.core, "click")
ClickException = _CLICK.exceptions.ClickException
UsageError = _CLICK.exceptions.UsageError
Abort = getattr(typer.core, "Abort", None) or _CLICK.exceptions.Abort


class OneLineErrors(TyperGroup):
    """The edgekd group: click's usage errors (an unknown option, a bad choice, a missing argument) become one line
    ``error: …`` and exit 2, like every other expected failure, instead of typer's multi-line box."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `edgekd` alone: the help, as before (typer 0.2x)
                if exc.format_message().strip():
                    exc.show()
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if isinstance(exc, UsageError) and ctx else ""
            print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


VERBOSE_ENV = "EDGEKD_VERBOSE"
#: The libraries' own log levels, set when not verbose (and not already set by the user).
QUIET_ENV = {"OPENCV_LOG_LEVEL": "SILENT", "OPENCV_FFMPEG_LOGLEVEL": "-8",  # -8: AV_LOG_QUIET
             "OPENCV_VIDEOIO_DEBUG": "0", "TORCH_CPP_LOG_LEVEL": "ERROR", "ORT_LOGGING_LEVEL": "3"}
QUIETED_ENV = "EDGEKD_QUIETED"  # which of them edgekd set (inherited by child processes)


def loud_libraries() -> None:
    """``--verbose``: undo the log levels an edgekd parent process set for this one (a user's own stay)."""
    for name in os.environ.pop(QUIETED_ENV, "").split(","):
        if name in QUIET_ENV and os.environ.get(name) == QUIET_ENV[name]:
            del os.environ[name]


def quiet_libraries() -> None:
    """Silence what the libraries print on their own (OpenCV's and FFmpeg's log lines, ONNX Runtime's, torch's C++
    warnings, Python warnings from outside edgekd, library loggers below ERROR), so that an expected failure is the
    one ``error:`` line. Environment variables are set before the libraries read them (OpenCV reads FFmpeg's level
    when it first opens a video); ``edgekd --verbose`` (or EDGEKD_VERBOSE=1) skips all of it."""
    quieted = [name for name in QUIET_ENV if name not in os.environ]
    for name in quieted:
        os.environ[name] = QUIET_ENV[name]
    if quieted:  # remembered, so that `edgekd --verbose` in a child process can undo exactly these
        os.environ[QUIETED_ENV] = ",".join(sorted(set(quieted) | set(os.environ.get(QUIETED_ENV, "").split(",")) - {""}))
    if "cv2" in sys.modules:
        try:
            sys.modules["cv2"].utils.logging.setLogLevel(0)  # SILENT, for a cv2 imported before this ran
        except AttributeError:
            pass
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"edgekd(\.|$)")  # edgekd's own warnings still show
    warnings.showwarning = _warning_line  # as one line `warning: …`, not Python's two (file:line, then the source)
    logging.getLogger().setLevel(logging.ERROR)


def _warning_line(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    """Show a warning as one line ``warning: …`` on stderr (``warnings.showwarning``'s signature)."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="edgekd: train multi-exit TSKD students and deploy them to edge devices.")


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                          help="Show the libraries' own messages (OpenCV, FFmpeg, ONNX Runtime, "
                                               "torch) and warnings; without it an error is one line.")) -> None:
    """edgekd: train multi-exit TSKD students and deploy them to edge devices."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        loud_libraries()
    elif os.environ.get(VERBOSE_ENV, "") in ("", "0"):
        quiet_libraries()


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum for typer from a tuple of allowed values (member names: values with '-' as '_')."""
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


Method = choices("Method", tuple(METHOD_TERMS))
Vote = choices("Vote", VOTE_RULES)
Schedule = choices("Schedule", SCHEDULES)
Phases = choices("Phases", PHASE_SCHEDULES)
Precision = choices("Precision", PRECISIONS)
Backend = choices("Backend", (BACKEND_AUTO, *RUNNER_BACKENDS))
CalibMethod = choices("CalibMethod", CALIB_CHOICES)
MixedPrecision = choices("MixedPrecision", dev.MIXED_PRECISION)
Cost = choices("Cost", COSTS)
Fit = choices("Fit", FITS)
Family = choices("Family", FAMILIES)
Mode = choices("Mode", RUN_MODES)
Display = choices("Display", DISPLAYS)
EarlyExitGraph = choices("EarlyExitGraph", dev.EARLY_EXIT_GRAPHS)


def fail(message: str) -> None:
    """Print a one-line error and exit with status 2 (the same status typer uses for bad options)."""
    print_error(message)
    raise typer.Exit(2)


#: What the operating system says about a file a user named or a disk they filled: an expected failure (one line,
#: exit 2), wherever it surfaces. Any other OSError is a bug and keeps its traceback.
OS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                       errno.EISDIR, errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.EMFILE,
                       errno.ENFILE, errno.EFBIG, errno.EIO, errno.ETXTBSY, errno.EXDEV})


def os_error_line(exc: OSError) -> str:
    """``cannot use PATH: reason`` for an OSError about a file."""
    where = " -> ".join(os.fspath(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or type(exc).__name__
    return f"cannot use {where}: {reason}" if where else reason


#: cv2 missing: OpenCV is an extra, since on a Jetson it comes from JetPack (docs/JETSON.md).
OPENCV_MISSING = ("OpenCV (cv2) is not installed: pip install 'edgekd[opencv]' (on a Jetson use JetPack's OpenCV, "
                  "sudo apt install nvidia-opencv, from a venv made with --system-site-packages: docs/JETSON.md)")


def run_guarded(fn, *args, **kwargs):
    """Call ``fn``; expected failures (EdgekdError, the system refusing a file, missing extras) become clean exits."""
    try:
        return fn(*args, **kwargs)
    except EdgekdError as exc:
        fail(str(exc))
    except OSError as exc:
        if exc.errno in OS_ERRNOS and (exc.filename is not None or exc.errno in (errno.ENOSPC, errno.EDQUOT)):
            fail(os_error_line(exc))
        raise
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "torchvision", "sklearn"):
            fail(f"this command needs the training extra ({exc.name} is not installed): pip install 'edgekd[train]'")
        if exc.name == "cv2":
            fail(OPENCV_MISSING)
        raise
    except ImportError as exc:
        if "numpy" in str(exc).lower() and "cv2" in str(exc):  # JetPack's cv2 (NumPy 1.x) under NumPy 2
            fail(f"OpenCV cannot be imported ({' '.join(str(exc).split())[:160]}): pip install 'numpy<2'")
        raise
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def check_options(**values: Any) -> None:
    """The shared check of the device options given (:func:`edgekd.device.options.options_problem`): one line and
    exit 2 for the first bad value, before any work."""
    problem = dev.options_problem(**values) or dev.env_threads_problem()
    if problem:
        fail(problem)


def _enum_value(x):
    return x.value if isinstance(x, Enum) else x


#: The promise of --target-drop and --confidence, in the help of build and profile.
GUARANTEE = ("With probability at least --confidence, the certified thresholds lose at most this many points on new "
             "images like the labelled ones they were certified on (the bundle's validation sample, or profile's "
             "--data). When those images cannot show it, only the last exit answers and the message says how many "
             "images it would take: certify on more with `edgekd profile --write-thresholds --data`, or allow a "
             "larger --target-drop.")
_D = TrainConfig()  # training defaults: defined once, in TrainConfig, and quoted in the help below
_H = OBJECTIVE_DEFAULTS
#: --method's help: each method, then how to type the ablations of TSKD (the method is the loss, --exits the model).
METHODS_HELP = (" ".join(f"{name}: {text}." for name, text in METHOD_HELP.items())
                + " Ablations on one 3-stage model: ce/kd with --exits 0,1,2 (multi-exit CE, multi-exit KD), byot, "
                  "tskd; single-exit CE/KD: ce/kd with the default exits.")


@app.command()
def train(
    data: Optional[str] = typer.Option(None, help="digits | cifar10 | cifar100 | DIR (ImageFolder) | FILE.npz | 'parts*.npz'"),
    data_root: Optional[str] = typer.Option(None, help="Where cifar10/cifar100 live (or are downloaded to)."),
    download: Optional[bool] = typer.Option(None, "--download/--no-download", help="Allow torchvision to download CIFAR."),
    skip_bad: Optional[bool] = typer.Option(None, "--skip-bad/--no-skip-bad", help="Skip unreadable images (count them) instead of failing."),
    image_size: Optional[str] = typer.Option(None, help="Input size: N or HxW (default: digits 32, arrays native, folders 224)."),
    resize: Optional[str] = typer.Option(None, help="stretch | center-crop (default: center-crop for folders at >= 64 px)."),
    channels: Optional[int] = typer.Option(None, help="1 (grayscale) or 3 (RGB); default from the data."),
    val_fraction: Optional[float] = typer.Option(None, help=f"Fraction of train held out for validation (default: {_D.val_fraction:g})."),
    model: Optional[str] = typer.Option(None, help=f"Student architecture (see `edgekd models`) (default: {_D.model})."),
    exits: Optional[str] = typer.Option(None, help="Comma-separated backbone stages that get an exit (the last always does; every exit is trained). Default: every stage for byot/tskd, the last only for ce/kd."),
    method: Optional[Method] = typer.Option(None, help=f"What every exit learns (default: {_D.method}). {METHODS_HELP}"),
    teacher: Optional[str] = typer.Option(None, help="Teacher: an edgekd checkpoint, or a model name with --teacher-weights."),
    teacher_weights: Optional[str] = typer.Option(None, help="state_dict file for a teacher given by name."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-T", help=f"Distillation temperature T (default: {_H['temperature']:g})."),
    alpha: Optional[float] = typer.Option(None, help=f"Weight α of teacher KD vs CE (default: {_H['alpha']:g})."),
    beta: Optional[float] = typer.Option(None, help=f"Weight β of self-distillation from the deepest exit (default: {_H['beta']:g})."),
    hint_weight: Optional[float] = typer.Option(None, help=f"Weight λ of the feature hint loss (default: {_H['hint_weight']:g})."),
    vote: Optional[Vote] = typer.Option(None, help=f"Vote rule that picks best.pt (default: {_D.vote})."),
    head_grad: Optional[float] = typer.Option(None, help=f"γ in [0, 1]: the gradient each shallow exit's head sends into the backbone is multiplied by γ (0: the backbone learns from the deepest exit alone; default: {_D.head_grad:g}, joint training)."),
    exit_weights: Optional[str] = typer.Option(None, help="Per-exit loss weights, the deepest exit's 1 last: uniform (default), linear (each exit its share of the deepest exit's MACs), sdn (linear, ramped in from 0.01 over each phase, as SDN), or numbers such as 0.3,0.6,1."),
    compile_teacher: Optional[bool] = typer.Option(None, "--compile-teacher/--no-compile-teacher", help="torch.compile the frozen teacher: the same logits, about 13% less time per teacher forward (7% per kd step) on a 2-core CPU, after a first call of seconds (cached) to a minute; for long kd/tskd runs (default: off)."),
    epochs: Optional[int] = typer.Option(None, help=f"Epochs (default: {_D.epochs})."),
    batch_size: Optional[int] = typer.Option(None, help=f"Global batch size, split across torchrun ranks (default: {_D.batch_size})."),
    lr: Optional[float] = typer.Option(None, help=f"Peak learning rate (default: {_D.lr:g})."),
    weight_decay: Optional[float] = typer.Option(None, help=f"Weight decay (default: {_D.weight_decay:g})."),
    schedule: Optional[Schedule] = typer.Option(None, help=f"Learning-rate schedule (default: {_D.schedule})."),
    phases: Optional[Phases] = typer.Option(None, help=f"joint: every exit from the start (default: {_D.phases}); backbone-first: the backbone and deepest exit alone for --epochs (a single-exit student; skipped with --init), then the shallow heads on the frozen backbone for --head-epochs, then optionally all exits for --joint-epochs at --joint-lr."),
    init: Optional[str] = typer.Option(None, help="Start from the weights of this edgekd checkpoint of the same backbone (e.g. a single-exit kd student's best.pt); heads it lacks start untrained."),
    head_epochs: Optional[int] = typer.Option(None, help="backbone-first: epochs of the heads phase (default: --epochs)."),
    freeze_backbone: Optional[bool] = typer.Option(None, "--freeze-backbone/--no-freeze-backbone", help="backbone-first heads phase: keep the backbone and the deepest exit frozen, bit for bit (default), or train the whole net at --head-grad."),
    joint_epochs: Optional[int] = typer.Option(None, help="backbone-first: epochs of a final joint phase over every exit (default: 0, none)."),
    joint_lr: Optional[float] = typer.Option(None, help="backbone-first: peak learning rate of the joint phase (default: a tenth of --lr)."),
    seed: Optional[int] = typer.Option(None, help=f"Seed for init, split and augmentation (default: {_D.seed})."),
    workers: Optional[int] = typer.Option(None, help="DataLoader workers (default 0 for in-memory data, 2 for folders)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help=f"Run directory (default: {_D.out})."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    force: bool = typer.Option(False, "--force", help="Start over even if --out already holds a run."),
    stop_after: Optional[int] = typer.Option(None, help="Stop after this many epochs in this invocation (resume later)."),
    export: Optional[bool] = typer.Option(None, "--export/--no-export", help="Export best.pt to OUT/bundle at the end (default: on)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of settings (keys as in --set)."),
    set_: List[str] = typer.Option([], "--set", help="Override any setting: --set key=value (repeatable)."),
) -> None:
    """Train a teacher (--method ce) or a multi-exit student (every exit trained) and write checkpoints to --out."""
    options = {k: _enum_value(v) for k, v in locals().items() if k not in ("config", "set_", "resume", "force")}
    options["resume"] = resume or None
    options["force"] = force or None
    if exits is not None:
        options["exits"] = exits

    def _run():
        from edgekd.training.config import build_config
        from edgekd.training.data.sources import NAMED_SOURCES
        from edgekd.training.loop import train as train_run

        cfg = build_config(str(config) if config else None, options, set_)
        check_writable(cfg.out, "--out", directory=True)  # before any data is read or any epoch trained
        data = os.path.expanduser(str(cfg.data)) if cfg.data not in NAMED_SOURCES else None
        if data and os.path.isdir(data) and (is_within(cfg.out, data) or is_within(data, cfg.out)):
            fail(f"--out {cfg.out} and --data {cfg.data} overlap: the run would write into the data it reads (and "
                 "--force replace it); choose another --out")
        return train_run(cfg, console=console)

    run_guarded(_run)


@app.command()
def quickstart(
    out: Path = typer.Option(Path(qs.OUT), "--out", "-o", help="Where the teacher and student runs go."),
    epochs: int = typer.Option(qs.EPOCHS, help="Epochs for the teacher and for the student."),
    image_size: int = typer.Option(qs.IMAGE_SIZE, help="Digits are upscaled from 8x8 to this size."),
    force: bool = typer.Option(False, "--force", help="Overwrite an earlier quickstart in --out."),
) -> None:
    """Train a teacher and a TSKD student on the bundled digits data (about two minutes on a 2-core CPU)."""

    def _run():
        from edgekd.quickstart import quickstart as run_quickstart

        return run_quickstart(out, epochs=epochs, image_size=image_size, force=force, console=console)

    run_guarded(_run)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="An edgekd checkpoint (e.g. runs/student/best.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle directory to create."),
    val_size: Optional[int] = typer.Option(None, help=f"Labelled validation images carried in the bundle, on which build certifies early-exit thresholds (and checks precision; profile measures) (default: the whole validation split up to {EXPORT_VAL_BYTES // 2**20} MiB of uint8 pixels, at least {EXPORT_VAL_MIN}: about 6,800 at 32x32 RGB, 500 at 224x224 RGB)."),
    calib_size: int = typer.Option(EXPORT_CALIB_SIZE, help="Training images carried in the bundle for INT8 calibration."),
    opset: int = typer.Option(EXPORT_OPSET, help="ONNX opset."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle directory."),
) -> None:
    """Export a checkpoint to a bundle: full + per-segment ONNX graphs, manifest, calibration and validation data."""
    check_options(val_size=val_size, calib_size=calib_size)

    def _run():
        from edgekd.training.export import export_bundle

        return export_bundle(checkpoint, out, val_size=val_size, calib_size=calib_size, opset=opset, force=force,
                             console=console)

    run_guarded(_run)


@app.command()
def build(
    bundle: Path = typer.Argument(..., help="An exported bundle (edgekd export)."),
    precision: Optional[Precision] = typer.Option(None, help="Precision (default: the target's)."),
    backend: Backend = typer.Option(Backend.auto, help="auto: TensorRT if it can run here, else ONNX Runtime."),
    target: Optional[str] = typer.Option(None, help="Device target name (see `edgekd targets`) or YAML file."),
    profile: Optional[str] = typer.Option(None, "--profile", hidden=True, help="Old name of --target (kept for one release)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Built bundle directory (default: BUNDLE-PRECISION)."),
    calib_data: Optional[Path] = typer.Option(None, help="Calibration images: a directory or an .npz (default: the bundle's)."),
    calib_method: CalibMethod = typer.Option(CalibMethod(CALIB_CHOICES[0]), help="Activation calibrator; auto tries each and keeps the best verdict, then the smallest drop."),
    max_drop: float = typer.Option(dev.MAX_DROP, help=f"Top-1 points any exit or the vote may lose against FP32: the build fails only when the drop is confidently above it ({100 * dev.VERDICT_CONFIDENCE:g}% paired interval on the validation sample)."),
    mixed_precision: MixedPrecision = typer.Option(MixedPrecision(dev.MIXED_PRECISION[0]), help="int8 confidently over --max-drop: auto leaves the most sensitive nodes in float until it is not; off fails instead."),
    target_drop: float = typer.Option(dev.TARGET_DROP, help=f"ε: points of top-1 early exit may lose against the bundle's best full answer (the deepest exit or a vote). {GUARANTEE}"),
    confidence: float = typer.Option(dev.CONFIDENCE, help=f"1 − δ: the probability that the certified thresholds keep --target-drop (at least {dev.MIN_CONFIDENCE:g}, below 1)."),
    fit: Fit = typer.Option(Fit(FITS[0]), help="certified: thresholds that keep --target-drop with --confidence on new images; point: the cheapest thresholds within --target-drop on the validation sample only (a point estimate, not certified)."),
    cost: Cost = typer.Option(Cost(COSTS[0]), help="What early exit minimises: cumulative MACs or measured segment latency."),
    dla_core: Optional[int] = typer.Option(None, help="TensorRT: run on this DLA core (GPU fallback)."),
    cache_dir: Optional[str] = typer.Option(None, help="Calibration cache directory ('off': none; default: $EDGEKD_CACHE/calibration, else ~/.cache/edgekd/calibration)."),
    engine_cache: Optional[str] = typer.Option(None, "--engine-cache", metavar="DIR", help="TensorRT: reuse and keep engines in DIR ('off': no engine cache; default: $EDGEKD_ENGINE_CACHE, else ~/.cache/edgekd/engines)."),
    force: bool = typer.Option(False, "--force", help="Replace --out, and keep a build that fails --max-drop."),
) -> None:
    """Compile a bundle for a precision and backend, verify it against FP32 and certify early-exit thresholds."""
    if target and profile and target != profile:
        fail(f"--profile is the old name of --target; give one of them (got --target {target}, --profile {profile})")
    check_options()  # $EDGEKD_THREADS; the build's own options are checked once, by BuildOptions below

    def _run():
        from edgekd.device.compiler import BuildOptions, build_bundle

        calibration_cache = dev.calibration_cache_dir(True if cache_dir is None else cache_dir)
        options = BuildOptions(precision=_enum_value(precision), backend=_enum_value(backend), target=target or profile,
                               out=out, calib_data=calib_data, calib_method=_enum_value(calib_method),
                               max_drop=max_drop, target_drop=target_drop, cost=_enum_value(cost),
                               confidence=confidence, fit=_enum_value(fit), force=force, cache_dir=calibration_cache,
                               dla_core=dla_core, mixed_precision=_enum_value(mixed_precision),
                               engine_cache=engine_cache)  # a bad value: one line, before any work
        if cache_dir is not None and calibration_cache is not None:  # given: it must be usable (the default is only
            if os.path.lexists(calibration_cache) and not os.path.isdir(calibration_cache):  # a cache: a warning if not)
                fail(f"cannot use --cache-dir {cache_dir}: it is a file, not a folder")
            check_writable(calibration_cache, "--cache-dir", directory=True)
        if isinstance(dev.engine_cache_choice(engine_cache), Path):  # a folder given: it must be usable
            check_writable(engine_cache, "--engine-cache", directory=True)

        return build_bundle(bundle, options, console=console)

    run_guarded(_run)


@app.command()
def run(
    bundle: Path = typer.Argument(..., help="A built bundle (edgekd build), or an exported one."),
    camera: Optional[int] = typer.Option(None, help="Camera index (V4L2), e.g. --camera 0."),
    source: Optional[str] = typer.Option(None, help="/dev/videoN, csi://N, rtsp://…, a video, an image, a folder or glob."),
    mode: Mode = typer.Option(Mode.early_exit, help="early-exit | full-vote | exit (with --exit K)."),
    threshold: Optional[float] = typer.Option(None, help="One confidence threshold for every exit (default: the manifest's)."),
    early_exit_graph: Optional[EarlyExitGraph] = typer.Option(None, help="How early exit runs a frame: auto (what build measured faster here; else the one-call graph where the bundle has one) | one-call (segments joined in one graph) | chain (one call per segment)."),
    exit_: Optional[int] = typer.Option(None, "--exit", help="The exit that answers in --mode exit."),
    vote: Optional[Vote] = typer.Option(None, help="Vote rule for full-vote (default: the manifest's)."),
    smoothing: Optional[float] = typer.Option(None, help="Temporal smoothing: EMA weight of the past, 0 < W < 1."),
    loop: bool = typer.Option(False, "--loop", help="Repeat files and folders forever."),
    reconnect: Optional[bool] = typer.Option(None, "--reconnect/--no-reconnect", help="Reopen a live source that drops [on for live]."),
    display: Display = typer.Option(Display.auto, help="Show a window: auto (when a display is available) | on | off."),
    headless: bool = typer.Option(False, "--headless", help="No window (same as --display off)."),
    output: Optional[str] = typer.Option(None, "--output", help="Write the annotated video here (.mp4), when the run ends; or stream it to rtsp://... (an RTSP server to push to) or rtp://HOST:PORT (H.264 over UDP), which needs OpenCV with GStreamer (JetPack's)."),
    jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="Write one JSON record per frame here, when the run ends (a run that fails before its first frame leaves the file as it was)."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many frames."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime threads (default: all cores; env EDGEKD_THREADS)."),
    record_frames: Optional[Path] = typer.Option(None, "--record-frames", help="Keep frames of this site in this new (or empty) folder, as lossless PNGs, to certify early exit on them without labels: `edgekd profile BUNDLE --data DIR --write-thresholds`."),
    record_every: int = typer.Option(1, "--record-every", help="With --record-frames: keep every N-th frame (consecutive frames are near-copies; a certificate wants independent images, e.g. one a second)."),
    serve: Optional[str] = typer.Option(None, "--serve", help="Serve a live view on [HOST:]PORT (127.0.0.1 unless a host is given): / the annotated stream and a panel, /stream.mjpg, /stats (JSON), /metrics (Prometheus)."),
    serve_token: Optional[str] = typer.Option(None, "--serve-token", help="With --serve: the token every client but the device itself must present (?token=... or Authorization: Bearer ...); default: env EDGEKD_SERVE_TOKEN."),
) -> None:
    """Classify frames live with early exit or a full vote; show, record and log them."""
    if (camera is None) == (source is None):
        fail("give exactly one of --camera N or --source URI")
    check_options(camera=camera, max_frames=max_frames, threads=threads)

    def _run():
        from edgekd.device.runtime.app import RunOptions, run_stream

        opts = RunOptions(mode=mode.value, threshold=threshold, early_exit_graph=_enum_value(early_exit_graph),
                          exit=exit_, vote=_enum_value(vote),
                          smoothing=smoothing, loop=loop, reconnect=reconnect,
                          display="off" if headless else display.value, output=str(output) if output else None,
                          jsonl=str(jsonl) if jsonl else None, max_frames=max_frames, threads=threads,
                          record_frames=str(record_frames) if record_frames else None, record_every=record_every,
                          serve=serve, serve_token=serve_token)
        return run_stream(bundle, camera if camera is not None else source, opts, console=console)

    run_guarded(_run)


def _report_dir(bundles: list[Path]) -> Path:
    """Where a profile goes by default: ``profiles/<bundle>`` (``profiles/<a>+<b>`` for several bundles)."""
    return Path(dev.REPORTS_DIR) / "+".join(b.resolve().name for b in bundles)


def _frame_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. 640x480) → (width, height)."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        fail(f"--frame-size must look like 640x480 (width x height), got {text!r}")
    if max(int(w), int(h)) > MAX_INPUT_SIDE:  # 100000x100000 would ask for 30 GB per frame
        fail(f"--frame-size must be at most {MAX_INPUT_SIDE} px a side, got {text!r}")
    return int(w), int(h)


@app.command("profile")
def profile_cmd(
    bundles: List[Path] = typer.Argument(..., help="One or more bundles (e.g. an FP32 and an INT8 build)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=f"Directory for report.json, report.md and the plots (default: {dev.REPORTS_DIR}/NAME, NAME the bundles' folder names joined by '+')."),
    data: Optional[Path] = typer.Option(None, help="Labelled images: class-per-folder directory or .npz with images and labels (default: the bundle's validation sample). With --write-thresholds also unlabelled frames of the site (a folder of images without class folders, e.g. from `edgekd run --record-frames`): certified on disagreement with the bundle's full answer, no labels needed."),
    limit: Optional[int] = typer.Option(None, help="Use at most this many images."),
    iterations: int = typer.Option(dev.ITERATIONS, help="Timed iterations per graph (after warm-up)."),
    duration: Optional[float] = typer.Option(None, help="Time each graph for this many seconds instead."),
    warmup: float = typer.Option(dev.WARMUP_S, help="Warm-up time per graph, seconds."),
    batch: int = typer.Option(dev.BATCH, help="Batch size for the throughput figures (batch 1 is always measured)."),
    frame_size: str = typer.Option("x".join(map(str, dev.FRAME_SIZE)), help="Camera frame size for the per-frame pre/network/post timing."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime threads (default: all cores; env EDGEKD_THREADS)."),
    write_thresholds: bool = typer.Option(False, "--write-thresholds", help="Certify new thresholds on --data (or the validation sample) and store them, with their certificate, in the manifest."),
    target_drop: float = typer.Option(dev.TARGET_DROP, help=f"With --write-thresholds: ε, the points of top-1 early exit may lose against the bundle's best full answer. {GUARANTEE}"),
    confidence: float = typer.Option(dev.CONFIDENCE, help=f"With --write-thresholds: 1 − δ, the probability that the certified thresholds keep --target-drop (at least {dev.MIN_CONFIDENCE:g}, below 1)."),
    fit: Fit = typer.Option(Fit(FITS[0]), help="With --write-thresholds: certified, or point (the cheapest thresholds within --target-drop on these images only: a point estimate, not certified)."),
    family: Family = typer.Option(Family(FAMILIES[0]), help="With --write-thresholds: global (one threshold for every exit, tested on every image) or path (per-exit thresholds along a path learned on a third of the images, tested on the rest)."),
) -> None:
    """Latency and accuracy per exit, and the early-exit trade-off, for one or several bundles."""
    size = _frame_size(frame_size)
    check_options(iterations=iterations, batch=batch, warmup=warmup, duration=duration, limit=limit, threads=threads)
    problem = dev.threshold_option_problem(_enum_value(fit), target_drop, confidence)  # given, so checked
    if problem:
        fail(problem)

    def _run():
        from edgekd.device.profile.profiler import profile

        return profile(bundles, out or _report_dir(bundles), console=console, write=write_thresholds, target_drop=target_drop,
                       confidence=confidence, fit=_enum_value(fit), family=_enum_value(family),
                       iterations=None if duration else iterations,
                       duration_s=duration, warmup_s=warmup, batch=batch, data=data, limit=limit, frame_size=size,
                       threads=threads)

    run_guarded(_run)


@app.command()
def targets() -> None:
    """List the device targets (`edgekd build --target NAME`)."""

    def _run():
        from edgekd.device.compiler.targets import list_targets, load_target

        for name in list_targets():
            t = load_target(name)
            console.print(f"{name:12s} {t.backend:12s} {','.join(t.precisions):16s} {t.description}")

    run_guarded(_run)


@app.command("profiles", hidden=True)
def profiles_alias() -> None:
    """Old name of `edgekd targets` (kept for one release)."""
    targets()


@app.command()
def models() -> None:
    """List the registered model names."""

    def _run():
        from edgekd.training.models import list_models

        for name in list_models():
            console.print(name)

    run_guarded(_run)


@app.command("plot")
def plot_cmd(
    report: Path = typer.Argument(..., help="A report.json written by `edgekd profile` (here or on another machine)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for tradeoff.png and exits.png (default: the report's)."),
) -> None:
    """Draw the profile plots (tradeoff.png, exits.png) from a report.json; needs the plots extra (matplotlib)."""

    def _run():
        from edgekd.device.profile.plots import plot_report_file

        paths = plot_report_file(report, out)
        for path in paths.values():
            console.print(str(path), markup=False, highlight=False, soft_wrap=True)

    run_guarded(_run)


@app.command()
def doctor(
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON (send it back with a bug report)."),
) -> None:
    """What this machine can do for edgekd, and why not: Jetson, JetPack, TensorRT, CUDA, OpenCV, power, target."""

    def _run():
        import json

        from edgekd.device.doctor import diagnose, doctor_table

        report = diagnose()
        if json_:
            typer.echo(json.dumps(report, indent=2))
        else:
            console.print(doctor_table(report))

    run_guarded(_run)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="edgekd")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

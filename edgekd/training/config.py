"""Training configuration: one dataclass, filled from defaults < YAML file < command-line options < ``--set``.

Torch-free, so the CLI can validate options before importing the torch wing.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from edgekd.core.errors import ConfigError
from edgekd.core.vote import VOTE_RULES

#: The training objectives, and which terms of the TSKD formula each one switches on (see
#: :mod:`edgekd.training.distill.objectives`, which builds one ``Objective`` per entry). Every method trains every
#: exit the model has: the exits (``--exits``) are the architecture, the method is the loss each exit learns. So
#: the ablations of TSKD are these four names on one multi-exit model (``ce`` with several exits is SDN-style
#: multi-exit CE, ``kd`` with several exits is multi-exit KD without self-distillation), and single-exit CE and KD
#: are ``ce``/``kd`` on a model with only the last exit (their default). Self-distillation needs a shallower exit to
#: teach, so ``byot`` and ``tskd`` refuse a one-exit model. Torch-free, so the CLI can offer the names as choices
#: without importing torch.
METHOD_TERMS: dict[str, dict[str, bool]] = {
    "ce": {"uses_teacher": False, "self_distill": False},
    "kd": {"uses_teacher": True, "self_distill": False},
    "byot": {"uses_teacher": False, "self_distill": True},
    "tskd": {"uses_teacher": True, "self_distill": True},
}
#: One line per method for ``train --help`` and the README (what each exit learns).
METHOD_HELP: dict[str, str] = {
    "ce": "cross-entropy on every exit (one exit: a plain model, how teachers are trained; several: SDN-style)",
    "kd": "(1-α)·CE + α·T²·KL(teacher ‖ exit) on every exit, no self-distillation",
    "byot": "CE on every exit + self-distillation (β, λ) from the deepest exit, no teacher; needs ≥ 2 exits",
    "tskd": "teacher KD on every exit + self-distillation from the deepest exit (kd + byot); needs ≥ 2 exits",
}

#: Default objective weights: temperature T, teacher weight α, self-distillation weight β, hint weight λ.
#: ``TrainConfig`` leaves them None ("the default"); the objective fills them from here.
OBJECTIVE_DEFAULTS: dict[str, float] = {"temperature": 4.0, "alpha": 0.5, "beta": 0.3, "hint_weight": 1.0}
SCHEDULES = ("cosine", "onecycle")
#: ``--phases``: ``joint`` trains every exit together from the first epoch (one phase). ``backbone-first`` (Kubaty
#: et al. 2024; SDN's IC-only and Zero Time Waste train heads on a finished backbone) first trains the backbone and
#: the deepest exit alone, as a single-exit student (``--epochs``; skipped when ``--init`` gives the weights), then
#: the shallow heads with every term of the method (``--head-epochs``) on the frozen backbone (or, with
#: ``--no-freeze-backbone``, the whole net at ``--head-grad``), then optionally every exit jointly at a low
#: learning rate (``--joint-epochs`` at ``--joint-lr``). See :func:`phase_plan`.
PHASE_SCHEDULES = ("joint", "backbone-first")
#: Named per-exit loss weights (``--exit-weights``; the deepest exit always weighs 1): ``uniform`` every exit 1;
#: ``linear`` each exit its share of the deepest exit's MACs (its relative depth); ``sdn`` the linear weights
#: ramped in from 0.01 over each phase's epochs, as SDN (Kaya et al. 2019) ramps its internal classifiers. Or a
#: list of numbers, one per exit. See :func:`exit_weights`.
EXIT_WEIGHT_RAMPS = ("uniform", "linear", "sdn")
SDN_START_WEIGHT = 0.01
#: The joint phase of ``backbone-first`` runs at ``--joint-lr``, by default this fraction of ``--lr``.
JOINT_LR_FRACTION = 0.1
#: ``edgekd export`` defaults. A bundle carries labelled validation images (``val_sample.npz``): build certifies
#: early-exit thresholds on them, so the more the better (certifying a 0.5-point budget at 90% confidence takes at
#: least 460 images, and thousands once early exit ever errs). By default it takes the whole validation split, up
#: to ``EXPORT_VAL_BYTES`` of uint8 pixels (20 MiB: 32x32 RGB about 6,800 images, so all of CIFAR's 5,000; 224x224
#: RGB about 140), but never fewer than ``EXPORT_VAL_MIN`` (the floor wins at large inputs: 500 at 224x224 RGB are
#: 72 MiB); see :func:`export_val_size`. Then calibration images and the ONNX opset.
EXPORT_VAL_BYTES = 20 * 2**20
EXPORT_VAL_MIN = 500
EXPORT_CALIB_SIZE = 256
EXPORT_OPSET = 17  # the highest opset TensorRT 8.5 (JetPack 5.1) reads; 18's Reduce axes inputs its parser ignores


def export_val_size(available: int, image_shape: Sequence[int], requested: int | None = None) -> int:
    """How many of ``available`` validation images (each of ``image_shape`` uint8 pixels, e.g. (H, W, C)) a
    bundle carries: ``requested`` when given, else as many as fit in ``EXPORT_VAL_BYTES``, at least
    ``EXPORT_VAL_MIN``; never more than there are."""
    if requested is None:
        requested = max(EXPORT_VAL_MIN, EXPORT_VAL_BYTES // max(1, math.prod(int(d) for d in image_shape)))
    return max(0, min(int(requested), int(available)))


@dataclass
class TrainConfig:
    """Everything a training run needs. Field names are the ``--set`` keys and YAML keys."""

    # data
    data: str = "digits"
    data_root: Optional[str] = None
    download: bool = False
    skip_bad: bool = False
    image_size: Optional[str] = None  # N or HxW
    resize: Optional[str] = None  # stretch | center-crop (default: center-crop for folders at ≥ 64 px)
    channels: Optional[int] = None
    val_fraction: float = 0.1
    augment: bool = True
    hflip: Optional[bool] = None
    workers: Optional[int] = None
    # model
    model: str = "resnet8"
    exits: Optional[list[int]] = None
    head_width: Optional[int] = None
    # objective
    method: str = "tskd"
    teacher: Optional[str] = None
    teacher_weights: Optional[str] = None
    temperature: Optional[float] = None
    alpha: Optional[float] = None
    beta: Optional[float] = None
    hint_weight: Optional[float] = None
    vote: str = "soft"
    head_grad: float = 1.0  # γ: gradient each shallow exit's head sends into the backbone (0 detached, 1 joint)
    exit_weights: Optional[str] = None  # None = uniform; a name of EXIT_WEIGHT_RAMPS or "w0,w1,...,1"
    compile_teacher: bool = False  # torch.compile the frozen teacher: same logits, a kd step ~7% faster after compiling
    # optimisation
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    phases: str = "joint"  # PHASE_SCHEDULES
    init: Optional[str] = None  # checkpoint whose weights the student starts from (backbone-first: skips phase 1)
    head_epochs: Optional[int] = None  # backbone-first: epochs of the heads phase (default: --epochs)
    freeze_backbone: bool = True  # backbone-first heads phase: backbone and deepest exit frozen (else at head_grad)
    joint_epochs: int = 0  # backbone-first: epochs of the final joint phase (0: none)
    joint_lr: Optional[float] = None  # its learning rate (default: JOINT_LR_FRACTION × lr)
    seed: int = 0
    channels_last: bool = True
    amp: bool = True
    device: str = "auto"
    # run
    out: str = "runs/exp"
    resume: bool = False
    force: bool = False
    stop_after: Optional[int] = None
    export: bool = True  # export best.pt to OUT/bundle when training ends

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Cheap checks that need no torch; raise :class:`ConfigError` with a one-line reason."""
        if self.epochs < 1:
            raise ConfigError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.vote not in VOTE_RULES:
            raise ConfigError(f"vote must be one of {', '.join(VOTE_RULES)}, got {self.vote!r}")
        if self.method not in METHOD_TERMS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHOD_TERMS)}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError(f"stop_after must be ≥ 1, got {self.stop_after}")
        if not (isinstance(self.head_grad, (int, float)) and 0.0 <= self.head_grad <= 1.0):
            raise ConfigError(f"head_grad must be in [0, 1] (0: shallow heads send no gradient into the backbone, "
                              f"1: joint training), got {self.head_grad}")
        parse_exit_weights(self.exit_weights)
        if self.phases not in PHASE_SCHEDULES:
            raise ConfigError(f"phases must be one of {', '.join(PHASE_SCHEDULES)}, got {self.phases!r}")
        if self.head_epochs is not None and self.head_epochs < 1:
            raise ConfigError(f"head_epochs must be ≥ 1, got {self.head_epochs}")
        if self.joint_epochs < 0:
            raise ConfigError(f"joint_epochs must be ≥ 0, got {self.joint_epochs}")
        if self.joint_lr is not None and not self.joint_lr > 0:
            raise ConfigError(f"joint_lr must be positive, got {self.joint_lr}")
        if self.phases == "joint" and (self.head_epochs is not None or self.joint_epochs or self.joint_lr is not None
                                       or not self.freeze_backbone):
            raise ConfigError("head_epochs, joint_epochs, joint_lr and freeze_backbone belong to --phases "
                              "backbone-first; with joint training every exit learns for --epochs")
        return self


def parse_exit_weights(value: Optional[str]) -> Optional[list[float]]:
    """``--exit-weights``: None (or a ramp name) → None; ``"0.3,0.6,1"`` → the numbers, each finite and ≥ 0, the
    last 1 (the deepest exit's weight). Raises :class:`ConfigError` on anything else."""
    if value is None or value in EXIT_WEIGHT_RAMPS:
        return None
    try:
        weights = [float(v) for v in str(value).replace("[", "").replace("]", "").split(",") if v.strip()]
    except ValueError:
        weights = []
    if not weights or not all(math.isfinite(w) and w >= 0 for w in weights) or weights[-1] != 1.0:
        raise ConfigError(f"exit_weights must be one of {', '.join(EXIT_WEIGHT_RAMPS)} or one number ≥ 0 per exit "
                          f"ending with the deepest exit's 1 (e.g. 0.3,0.6,1), got {value!r}")
    return weights


def exit_weights(value: Optional[str], macs: Sequence[int], progress: float) -> list[float]:
    """Per-exit loss weights, shallow → deep, for a model whose exits cost ``macs``, at ``progress`` (0 at the
    first epoch of a phase, 1 at its last) — see :data:`EXIT_WEIGHT_RAMPS`."""
    n = len(macs)
    given = parse_exit_weights(value)
    if given is not None:
        if len(given) != n:
            raise ConfigError(f"exit_weights lists {len(given)} weights for a model with {n} exits")
        return given
    if value in (None, "uniform"):
        return [1.0] * n
    depth = [float(m) / float(macs[-1]) for m in macs]  # relative depth, the deepest 1
    if value == "linear":
        return depth
    ramp = min(1.0, max(0.0, float(progress)))
    return [SDN_START_WEIGHT + (d - SDN_START_WEIGHT) * ramp for d in depth[:-1]] + [1.0]


@dataclass(frozen=True)
class Phase:
    """One phase of a run: ``epochs`` at peak learning rate ``lr`` (its own optimizer and schedule). ``trains``:
    ``deepest`` (backbone and deepest exit, as a single-exit student), ``heads`` (the shallow heads only; the rest
    frozen, bit for bit) or ``all`` (every exit, shallow heads sending ``head_grad`` × their gradient back)."""

    name: str
    epochs: int
    lr: float
    trains: str
    head_grad: float


def phase_plan(cfg: TrainConfig) -> list[Phase]:
    """The phases ``cfg`` runs, in order (see :data:`PHASE_SCHEDULES`); their epochs add up to the run's."""
    if cfg.phases == "joint":
        return [Phase("joint", cfg.epochs, cfg.lr, "all", cfg.head_grad)]
    phases = [] if cfg.init else [Phase("backbone", cfg.epochs, cfg.lr, "deepest", 1.0)]
    phases.append(Phase("heads", cfg.head_epochs or cfg.epochs, cfg.lr,
                        "heads" if cfg.freeze_backbone else "all", cfg.head_grad))
    if cfg.joint_epochs:
        phases.append(Phase("joint", cfg.joint_epochs, cfg.joint_lr or JOINT_LR_FRACTION * cfg.lr, "all",
                            cfg.head_grad))
    return phases


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise ConfigError naming the key."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(key, value, args[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(key, v, args[0]) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return value
    try:
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}") from None


def apply_overrides(cfg: TrainConfig, values: dict[str, Any], origin: str) -> TrainConfig:
    """Return ``cfg`` with ``values`` applied; unknown keys are an error that says where they came from."""
    types = _field_types()
    known = {f.name for f in fields(TrainConfig)}
    updates = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} in {origin}")
        updates[key] = _coerce(key, value, types[key])
    return dataclasses.replace(cfg, **updates)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=0.05", "exits=[0,1]"]`` → ``{"lr": 0.05, "exits": [0, 1]}`` (values parsed as YAML scalars)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError, RecursionError) as exc:  # also binary, unreadable, too deep
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    return data


def build_config(config_file: str | None, options: dict[str, Any], sets: list[str]) -> TrainConfig:
    """defaults < YAML file < explicit command-line options (None = not given) < ``--set`` overrides."""
    cfg = TrainConfig()
    if config_file:
        cfg = apply_overrides(cfg, load_yaml(config_file), str(config_file))
    cfg = apply_overrides(cfg, {k: v for k, v in options.items() if v is not None}, "the command line")
    cfg = apply_overrides(cfg, parse_set(sets), "--set")
    return cfg.validate()

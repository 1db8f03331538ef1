"""The one training loop for every method (ce, kd, byot, tskd), on one process or under torchrun.

A run: load data → build student (and frozen teacher) → for each epoch: reseed, train, evaluate every exit and vote
on the validation split, write ``metrics.jsonl``, ``last.pt`` and (if better) ``best.pt`` atomically → evaluate the
best weights on the test split → ``summary.json`` → the bundle (``OUT/bundle``).

Every epoch reseeds all randomness from (seed, epoch, rank), so a run stopped after epoch k and resumed from
``last.pt`` ends with the same weights as an uninterrupted run.

A run killed at any moment is repaired by ``--resume``: ``last.pt`` is the record (its ``train_state.best`` is the
best validation score so far); a ``best.pt`` that does not hold that score (killed between writing ``last.pt`` and
``best.pt``) is rewritten from ``last.pt``, whose weights then are the best; ``summary.json`` is rewritten by every
call, and the bundle is exported again when it is missing or was not exported from this ``best.pt``. ``--out`` is
locked while a run writes it (a second run into it fails at once) and is created only when the first epoch is
written: a run that fails before leaves nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from edgekd.core.atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries
from edgekd.core.destination import DestinationLock, tidy
from edgekd.core.errors import ConfigError, DataError, EdgekdError
from edgekd.core.manifest import ManifestError, load_manifest, looks_like_bundle, sha256_file
from edgekd.device.options import OUT_WORDING
from edgekd.training.checkpoint import library_versions, load_checkpoint, model_from_checkpoint, save_checkpoint
from edgekd.training.config import METHOD_TERMS, Phase, TrainConfig, exit_weights, phase_plan
from edgekd.training.data import LoadedData, load_data
from edgekd.training.distill import Objective, build_objective
from edgekd.training.evaluate import exit_logits, exit_metrics, predict_probs
from edgekd.training.models import build_teacher, create_model, freeze, inference_teacher

RUN_CONTROL_KEYS = ("out", "resume", "force", "stop_after", "workers", "device")


@dataclass
class Dist:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


@dataclass
class TrainResult:
    out: Path
    best: Path
    last: Path
    epochs_run: int
    val: dict[str, Any]
    test: dict[str, Any] | None
    exit_info: list[dict[str, Any]]


# --------------------------------------------------------------------------------------------- set-up helpers


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=torch.device("cuda" if want_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    if want_cuda:
        torch.cuda.set_device(local_rank)
    return Dist(dist.get_rank(), dist.get_world_size(),
                torch.device(f"cuda:{local_rank}" if want_cuda else "cpu"))


def seed_everything(seed: int, epoch: int = 0, rank: int = 0) -> None:
    """Seed torch, numpy and random from (seed, epoch, rank): each epoch's randomness is reproducible alone."""
    s = (seed * 1_000_003 + epoch * 1_009 + rank) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def prepare_out_dir(cfg: TrainConfig) -> Path:
    """Refuse to overwrite an existing run unless ``--resume`` or ``--force``, and a ``bundle`` folder in it that is not
    an edgekd bundle (the export at the end would have to replace it). Creates nothing: the first epoch's files do."""
    out = Path(cfg.out)
    has_run = (out / "last.pt").exists()
    if cfg.resume and not has_run:
        raise ConfigError(f"nothing to resume: {out / 'last.pt'} does not exist")
    if has_run and not (cfg.resume or cfg.force):
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or --force to start over")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    bundle = out / "bundle"
    if cfg.export and (bundle.exists() or bundle.is_symlink()) and not looks_like_bundle(bundle):
        raise ConfigError(f"{bundle} exists and is not an edgekd bundle, so the export at the end of training "
                          "could not replace it; move it away, choose another --out, or pass --no-export")
    return out


#: What a run writes into ``--out`` before its first ``last.pt`` (removed if the run fails that early).
EARLY_FILES = ("metrics.jsonl",)
#: Every file a run writes into ``--out`` (``bundle`` is a directory).
RUN_FILES = ("metrics.jsonl", "last.pt", "best.pt", "summary.json")


def tidy_run(out: Path) -> None:
    """Remove what killed runs left in ``out``: stale temporaries of its files, and of the bundle (whose interrupted
    replacement is undone, see :func:`edgekd.core.destination.tidy`)."""
    if not out.is_dir():
        return
    for name in RUN_FILES:
        remove_stale_temporaries(out / name)
    tidy(out / "bundle")


def remove_failed_start(out: Path) -> None:
    """A run that created ``out`` and failed before its first ``last.pt`` removes what it wrote, then ``out`` itself
    if nothing else is in it (nothing else is ever deleted)."""
    if not out.is_dir() or (out / "last.pt").exists():
        return
    for name in EARLY_FILES:
        (out / name).unlink(missing_ok=True)
        remove_stale_temporaries(out / name)
    for name in ("last.pt", "best.pt"):
        remove_stale_temporaries(out / name)
    with contextlib.suppress(OSError):
        out.rmdir()  # only when empty


def resolve_resume_config(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """On ``--resume`` the run continues with its saved config (only run-control keys come from this call)."""
    if not cfg.resume:
        return cfg, None
    ckpt = load_checkpoint(Path(cfg.out) / "last.pt")
    state = ckpt.get("train_state")
    if not state:
        raise ConfigError(f"{Path(cfg.out) / 'last.pt'} has no training state to resume from")
    saved = TrainConfig(**state["config"])
    run_control = {k: getattr(cfg, k) for k in RUN_CONTROL_KEYS}
    return dataclasses.replace(saved, **run_control), ckpt


def load_run_data(cfg: TrainConfig) -> LoadedData:
    return load_data(cfg.data, root=cfg.data_root, image_size=cfg.image_size, channels=cfg.channels,
                     val_fraction=cfg.val_fraction, seed=cfg.seed, download=cfg.download, skip_bad=cfg.skip_bad,
                     augment=cfg.augment, hflip=cfg.hflip, resize=cfg.resize)


def default_exits(cfg: TrainConfig) -> list[int] | None:
    """``--exits`` when given; else the methods without self-distillation (ce, kd) train a plain model (the deepest
    exit only: how teachers are trained) and byot/tskd put an exit after every stage (None). Whatever the exits,
    every method trains all of them (see :mod:`edgekd.training.distill.objectives`)."""
    if cfg.exits is not None:
        return cfg.exits
    return None if METHOD_TERMS[cfg.method]["self_distill"] else []


def build_student(cfg: TrainConfig, data: LoadedData) -> torch.nn.Module:
    spec = data.spec
    torch.manual_seed(cfg.seed)
    return create_model(cfg.model, num_classes=spec.num_classes, in_chans=spec.channels,
                        input_size=(spec.height, spec.width), exits=default_exits(cfg), head_width=cfg.head_width)


def load_teacher(cfg: TrainConfig, objective: Objective, data: LoadedData) -> torch.nn.Module | None:
    """A frozen teacher from an edgekd checkpoint, or a registered/torchvision model with ``--teacher-weights``."""
    if not objective.needs_teacher:
        return None
    if not cfg.teacher:
        raise ConfigError(f"method {objective.name} learns from a teacher: pass --teacher CHECKPOINT "
                          "(e.g. runs/teacher/best.pt), or use --method byot for self-distillation only")
    spec = data.spec
    path = Path(cfg.teacher)
    if path.suffix == ".pt" or path.exists():
        ckpt = load_checkpoint(path)
        if list(ckpt["class_names"]) != list(spec.class_names):
            raise ConfigError(f"teacher {path} was trained on classes {ckpt['class_names'][:5]}…, "
                              f"not on this data's {list(spec.class_names)[:5]}…")
        if ckpt["input_spec"]["channels"] != spec.channels:
            raise ConfigError(f"teacher {path} takes {ckpt['input_spec']['channels']}-channel input, "
                              f"the data has {spec.channels}")
        size = (ckpt["input_spec"]["height"], ckpt["input_spec"]["width"])
        if size != (spec.height, spec.width):  # it would run, on images unlike any it learnt from
            raise ConfigError(f"teacher {path} was trained on {size[0]}x{size[1]} images, this run feeds "
                              f"{spec.height}x{spec.width}; pass --image-size {size[0]} or train a teacher at "
                              "this size")
        return freeze(model_from_checkpoint(ckpt))
    if not cfg.teacher_weights:
        raise ConfigError(f"teacher {cfg.teacher!r} would be untrained: pass an edgekd checkpoint as --teacher, "
                          "or --teacher-weights FILE with its state_dict")
    return build_teacher(cfg.teacher, num_classes=spec.num_classes, in_chans=spec.channels,
                         input_size=(spec.height, spec.width), weights=cfg.teacher_weights)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, steps_per_epoch: int, phase: Phase):
    """SGD with momentum (no weight decay on norms and biases) and a per-step cosine or one-cycle schedule over one
    phase, for the parameters that phase trains (those with ``requires_grad``)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=phase.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    total = max(1, phase.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=phase.lr, total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return opt, sched


def frozen_modules(model: torch.nn.Module, phase: Phase) -> list[torch.nn.Module]:
    """What ``phase`` leaves untouched: the shallow heads while the deepest exit trains alone (``deepest``), the
    backbone and the deepest head while the shallow heads train (``heads``), nothing otherwise."""
    last = model.num_exits - 1
    if phase.trains == "deepest":
        return [model.heads[i] for i in range(last)]
    if phase.trains == "heads":
        return [*model.segments, model.heads[last]]
    return []


def enter_phase(model: torch.nn.Module, phase: Phase) -> None:
    """Set ``model`` up for ``phase``: γ of the shallow heads, and ``requires_grad`` off on what it leaves frozen
    (so the optimizer never sees those weights: no step, no weight decay, bit-identical)."""
    model.head_grad = phase.head_grad
    frozen = {id(p) for m in frozen_modules(model, phase) for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)


def train_mode(model: torch.nn.Module, phase: Phase) -> None:
    """Training mode for what ``phase`` trains, eval mode for what it freezes (batch-norm statistics stay put)."""
    model.train()
    for m in frozen_modules(model, phase):
        m.eval()


def phase_at(phases: list[Phase], epoch: int) -> tuple[int, int]:
    """(index of the phase run-wide ``epoch`` falls in, that phase's first epoch)."""
    start = 0
    for k, phase in enumerate(phases):
        if epoch < start + phase.epochs:
            return k, start
        start += phase.epochs
    return len(phases) - 1, start - phases[-1].epochs


def init_weights(model: torch.nn.Module, path: str, console: Console) -> None:
    """``--init``: start from the weights of an edgekd checkpoint of the same backbone (single- or multi-exit);
    shallow heads it does not have keep their initial weights."""
    ckpt = load_checkpoint(path)
    if ckpt["model"]["name"] != model.build_args["name"]:
        raise ConfigError(f"--init {path} holds a {ckpt['model']['name']}, not a {model.build_args['name']}")
    try:
        kept = model.load_portable_state_dict(model_from_checkpoint(ckpt).portable_state_dict())
    except ValueError as exc:
        raise ConfigError(f"--init {path}: {exc}") from None
    fresh = f"; exit(s) {', '.join(map(str, kept))} start untrained" if kept else ""
    console.print(f"initialised from {path}{fresh}")


def make_loader(cfg: TrainConfig, data: LoadedData, env: Dist) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled by a DistributedSampler in every case (world 1 included), so one code path serves both."""
    sampler = DistributedSampler(data.train, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.seed)
    per_rank = max(1, cfg.batch_size // env.world)
    workers = cfg.workers if cfg.workers is not None else (2 if data.source.get("kind") == "folder" else 0)
    loader = DataLoader(data.train, batch_size=per_rank, sampler=sampler, num_workers=workers,
                        drop_last=len(sampler) > per_rank, pin_memory=env.device.type == "cuda",
                        persistent_workers=False)
    return loader, sampler


def clean_worker_error(exc: Exception) -> DataError:
    """A DataError re-raised from a DataLoader worker carries the worker's traceback: keep its last line only."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else type(exc).__name__
    if "Error: " in last and "Original Traceback" in str(exc):
        last = last.split("Error: ", 1)[1]
    return DataError(last)


# ------------------------------------------------------------------------------------------------- the loop


def teacher_logits(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher's deepest logits (B, K) as a plain (not inference-mode) tensor the losses may save for backward.

    ``teacher`` is what :func:`~edgekd.training.models.inference_teacher` returns (frozen, channels-last, optionally
    compiled): the loop's way of running it cheaply."""
    with torch.inference_mode():
        logits = exit_logits(teacher(x))[-1]  # (B, K)
    return logits.clone()


def autocast_for(cfg: TrainConfig, device: torch.device):
    if cfg.amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def train_one_epoch(model, teacher, objective: Objective, loader, optimizer, scheduler, scaler, cfg: TrainConfig,
                    env: Dist, progress: Progress | None, step: EpochStep) -> dict[str, float]:
    """One pass over this rank's shard; returns mean loss terms, the loss, images/s and the last learning rate."""
    train_mode(step.net, step.phase)
    sums: dict[str, torch.Tensor] = {}
    n_batches, n_images, start = 0, 0, time.perf_counter()
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    task = progress.add_task("batches", total=len(loader)) if progress else None
    for x, y in loader:
        x = x.to(env.device, non_blocking=True).contiguous(memory_format=memory_format)  # (B, C, H, W)
        y = y.to(env.device, non_blocking=True)  # (B,)
        with autocast_for(cfg, env.device):
            out = model(x)
            t_logits = teacher_logits(teacher, x) if teacher is not None else None
            terms = objective(out.logits, out.features, y, t_logits, step.exit_weights)
            loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
        n_batches += 1
        n_images += x.shape[0]
        if progress is not None:
            progress.advance(task)
    if progress is not None:
        progress.remove_task(task)
    elapsed = time.perf_counter() - start
    stats = {name: float(v) / max(1, n_batches) for name, v in sums.items()}
    stats["loss"] = sum(v for v in stats.values())
    stats["images_per_s"] = n_images * env.world / max(elapsed, 1e-9)
    stats["lr"] = float(scheduler.get_last_lr()[0])
    return stats


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (to check that DDP ranks hold identical weights)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def sync_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running statistics drift apart on each rank's last batches)."""
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def rank_digests(model: torch.nn.Module, env: Dist) -> list[str]:
    digest = weights_digest(model)
    if not env.enabled:
        return [digest]
    gathered: list[Any] = [None] * env.world
    dist.all_gather_object(gathered, digest)
    return gathered


@dataclass(frozen=True)
class EpochStep:
    """What one epoch trains: the bare model (not its DDP wrapper), its phase and the per-exit loss weights."""

    net: torch.nn.Module
    phase: Phase
    exit_weights: list[float]


def epoch_step(model: torch.nn.Module, cfg: TrainConfig, phases: list[Phase], epoch: int) -> EpochStep:
    """The :class:`EpochStep` of run-wide ``epoch``: its phase, and the loss weights — the deepest exit alone in a
    ``deepest`` phase, else ``--exit-weights`` at this epoch's progress through the phase."""
    k, start = phase_at(phases, epoch)
    phase = phases[k]
    macs = [e.macs for e in model.exit_info]
    if phase.trains == "deepest":
        weights = [0.0] * (len(macs) - 1) + [1.0]
    else:
        weights = exit_weights(cfg.exit_weights, macs, (epoch - start) / max(1, phase.epochs - 1))
    return EpochStep(model, phase, weights)


class Run:
    """State and bookkeeping of one training run (checkpoints, metrics file, console)."""

    def __init__(self, cfg: TrainConfig, env: Dist, console: Console | None):
        self.cfg, self.env = cfg, env
        self.console = console if (console is not None and env.main) else Console(quiet=not env.main)
        self.out = prepare_out_dir(cfg) if env.main else Path(cfg.out)
        self.metrics_path = self.out / "metrics.jsonl"

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl (rewritten atomically, dropping lines a crash may have left behind)."""
        lines = []
        if self.metrics_path.exists():
            lines = [ln for ln in self.metrics_path.read_text().splitlines()
                     if ln.strip() and json.loads(ln).get("epoch", -1) < record["epoch"]]
        lines.append(json.dumps(record))
        atomic_write_text(self.metrics_path, "\n".join(lines) + "\n")

    def payload(self, model, data: LoadedData, objective: Objective, metrics: dict[str, Any]) -> dict[str, Any]:
        """What every checkpoint of this run says about itself."""
        split = data.split
        return {
            "model": model.build_args,
            "exit_info": [e.to_json() for e in model.exit_info],
            "input_spec": data.spec.to_dict(),
            "class_names": list(data.spec.class_names),
            "method": {"name": objective.name, "hparams": objective.hparams(), "vote": self.cfg.vote},
            "teacher": {"source": self.cfg.teacher} if objective.needs_teacher else None,
            "split": {"seed": split.seed, "fraction": split.fraction, "n_train_total": split.n_train_total,
                      "val_indices": torch.from_numpy(np.asarray(split.val_indices, dtype=np.int64)),
                      "sha256": split.sha256()},
            "data": data.source,
            "metrics": metrics,
            "versions": library_versions(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        }


def _restore(ckpt, model) -> tuple[int, float, int]:
    """The model's weights and torch's RNG from ``last.pt``; returns (next epoch, best score, the saved phase)."""
    state = ckpt["train_state"]
    model.load_state_dict(ckpt["state_dict"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["epoch"]) + 1, float(state["best"]), int(state.get("phase", 0))


def train(cfg: TrainConfig, console: Console | None = None) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; see the module docstring for the steps.

    The main process holds ``--out``'s lock (:class:`edgekd.core.destination.DestinationLock`) throughout; a run that
    fails before its first ``last.pt`` leaves no ``--out`` behind (:func:`remove_failed_start`)."""
    cfg.validate()
    env = setup_distributed(cfg.device)
    out = Path(cfg.out)
    lock = DestinationLock(out, f"--out {out}", OUT_WORDING) if env.main else None
    existed = out.exists()
    try:
        if env.enabled:  # every rank must agree the output directory is usable before anyone trains
            ok = [None]
            if env.main:
                try:
                    lock.acquire()
                    prepare_out_dir(cfg)
                    ok = [""]
                except EdgekdError as exc:
                    ok = [str(exc)]
            dist.broadcast_object_list(ok, src=0)
            if ok[0]:
                raise ConfigError(ok[0])
        elif lock is not None:
            lock.acquire()
        return _train(cfg, env, console)
    except BaseException:
        if env.main and not existed and lock is not None and lock.fd is not None:
            remove_failed_start(out)
        raise
    finally:
        if lock is not None:
            lock.release()
        if env.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, env: Dist, console: Console | None) -> TrainResult:
    cfg, resume_ckpt = resolve_resume_config(cfg)
    run = Run(cfg, env, console)
    if env.main:
        tidy_run(run.out)
    objective = build_objective(cfg.method, temperature=cfg.temperature, alpha=cfg.alpha, beta=cfg.beta,
                                hint_weight=cfg.hint_weight)
    data = load_run_data(cfg)
    con = run.console
    if data.skipped:
        con.print(f"[yellow]skipped {len(data.skipped)} unreadable image(s)[/] (first: {data.skipped[0]})")
    model = build_student(cfg, data)
    objective.check_exits(model.num_exits)
    exit_weights(cfg.exit_weights, [e.macs for e in model.exit_info], 0.0)  # a list must fit the exits
    if cfg.phases == "backbone-first" and model.num_exits < 2:
        raise ConfigError("--phases backbone-first trains shallow exits after the backbone; this model has only the "
                          "deepest exit (give --exits more stages)")
    teacher = load_teacher(cfg, objective, data)
    if teacher is not None:
        teacher = inference_teacher(teacher, device=env.device, channels_last=cfg.channels_last,
                                    compile=cfg.compile_teacher)
    loader, sampler = make_loader(cfg, data, env)
    phases = phase_plan(cfg)
    total = sum(p.epochs for p in phases)
    start_epoch, best, saved_phase = 0, -1.0, None
    if resume_ckpt is not None:
        start_epoch, best, saved_phase = _restore(resume_ckpt, model)
        if env.main:  # (only the main process writes; the others never compare scores)
            best = repair_best(run, resume_ckpt)
        con.print(f"resuming {run.out} at epoch {start_epoch + 1}/{total}" if start_epoch < total else
                  f"resuming {run.out}: its {total} epochs have run; checking best.pt, summary.json and the bundle")
    elif cfg.init:
        init_weights(model, cfg.init, con)
    model.to(env.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and env.device.type == "cuda")
    con.print(f"training {cfg.model} ({model.num_exits} exits) with {objective.name} on {cfg.data}: "
              f"{len(data.train)} train / {len(data.val)} val images, {data.spec.height}x{data.spec.width}x"
              f"{data.spec.channels}, {env.world} process(es) on {env.device}"
              + ("" if len(phases) == 1 and phases[0].head_grad == 1 else
                 "; phases " + ", ".join(f"{p.name} {p.epochs} ep (lr {p.lr:g}, trains {p.trains}, γ {p.head_grad:g})"
                                         for p in phases)))

    epochs_run, val_metrics = 0, {}
    stop_at = total if cfg.stop_after is None else min(total, start_epoch + cfg.stop_after)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeRemainingColumn(), console=con, transient=True, disable=not env.main)
    current, optimizer, scheduler, wrapped = None, None, None, model
    with progress:
        overall = progress.add_task("epochs", total=total, completed=start_epoch)
        for epoch in range(start_epoch, stop_at):
            k, phase_start = phase_at(phases, epoch)
            if k != current:  # a phase begins (or a resumed run continues one): its weights, optimizer, schedule
                enter_phase(model, phases[k])
                optimizer, scheduler = make_optimizer(cfg, model, len(loader), phases[k])
                if epoch > phase_start and saved_phase == k:  # resumed mid-phase
                    optimizer.load_state_dict(resume_ckpt["train_state"]["optimizer"])
                    scheduler.load_state_dict(resume_ckpt["train_state"]["scheduler"])
                elif epoch == phase_start and all(p.trains == "deepest" for p in phases[:k]) and k > 0:
                    best = -1.0  # the first phase that trains every exit: deepest-only epochs no longer compete
                wrapped = DistributedDataParallel(model) if env.enabled else model
                current = k
            seed_everything(cfg.seed, epoch, env.rank)
            sampler.set_epoch(epoch)
            try:
                stats = train_one_epoch(wrapped, teacher, objective, loader, optimizer, scheduler, scaler, cfg,
                                        env, progress if env.main else None, epoch_step(model, cfg, phases, epoch))
            except Exception as exc:
                if "DataLoader worker" in str(exc) and "DataError" in str(exc):
                    raise clean_worker_error(exc) from None
                raise
            epochs_run += 1
            if env.enabled:
                sync_buffers(model)
            if env.main:
                val_metrics = exit_metrics(*predict_probs(model, data.val, device=env.device))
                score = val_metrics["vote"][cfg.vote]
                record = {"epoch": epoch, "phase": phases[k].name, **stats, "val": val_metrics}
                run.log_epoch(record)
                payload = run.payload(model, data, objective, {"val": val_metrics})
                train_state = {"epoch": epoch, "phase": k, "best": max(best, score),
                               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                               "config": cfg.to_dict(), "rng": {"torch": torch.get_rng_state()}}
                save_checkpoint(run.out / "last.pt", {**payload, "train_state": train_state})
                if score > best:
                    best = score
                    save_checkpoint(run.out / "best.pt", payload)
                con.print(_epoch_line(epoch, total, stats, val_metrics, cfg.vote))
            progress.update(overall, advance=1)
            if env.enabled:
                dist.barrier()
    digests = rank_digests(model, env)
    if env.enabled and len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks diverged: weight digests {digests}")
    finished = stop_at == total  # the last epoch ran, in this call or an earlier one
    return _finish(run, Trained(data, model, objective, epochs_run, digests, finished))


def _vote_score(ckpt: dict[str, Any], rule: str) -> float | None:
    try:
        return float(ckpt["metrics"]["val"]["vote"][rule])
    except (KeyError, TypeError, ValueError):
        return None


def repair_best(run: Run, last: dict[str, Any]) -> float:
    """Make ``best.pt`` hold the best epoch ``last.pt`` records; return the best score to compare later epochs with.

    ``last.pt`` is written before ``best.pt``: a run killed between the two leaves ``train_state.best`` at the new
    epoch's score while ``best.pt`` holds an older epoch (or is missing). Then ``last.pt``'s own weights are that
    best epoch's, and ``best.pt`` is rewritten from them. A ``best.pt`` damaged otherwise (edited, deleted with no
    best weights left to rebuild it) is reported, and later epochs are compared with what it does hold."""
    best_path, rule = run.out / "best.pt", run.cfg.vote
    recorded = float(last["train_state"]["best"])
    try:
        held = _vote_score(load_checkpoint(best_path), rule)
    except EdgekdError:  # missing or unreadable
        held = None
    if held == recorded:
        return recorded
    if _vote_score(last, rule) == recorded:
        save_checkpoint(best_path, {k: v for k, v in last.items() if k not in ("format", "format_version",
                                                                              "train_state")})
        run.console.print(f"[yellow]repaired[/] {best_path}: an interrupted run had left it behind last.pt; it now "
                          f"holds the best epoch ({rule} vote {recorded:.2f} on validation)")
        return recorded
    run.console.print(f"[yellow]warning:[/] {best_path} does not hold the best epoch last.pt records ({rule} vote "
                      f"{recorded:.2f}) and last.pt cannot rebuild it; a later epoch that beats "
                      f"{-1.0 if held is None else held:.2f} replaces it")
    return -1.0 if held is None else held


def bundle_is_current(bundle: Path, checkpoint: Path) -> bool:
    """``bundle`` is a whole, valid bundle exported from ``checkpoint`` as it is now (hashes checked)."""
    try:
        manifest = load_manifest(bundle)
    except ManifestError:
        return False
    return (manifest.source or {}).get("checkpoint_sha256") == sha256_file(checkpoint)


def _epoch_line(epoch: int, epochs: int, stats: dict[str, float], val: dict[str, Any], rule: str) -> str:
    exits = " ".join(f"{a:5.1f}" for a in val["exits"])
    return (f"epoch {epoch + 1}/{epochs} loss {stats['loss']:.3f} val [{exits}] vote {val['vote'][rule]:5.1f} "
            f"lr {stats['lr']:.4f} {stats['images_per_s']:.0f} img/s")


@dataclass
class Trained:
    """What the epochs of one call produced, for :func:`_finish`."""

    data: LoadedData
    model: torch.nn.Module
    objective: Objective
    epochs_run: int  # epochs run in this call
    digests: list[str]  # weight digest per rank (all equal)
    finished: bool  # the run's last epoch has run (in this call or an earlier one)


def _finish(run: Run, trained: Trained) -> TrainResult:
    """Evaluate the best weights on the test split, write summary.json, print the per-exit table."""
    cfg, env, data, model = run.cfg, run.env, trained.data, trained.model
    epochs_run, digests, finished = trained.epochs_run, trained.digests, trained.finished
    best_path, last_path = run.out / "best.pt", run.out / "last.pt"
    val, test = None, None
    if env.main:
        best_ckpt = load_checkpoint(best_path)
        best_model = model_from_checkpoint(best_ckpt).to(env.device)
        val = best_ckpt["metrics"]["val"]
        if data.test is not None and len(data.test):
            probs, labels = predict_probs(best_model, data.test, device=env.device)
            test = exit_metrics(probs, labels, weights=np.asarray(val["vote_weights"]))
            if best_ckpt["metrics"].get("test") != test:  # unchanged: keep the file (and a bundle made from it)
                best_ckpt["metrics"]["test"] = test
                save_checkpoint(best_path, {k: v for k, v in best_ckpt.items()
                                            if k not in ("format", "format_version")})
        summary = {"out": str(run.out), "epochs_run": epochs_run,
                   "epochs": sum(p.epochs for p in phase_plan(cfg)), "world_size": env.world,
                   "rank_weight_digests": digests, "val": val, "test": test,
                   "exit_info": best_ckpt["exit_info"], "config": cfg.to_dict()}
        atomic_write_json(run.out / "summary.json", summary)
        from edgekd.training.report import print_exit_table

        print_exit_table(run.console, best_ckpt["exit_info"], val, test,
                         title=f"{cfg.model} · {trained.objective.name}")
        bundle = run.out / "bundle"
        if cfg.export and finished and not bundle_is_current(bundle, best_path):  # (again after a kill midway)
            from edgekd.training.export import export_bundle

            export_bundle(best_path, bundle, force=True, console=run.console)
    return TrainResult(run.out, best_path, last_path, epochs_run, val or {}, test,
                       [e.to_json() for e in model.exit_info])

"""Benchmark: time of one training step for ce, kd, byot and tskd on the same student/teacher pair, and what the
frozen teacher's forward pass costs in each way of running it.

Step mode (default): all four methods train the same multi-exit student (so only the objective differs) with the
same teacher, prepared as the training loop prepares it (:func:`edgekd.training.models.inference_teacher`), on the
same CIFAR-10 batches (from ../shared/data when present, else random images of the same shape). ``kd (teacher as
built)`` is kd with the teacher as the loop ran it before (eval mode, inference mode, weights as built), and with
``--compile`` ``kd (compiled teacher)`` is kd with ``--compile-teacher``. Methods are interleaved round by round so
they share the machine's state; the ratio of tskd to kd is reported.

Teacher mode (``--teacher-forward``): the teacher's forward pass alone, in every variant worth asking about —
autograd on / ``no_grad`` / ``inference_mode``, eval vs train-mode BatchNorm, contiguous vs channels-last input and
weights, BatchNorm folded into the convolutions (torch.fx), and with ``--compile`` torch.compile (inductor; its
first call is timed) and TorchScript — interleaved round by round, with each variant's largest logit difference
from the reference (eval mode, autograd, contiguous).

On a shared 2-core machine a median is at the mercy of other processes, so both modes report, per variant, the
median over ``--repeats`` blocks of ``--rounds`` interleaved rounds of each block's fastest call.

    .venv/bin/python scripts/bench_train.py --student resnet20 --teacher resnet56 --batch 64 --rounds 10 --compile
    .venv/bin/python scripts/bench_train.py --teacher resnet56 --batch 64 --rounds 12 --teacher-forward --compile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import cifar10_parts, write_result

from edgekd.device.profile.environment import cpu_model
from edgekd.training.config import METHOD_TERMS
from edgekd.training.distill import build_objective
from edgekd.training.evaluate import exit_logits
from edgekd.training.loop import teacher_logits
from edgekd.training.models import create_model, freeze, inference_teacher

METHODS = tuple(METHOD_TERMS)
PLAIN_KD = "kd (teacher as built)"
COMPILED_KD = "kd (compiled teacher)"


def cifar_batches(batch: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n batches of normalised 32x32 RGB images and labels (real CIFAR-10 when the shared copy exists)."""
    parts = cifar10_parts(required=False)
    if parts:
        with np.load(parts[0]) as f:
            x, y = f["x_train"][: batch * n], f["y_train"][: batch * n].astype(np.int64)
        x = (x.astype(np.float32) / 255.0 - np.array([0.4913, 0.4821, 0.4465], np.float32)) / np.array(
            [0.2452, 0.2428, 0.2606], np.float32)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    else:
        x, y = torch.randn(batch * n, 3, 32, 32), np.random.default_rng(0).integers(0, 10, batch * n)
    y = torch.as_tensor(y)
    return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(n)], bool(parts)


def make_step(method: str, student, teacher, optimizer):
    objective = build_objective(method.split()[0])

    def step(x, y):
        out = student(x)
        t = teacher_logits(teacher, x) if objective.needs_teacher else None
        loss = sum(objective(out.logits, out.features, y, t).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed_rounds(fns: dict[str, Any], inputs: dict[str, Any], rounds: int, warmup: int,
                 stat: str = "median") -> dict[str, float]:
    """Seconds per call of each ``fns[k](*inputs[k](round))``, the variants interleaved round by round: the median
    of the timed rounds, or their minimum (``stat="min"``: on a shared machine, the call least disturbed by other
    processes, which is what a variant costs)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(*inputs[k](r))
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    pick = min if stat == "min" else statistics.median
    return {k: pick(v) for k, v in times.items()}


def repeated(fns: dict[str, Any], inputs: dict[str, Any], args) -> tuple[dict[str, float], dict[str, list[float]]]:
    """``--repeats`` blocks of :func:`timed_rounds` (fastest call per block): (median over blocks, every block's)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):  # a burst of other work on the machine hits one block, not all
        for k, v in timed_rounds(fns, inputs, args.rounds, args.warmup, stat="min").items():
            times[k].append(v)
    return {k: statistics.median(v) for k, v in times.items()}, times


def teacher_forward(args, batches) -> dict[str, Any]:
    """The frozen teacher's forward pass in each variant: median ms per batch and the largest logit difference."""
    torch.manual_seed(0)
    base = freeze(create_model(args.teacher, num_classes=10, in_chans=3, input_size=(32, 32), exits=[]))
    if args.teacher_weights:
        from edgekd.training.checkpoint import load_checkpoint

        base.load_state_dict(load_checkpoint(args.teacher_weights)["state_dict"])
    cl = inference_teacher(copy.deepcopy(base))  # what the training loop runs by default
    train_bn = copy.deepcopy(base).train()
    with warnings.catch_warnings():  # BatchNorm folded into the convolutions: measured, not used by the product
        warnings.simplefilter("ignore")
        from torch.fx.experimental.optimization import fuse

        folded = fuse(copy.deepcopy(base)).to(memory_format=torch.channels_last)
    contexts = {"autograd": contextlib.nullcontext, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}
    # name → (model, context, channels-last input)
    variants: dict[str, tuple[Any, Any, bool]] = {
        "eval, autograd, contiguous": (base, "autograd", False),
        "eval, no_grad, contiguous": (base, "no_grad", False),
        "eval, inference_mode, contiguous": (base, "inference_mode", False),
        "train-mode BN, inference_mode, channels-last input (outputs differ)": (train_bn, "inference_mode", True),
        "eval, inference_mode, channels-last input (the loop before)": (base, "inference_mode", True),
        "+ channels-last weights (inference_teacher, the default)": (cl, "inference_mode", True),
        "+ BN folded into the convs (torch.fx)": (folded, "inference_mode", True),
    }
    compile_s = None
    if args.compile:
        compiled = inference_teacher(copy.deepcopy(base), compile=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(batches[0][0])
        compile_s = time.perf_counter() - t0
        variants["+ torch.compile (inference_teacher(compile=True))"] = (compiled, "inference_mode", True)
        with torch.no_grad(), warnings.catch_warnings():  # TorchScript, for comparison only (maintenance mode)
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(inference_teacher(copy.deepcopy(base)), batches[0][0], strict=False)
            scripted = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        variants["+ torch.jit trace, freeze, optimize_for_inference"] = (scripted, "inference_mode", True)

    def call(model, ctx):
        def fn(x):
            with contexts[ctx]():
                out = model(x)
            if isinstance(out, tuple) and not hasattr(out, "logits"):  # TorchScript: (logits list, features list)
                out = out[0]
            return exit_logits(out)[-1]  # (B, K)
        return fn

    plain = [(x.contiguous(), y) for x, y in batches]
    fns = {k: call(m, ctx) for k, (m, ctx, _) in variants.items()}
    inputs = {k: (lambda r, c=cl_in: ((batches if c else plain)[r % len(batches)][0],))
              for k, (_, _, cl_in) in variants.items()}
    med, times = repeated(fns, inputs, args)
    with torch.no_grad():
        ref = base(plain[0][0]).logits[-1]  # (B, K)
        diff = {k: float((fns[k](inputs[k](0)[0]).float() - ref).abs().max()) for k in variants}
    scale = float(ref.abs().max())
    return {"teacher": args.teacher, "weights": args.teacher_weights or "random init (BN statistics as built)",
            "batch": args.batch, "rounds": args.rounds, "compile_s": None if compile_s is None else round(compile_s, 1),
            "repeats": args.repeats, "ms": {k: round(v * 1e3, 1) for k, v in med.items()},
            "ms_per_repeat": {k: [round(x * 1e3, 1) for x in v] for k, v in times.items()},
            "max_abs_logit_diff": {k: float(f"{v:.3g}") for k, v in diff.items()}, "logit_scale": round(scale, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--teacher-weights", help="an edgekd checkpoint of --teacher (default: random init)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=15, help="timed steps per method (interleaved)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--teacher-forward", action="store_true", help="time the teacher's forward pass variants instead")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the teacher (slow to start)")
    ap.add_argument("--repeats", type=int, default=3, help="blocks of --rounds; reported: the median over blocks of "
                    "each block's fastest call")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.batch < 1 or args.rounds < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--batch, --rounds and --repeats must be ≥ 1, --warmup ≥ 0")

    batches, real = cifar_batches(args.batch, 4)
    batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    machine = {"data": "CIFAR-10 (shared copy)" if real else "random", "threads": torch.get_num_threads(),
               "cpu": cpu_model(), "torch": torch.__version__}
    if args.teacher_forward:
        result = {**teacher_forward(args, batches), **machine}
        print(f"{'teacher forward, ' + args.teacher + f', batch {args.batch}':70s} {'ms':>10s} {'max |Δ|':>9s}")
        for k, v in result["ms"].items():
            print(f"{k:70s} {v:10.1f} {result['max_abs_logit_diff'][k]:9.2g}")
        if result["compile_s"] is not None:
            print(f"torch.compile: first call {result['compile_s']:.0f} s")
        print(f"(logits up to {result['logit_scale']:.3g} in magnitude)")
        if args.json:
            write_result(args.json, result)
        return

    torch.manual_seed(0)
    student = create_model(args.student, num_classes=10, in_chans=3, input_size=(32, 32))
    plain_teacher = freeze(create_model(args.teacher, num_classes=10, in_chans=3, input_size=(32, 32), exits=[]))
    teacher = inference_teacher(copy.deepcopy(plain_teacher))  # as the training loop prepares it
    teachers = {PLAIN_KD: plain_teacher}
    if args.compile:
        teachers[COMPILED_KD] = inference_teacher(copy.deepcopy(plain_teacher), compile=True)
    student.to(memory_format=torch.channels_last)
    student.train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    names = (*METHODS, *teachers)
    steps = {m: make_step(m, student, teachers.get(m, teacher), optimizer) for m in names}
    med = repeated(steps, {m: (lambda r: batches[r % len(batches)]) for m in names}, args)[0]
    result = {
        "student": args.student, "teacher": args.teacher, "batch": args.batch, "rounds": args.rounds, **machine,
        "repeats": args.repeats, "step_ms": {m: round(v * 1e3, 2) for m, v in med.items()},
        "images_per_s": {m: round(args.batch / v, 1) for m, v in med.items()},
        "tskd_over_kd": round(med["tskd"] / med["kd"], 3),
    }
    print(f"{'method':22s} {'step (ms)':>10s} {'images/s':>10s}")
    for m in names:
        print(f"{m:22s} {med[m] * 1e3:10.1f} {args.batch / med[m]:10.1f}")
    print(f"tskd step / kd step = {result['tskd_over_kd']:.3f} (target ≤ 1.25)")
    if args.json:
        write_result(args.json, result)


if __name__ == "__main__":
    main()

"""Benchmark: time of one training step for ce, kd, byot and tskd on the same student/teacher pair.

All four methods train the same multi-exit student (so only the objective differs) with the same teacher, on
the same CIFAR-10 batches (from ../shared/data when present, else random images of the same shape). Methods are
interleaved round by round so they share the machine's state; we report the median step time per method and the
ratio of tskd to kd.

    .venv/bin/python scripts/bench_train.py --student resnet20 --teacher resnet56 --batch 64 --rounds 15
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edgekd.training.config import METHOD_TERMS
from edgekd.training.distill import build_objective
from edgekd.training.loop import teacher_logits
from edgekd.training.models import create_model, freeze

METHODS = tuple(METHOD_TERMS)


def cifar_batches(batch: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n batches of normalised 32x32 RGB images and labels (real CIFAR-10 when the shared copy exists)."""
    parts = sorted(glob.glob(str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10.part*.npz")))
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


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_step(method: str, student, teacher, optimizer):
    objective = build_objective(method)

    def step(x, y):
        out = student(x)
        t = teacher_logits(teacher, x) if objective.needs_teacher else None
        loss = sum(objective(out.logits, out.features, y, t).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=15, help="timed steps per method (interleaved)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    torch.manual_seed(0)
    student = create_model(args.student, num_classes=10, in_chans=3, input_size=(32, 32))
    teacher = freeze(create_model(args.teacher, num_classes=10, in_chans=3, input_size=(32, 32), exits=[]))
    student.to(memory_format=torch.channels_last)
    teacher.to(memory_format=torch.channels_last)
    student.train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    batches, real = cifar_batches(args.batch, 4)
    batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    steps = {m: make_step(m, student, teacher, optimizer) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(args.warmup + args.rounds):
        for m in METHODS:
            x, y = batches[r % len(batches)]
            t0 = time.perf_counter()
            steps[m](x, y)
            if r >= args.warmup:
                times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    result = {
        "student": args.student, "teacher": args.teacher, "batch": args.batch, "rounds": args.rounds,
        "data": "CIFAR-10 (shared copy)" if real else "random", "threads": torch.get_num_threads(),
        "cpu": cpu_model(), "torch": torch.__version__,
        "median_step_ms": {m: round(v * 1e3, 2) for m, v in med.items()},
        "images_per_s": {m: round(args.batch / v, 1) for m, v in med.items()},
        "tskd_over_kd": round(med["tskd"] / med["kd"], 3),
    }
    print(f"{'method':8s} {'median step (ms)':>17s} {'images/s':>10s}")
    for m in METHODS:
        print(f"{m:8s} {med[m] * 1e3:17.1f} {args.batch / med[m]:10.1f}")
    print(f"tskd step / kd step = {result['tskd_over_kd']:.3f} (target ≤ 1.25)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

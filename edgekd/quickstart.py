"""``edgekd quickstart``: the whole training story on the bundled digits data in about two minutes on a CPU.

1. a teacher (cifar-style resnet20, plain cross-entropy);
2. a multi-exit TSKD student (resnet8, an exit after every stage) taught by that teacher and by itself, with its
   per-exit table (validation and test top-1, cumulative MACs), exported to a bundle at the end;
3. an INT8 build of that bundle for ONNX Runtime on this CPU: verified against FP32, early-exit thresholds
   certified (on digits' ~144 validation images only a wide budget can be: :data:`TARGET_DROP` points);
4. a profile of the FP32 bundle and the INT8 build side by side (``out/profile``: report.md, report.json, plots).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rich.console import Console

from edgekd.core.errors import ConfigError

TEACHER_MODEL = "resnet20"
STUDENT_MODEL = "resnet8"
OUT = "runs/quickstart"
EPOCHS = 12  # for the teacher and for the student
#: The early-exit budget of the quickstart build, in points. Certifying the default 0.5 needs at least 460 validation
#: images with no early-exit error; digits leaves about 144, so the demo asks for what that many can support.
TARGET_DROP = 5.0
IMAGE_SIZE = 32  # the 8x8 digits are upscaled to this


def quickstart(out: Path, *, epochs: int = EPOCHS, image_size: int = IMAGE_SIZE, force: bool = False,
               console: Console | None = None) -> dict:
    """Train teacher then student into ``out/teacher`` and ``out/student``; return both ``TrainResult``s.

    The training wing (torch) is imported when the steps run, not at module level, so the CLI can quote this
    module's defaults without loading torch. A quickstart that fails leaves no empty ``out`` it created.
    """
    console = console or Console()
    out = Path(out)
    if (out / "student" / "last.pt").exists() and not force:
        raise ConfigError(f"{out} already holds a quickstart; pass --force to run it again")
    created = not os.path.lexists(out)
    try:
        return _quickstart(out, epochs=epochs, image_size=image_size, console=console)
    except BaseException:
        if created:  # a refused or failed quickstart leaves no empty --out behind (rmdir: only when empty)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _quickstart(out: Path, *, epochs: int, image_size: int, console: Console) -> dict:
    """The four steps of :func:`quickstart` into ``out``."""
    from edgekd.training.config import TrainConfig
    from edgekd.training.loop import train

    common = dict(data="digits", image_size=image_size, epochs=epochs, batch_size=64, lr=0.05, force=True)
    console.rule("[bold]1/4 teacher[/]: resnet20, cross-entropy")
    teacher = train(TrainConfig(model=TEACHER_MODEL, method="ce", out=str(out / "teacher"), export=False,
                                **common), console)
    console.rule("[bold]2/4 student[/]: resnet8 with an exit per stage, TSKD, exported to a bundle")
    student = train(TrainConfig(model=STUDENT_MODEL, method="tskd", teacher=str(teacher.best),
                                out=str(out / "student"), **common), console)
    console.rule(f"[bold]3/4 build[/]: INT8 for ONNX Runtime on this CPU, early exit certified within {TARGET_DROP:g} "
                 "points (a demo budget: digits has few validation images)")
    from edgekd.device.compiler import build_bundle

    built = build_bundle(student.out / "bundle", precision="int8", out=student.out / "bundle-int8", force=True,
                         cache_dir=str(out / "calibration"), target_drop=TARGET_DROP, console=console)
    console.rule("[bold]4/4 profile[/]: FP32 and INT8 side by side")
    from edgekd.device.profile.profiler import profile

    profile([student.out / "bundle", built.root], out / "profile", console=console, iterations=100, warmup_s=0.1)
    t_acc = teacher.test["exits"][-1] if teacher.test else teacher.val["exits"][-1]
    console.print(f"teacher {TEACHER_MODEL} test top-1 {t_acc:.1f}%  ·  student checkpoint {student.best}  ·  "
                  f"INT8 bundle {built.root}  ·  profile {out / 'profile' / 'report.md'}")
    return {"teacher": teacher, "student": student}

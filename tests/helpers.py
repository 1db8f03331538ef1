"""Small graphs and files shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_onnx(path: Path, channels: int = 3, size: int = 16, classes: int = 5) -> Path:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm; input ``image`` (N, C, H, W) with a dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, channels, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 0.3, (classes, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (classes,)).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by the ONNX parsers of TensorRT 8.5 onwards
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def assert_cli_runs_without_torch(args: list[str]) -> None:
    """Run ``edgekd ARGS`` in a fresh interpreter; it must succeed with no torch module ever imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from edgekd.cli import app\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "print('TORCH' if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 'CLEAN')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("CLEAN"), proc.stdout[-2000:]


HEAVY_MODULES = ("tensorrt", "polygraphy", "pycuda", "cuda", "torch")


def assert_no_heavy_imports(statements: str) -> None:
    """Run ``statements`` in a fresh interpreter; afterwards none of :data:`HEAVY_MODULES` may be imported."""
    import subprocess
    import sys

    code = (f"import sys\n{statements}\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def write_image_folder(root: Path, classes: tuple[str, ...], per_class: int, shape: tuple[int, ...],
                       ext: str = ".png", seed: int = 0) -> Path:
    """``root/<class>/<i><ext>``: random uint8 images of ``shape`` (H, W, 3), ``per_class`` per class."""
    import cv2

    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / cls / f"{i}{ext}"), rng.integers(0, 255, shape, dtype=np.uint8))
    return root


def gpu_target(tmp_path: Path):
    """A TensorRT device target for whatever GPU runs the (skipped here) TensorRT tests."""
    import yaml

    from edgekd.device.compiler.targets import load_target

    data = {"name": "test-gpu", "description": "whatever NVIDIA GPU runs the tests", "backend": "tensorrt",
            "precisions": ["fp32", "fp16", "int8"], "default_precision": "fp16", "workspace_mib": 256,
            "dla_cores": 0, "batch": {"min": 1, "opt": 2, "max": 4}, "threads": None}
    path = tmp_path / "test-gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_target(str(path))


# -- fake Jetson INA3221 sysfs trees (edgekd.device.profile.energy) ---------------------------------------------
def write_text(path: Path, text: str) -> None:
    """Write ``text``, creating parent folders (for fake sysfs trees)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def hwmon_tree(root: Path, rails: dict[int, tuple[str, float, float]]) -> Path:
    """JetPack 5/6 layout: in{N}_label, in{N}_input (mV), curr{N}_input (mA)."""
    d = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, (label, mv, ma) in rails.items():
        write_text(d / f"in{n}_label", label + "\n")
        write_text(d / f"in{n}_input", f"{mv:g}\n")
        write_text(d / f"curr{n}_input", f"{ma:g}\n")
    write_text(d / "in7_label", "sum of shunt voltages\n")  # a channel with no current: not a rail
    write_text(d / "in7_input", "40\n")
    return d


def iio_tree(root: Path, rails: dict[int, tuple[str, float]]) -> Path:
    """JetPack 4 layout: rail_name_{N}, in_power{N}_input (mW)."""
    d = root / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, (name, mw) in rails.items():
        write_text(d / f"rail_name_{n}", name + "\n")
        write_text(d / f"in_power{n}_input", f"{mw:g}\n")
        write_text(d / f"in_voltage{n}_input", "5000\n")
        write_text(d / f"in_current{n}_input", f"{mw / 5:g}\n")
    return d


# -- fault injection: which durable steps a kill-at-every-step test kills ------------------------------------------
ALL_FAULT_STEPS = "EDGEKD_ALL_FAULT_STEPS"
FAULT_REPORT = "EDGEKD_FAULT_REPORT"


def fault_steps(steps: list) -> list[int]:
    """The 1-based durable steps (lines of an ``EDGEKD_FAULT_LOG``: ``N what path``, as strings or split) a
    kill-at-every-step test kills its command before.

    With ``EDGEKD_ALL_FAULT_STEPS=1`` (what ``scripts/harness/fault_inject.py`` sets): every step. Otherwise a fixed,
    representative subset, so ``make test`` stays short: the first and the last step, the first step of each kind
    (fsync, rename, remove, unlock), and the rename that sets old content aside (``.NAME.edgekd-old``) with the step
    after it (killed there, the old content waits aside: the case a reader must restore). The kinds and the swap are
    where the states on disk differ; the other steps repeat them on other files. With ``EDGEKD_FAULT_REPORT=FILE``
    one line per test (``test total killed``) is appended to FILE."""
    import os

    parsed = [s.split(" ", 2) if isinstance(s, str) else list(s) for s in steps]
    total = len(parsed)
    if os.environ.get(ALL_FAULT_STEPS) == "1":
        chosen = list(range(1, total + 1))
    else:
        picked: dict[tuple, int] = {}
        for i, (_n, what, path) in enumerate(parsed, start=1):
            picked.setdefault((what,), i)
            if what == "rename":
                name = os.path.basename(path)
                if name.endswith(".edgekd-old") and ("aside",) not in picked:
                    picked[("aside",)] = i
                    if i < total:
                        picked[("after aside",)] = i + 1
        chosen = sorted({1, total, *picked.values()} - {0})
    _report_faults(total, chosen)
    return chosen


def write_steps(steps: list) -> list[int]:
    """The 1-based durable steps where a real write can fail (``fsync``, ``rename``): where a test injects ENOSPC or
    EACCES with ``EDGEKD_FAULT_FAIL_AT`` (removals and unlocks do not fail that way). The same subset rule as
    :func:`fault_steps` applies: every such step with ``EDGEKD_ALL_FAULT_STEPS=1``, else the first and last of each
    kind and the rename that sets old content aside."""
    import os

    parsed = [s.split(" ", 2) if isinstance(s, str) else list(s) for s in steps]
    candidates = [i for i, (_n, what, _p) in enumerate(parsed, start=1) if what in ("fsync", "rename")]
    if os.environ.get(ALL_FAULT_STEPS) == "1":
        chosen = candidates
    else:
        picked = set()
        for kind in ("fsync", "rename"):
            of_kind = [i for i in candidates if parsed[i - 1][1] == kind]
            picked.update(of_kind[:1] + of_kind[-1:])
        picked.update(i for i in candidates if parsed[i - 1][2].endswith(".edgekd-old"))
        chosen = sorted(picked)
    _report_faults(len(candidates), chosen)  # total: the write steps
    return chosen


def _report_faults(total: int, chosen: list[int]) -> None:
    """With ``EDGEKD_FAULT_REPORT=FILE``: append ``test total faulted`` to FILE (scripts/harness/fault_inject.py reads it)."""
    import os

    report = os.environ.get(FAULT_REPORT)
    if report:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(report, "a") as f:
            f.write(f"{test} {total} {len(chosen)}\n")


def memory_available_now() -> int:
    """MemAvailable of /proc/meminfo in bytes (read here, independently of edgekd's own reader)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def write_npz_declaring(path: Path, arrays: dict) -> Path:
    """An npz whose members only *declare* arrays (name → (shape, dtype)): a valid .npy header and a few bytes of
    data, what a zip bomb looks like to a reader that trusts the header. Reading it whole fails late, or allocates
    what the header says."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (shape, dtype) in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                       "fortran_order": False, "shape": tuple(shape)})
            zf.writestr(f"{name}.npy", buf.getvalue() + bytes(64))
    return path


def mount_tmpfs(mnt: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` (e.g. ``200k``) at the existing folder ``mnt``, or skip the calling test with the
    reason (it needs root with CAP_SYS_ADMIN). Pair with :func:`unmount`."""
    import subprocess

    import pytest

    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or 'not permitted').strip()}): this test needs root "
                    f"with CAP_SYS_ADMIN")


def unmount(mnt: Path) -> None:
    """Lazily unmount what :func:`mount_tmpfs` mounted (never fails: the test's result is what matters)."""
    import subprocess

    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def VersionOnlyTensorRT(version: str):
    """Not TensorRT: a namespace with nothing but ``__version__``, so the version gate provably reads nothing else."""
    import types

    return types.SimpleNamespace(__version__=version)


def put_engine(path: Path, meta: dict, data: bytes = b"engine bytes", info: dict | None = None) -> Path:
    """A stand-in engine file (``data``, not an engine) with the sidecar edgekd's builder would write for ``meta``."""
    from edgekd.device.tensorrt.engine_cache import write_engine_sidecar

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    write_engine_sidecar(path, meta, info)
    return path

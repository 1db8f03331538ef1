"""What a profile ran on: CPU, cores, threads, library versions, and Jetson power mode / clock state.

The machine's facts (Jetson model, CPU, GPU) come from :mod:`edgekd.device.machine`, the one module that reads
them for ``edgekd doctor``, profiles and engine names."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from edgekd.device.machine import cpu_model, gpu_name, jetson_model, read_text
from edgekd.device.options import env_threads

JETSON_CLOCKS_ADVICE = "run `sudo jetson_clocks` to lock clocks before profiling"

_CV_DISTS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")


def ort_threads() -> int:
    """Threads ONNX Runtime will be given: ``EDGEKD_THREADS`` (:func:`edgekd.device.options.env_threads`, which
    refuses a bad value in one line), else all cores."""
    return env_threads() or os.cpu_count() or 1


def _version(dists: tuple[str, ...], module: str | None = None) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if module is not None and importlib.util.find_spec(module) is not None:
        try:  # apt-installed builds (JetPack's OpenCV / TensorRT) carry no pip metadata
            return str(getattr(importlib.import_module(module), "__version__", None) or "unknown")
        except Exception:  # noqa: BLE001 - a broken install is reported as absent
            return None
    return None


def parse_nvpmodel(output: str) -> tuple[str | None, int | None]:
    """``nvpmodel -q`` prints e.g. ``NV Power Mode: MAXN`` followed by the mode id on the next line."""
    name: str | None = None
    mode_id: int | None = None
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*NV Power Mode\s*:\s*(.+?)\s*$", line)
        if m:
            name = m.group(1)
            for rest in lines[i + 1 :]:
                if rest.strip():
                    if re.fullmatch(r"\s*\d+\s*", rest):
                        mode_id = int(rest)
                    break
            break
    return name, mode_id


def power_mode(binary: str = "nvpmodel") -> tuple[str | None, int | None]:
    exe = shutil.which(binary)
    if exe is None:
        return None, None
    try:
        proc = subprocess.run([exe, "-q"], capture_output=True, text=True, errors="replace", timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return parse_nvpmodel(proc.stdout + "\n" + proc.stderr)


def clocks_locked(root: str | Path = "/") -> bool | None:
    """``True`` when cpu0's scaling_min_freq equals scaling_max_freq, ``None`` when unknown."""
    base = Path(root) / "sys/devices/system/cpu/cpu0/cpufreq"
    lo, hi = read_text(base / "scaling_min_freq"), read_text(base / "scaling_max_freq")
    if lo is None or hi is None:
        return None
    try:
        return int(lo.strip()) == int(hi.strip())
    except ValueError:
        return None


def device_name(backend: str, threads: int | None = None, root: str | Path = "/") -> str:
    """This machine as the label of a latency figure (``build.early_exit.device``): the board (a Jetson's model, else
    the CPU's), its cores, the runner backend and its version, and for ONNX Runtime the threads it runs with
    (``threads``, else :func:`ort_threads`). A figure measured under another label says nothing about this one."""
    board = jetson_model(root) or cpu_model(root)
    if backend == "tensorrt":
        version = _version(("tensorrt", "tensorrt-cu12", "tensorrt-cu11"), "tensorrt")
        return f"{board}; {gpu_name(jetson_model(root)) or 'GPU'}; tensorrt {version}"
    version = _version(("onnxruntime", "onnxruntime-gpu"), "onnxruntime")
    return f"{board}; {os.cpu_count() or 1} cores; onnxruntime {version}; {threads or ort_threads()} threads"


def describe_environment(backend: str, root: str | Path = "/") -> dict:
    jetson = jetson_model(root)
    mode_name, mode_id = power_mode() if jetson else (None, None)
    locked = clocks_locked(root)
    env: dict = {
        "backend": backend,
        "cpu": cpu_model(root),
        "cores": os.cpu_count() or 1,
        "threads": ort_threads(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": _version(("numpy",), "numpy"),
        "onnx": _version(("onnx",), "onnx"),
        "onnxruntime": _version(("onnxruntime", "onnxruntime-gpu"), "onnxruntime"),
        "opencv": _version(_CV_DISTS, "cv2"),
        "jetson": jetson,
        "power_mode": mode_name,
        "power_mode_id": mode_id,
        "clocks_locked": locked,
        "gpu": gpu_name(jetson),
        "advice": JETSON_CLOCKS_ADVICE if jetson and locked is not True else None,
    }
    trt = _version(("tensorrt", "tensorrt-cu12", "tensorrt-cu11"), "tensorrt")
    if trt is not None:
        env["tensorrt"] = trt
    return env

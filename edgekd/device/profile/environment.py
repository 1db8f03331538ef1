"""What a profile ran on: CPU, cores, threads, library versions, and Jetson power mode / clock state."""

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

from edgekd.device.options import env_threads

JETSON_CLOCKS_ADVICE = "run `sudo jetson_clocks` to lock clocks before profiling"

_CV_DISTS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def cpu_model(root: str | Path = "/") -> str:
    text = _read_text(Path(root) / "proc/cpuinfo")
    if text:
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


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


def parse_nv_tegra_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.0, GCID: …`` → ``"36.4.0"``; ``None`` when the line is not there."""
    match = re.search(r"R(\d+)\s*\(\w+\)\s*,\s*REVISION:\s*([0-9][0-9.]*)", text or "")
    if not match:
        return None
    revision = match.group(2).strip(".")
    if revision.count(".") == 0:
        revision += ".0"
    return f"{match.group(1)}.{revision}"


def l4t_release(root: str | Path = "/") -> str | None:
    """The L4T (Jetson Linux) release: ``etc/nv_tegra_release`` under ``root``, else the installed
    ``nvidia-l4t-core`` package (a container built from NVIDIA's l4t images may lack the file but has the package);
    None elsewhere. ``edgekd doctor`` reports it and the TensorRT engine cache key includes it."""
    text = _read_text(Path(root) / "etc/nv_tegra_release")
    found = parse_nv_tegra_release(text) if text else None
    return found or l4t_core_package()


def l4t_core_package() -> str | None:
    """The installed ``nvidia-l4t-core`` version (dpkg-query) as an L4T release: ``36.4.0-20240912212859`` →
    ``"36.4.0"``; None when dpkg-query or the package is not there."""
    exe = shutil.which("dpkg-query")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-W", "-f=${Version}", "nvidia-l4t-core"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    match = re.match(r"\s*(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", proc.stdout or "") if proc.returncode == 0 else None
    if not match:
        return None
    version = match.group(1)
    return version if version.count(".") == 2 else version + ".0"


def jetson_model(root: str | Path = "/") -> str | None:
    text = _read_text(Path(root) / "proc/device-tree/model")
    if not text:
        return None
    model = text.replace("\x00", "").strip()
    return model if "jetson" in model.lower() or "nvidia" in model.lower() else None


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


def gpu_name(jetson: str | None = None, binary: str = "nvidia-smi") -> str | None:
    """The first GPU's name from ``nvidia-smi``; on a Jetson without it, the board's integrated GPU; else None."""
    exe = shutil.which(binary)
    if exe is not None:
        try:
            proc = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                  text=True, errors="replace", timeout=10)  # a tool's bytes are not ours to trust
        except (OSError, subprocess.SubprocessError):
            proc = None
        if proc is not None and proc.returncode == 0:
            name = next((line.strip() for line in proc.stdout.splitlines() if line.strip()), "")
            if name:
                return name
    return f"{jetson} (integrated GPU)" if jetson else None


def clocks_locked(root: str | Path = "/") -> bool | None:
    """``True`` when cpu0's scaling_min_freq equals scaling_max_freq, ``None`` when unknown."""
    base = Path(root) / "sys/devices/system/cpu/cpu0/cpufreq"
    lo, hi = _read_text(base / "scaling_min_freq"), _read_text(base / "scaling_max_freq")
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

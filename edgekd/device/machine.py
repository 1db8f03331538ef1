"""Facts about this machine, in one place: the Jetson model, the L4T (Jetson Linux) release, the CPU, the GPU's
name and its SM (compute capability).

``edgekd doctor`` reports them, ``edgekd profile`` records them with every measurement
(:mod:`edgekd.device.profile.environment`) and the TensorRT builder names and keys engines by them
(:func:`detect_device`, :func:`gpu_sm`), so all three read the same files the same way. Every function takes the
file-system ``root`` it reads (``proc/``, ``etc/``), so tests point it at a fake tree; none raises: what cannot be
read is None (or ``""`` for the GPU's SM).

The GPU comes from two places, each used where it fits: ``nvidia-smi`` (:func:`gpu_name`: a desktop GPU, read
without loading CUDA into this process, for a profile's record) and edgekd's CUDA layer (:func:`cuda_gpu_name`,
:func:`gpu_sm`: what the TensorRT builder is about to build for). Python 3.8 syntax (JetPack 5.1).
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

from edgekd.device import cuda


def read_text(path: Path) -> str | None:
    """The text of ``path`` (undecodable bytes replaced), None when it cannot be read."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


# -- the board and its release -----------------------------------------------------------------------------------
def device_tree_model(root: str | Path = "/") -> str | None:
    """``proc/device-tree/model`` under ``root`` (NUL bytes dropped), whatever the board; None when absent."""
    text = read_text(Path(root) / "proc/device-tree/model")
    model = text.replace("\x00", "").strip() if text else ""
    return model or None


def jetson_model(root: str | Path = "/") -> str | None:
    """The Jetson model (``"NVIDIA Jetson Orin Nano Developer Kit"``) from the device tree; None on any other
    board (the device tree of a Jetson names NVIDIA or Jetson)."""
    model = device_tree_model(root)
    return model if model and ("jetson" in model.lower() or "nvidia" in model.lower()) else None


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
    text = read_text(Path(root) / "etc/nv_tegra_release")
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


# -- CPU and GPU -------------------------------------------------------------------------------------------------
def cpu_model(root: str | Path = "/") -> str:
    """The CPU's ``model name`` from ``proc/cpuinfo``, else what :mod:`platform` says."""
    text = read_text(Path(root) / "proc/cpuinfo")
    if text:
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


#: The instruction-set extensions that decide how fast ONNX Runtime's INT8 and FP32 kernels run on a CPU (x86:
#: AVX2, AVX-512, the VNNI dot products INT8 gains most from, AMX; Arm: the dot-product and int8-matmul
#: extensions), in this order; :func:`cpu_features` reports those the CPU has.
SPEED_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_features(root: str | Path = "/") -> list[str]:
    """Which of :data:`SPEED_FEATURES` the first CPU of ``proc/cpuinfo`` lists (``flags`` on x86, ``Features`` on
    Arm), in that order; empty when it cannot be read. INT8 figures measured on one CPU do not carry over to one
    without the same extensions, so benchmarks record them beside :func:`cpu_model`."""
    text = read_text(Path(root) / "proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return [f for f in SPEED_FEATURES if f in have]
    return []


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


def _cuda_runtime() -> cuda.CudaRuntime | None:
    """The CUDA runtime of :mod:`edgekd.device.cuda` when it sees a GPU, else None (:func:`cuda.status` says why)."""
    try:
        return cuda.runtime()
    except cuda.CudaError:
        return None


def cuda_gpu_name() -> str:
    """GPU 0's name as CUDA reports it (``""`` when no CUDA runtime sees a GPU)."""
    rt = _cuda_runtime()
    try:
        return rt.device_name(0) if rt is not None else ""
    except cuda.CudaError:
        return ""


def gpu_sm() -> str:
    """GPU 0's compute capability as ``"sm87"`` (``""`` when CUDA cannot tell): engines and timing caches are
    specific to it, so it is part of the engine cache key."""
    rt = _cuda_runtime()
    try:
        return "sm%d%d" % rt.compute_capability(0) if rt is not None else ""
    except cuda.CudaError:
        return ""


# -- names for files ---------------------------------------------------------------------------------------------
def sanitize_device(name: str) -> str:
    """A device or GPU name as a short file-name-safe token: ``"NVIDIA Jetson Orin Nano Developer Kit\\0"`` →
    ``"jetson-orin-nano-developer-kit"``; ``"NVIDIA GeForce RTX 3090"`` → ``"geforce-rtx-3090"``."""
    text = re.sub(r"[^a-z0-9]+", "-", name.replace("\x00", " ").lower()).strip("-")
    text = re.sub(r"^nvidia-", "", text)
    return text[:48].strip("-") or "unknown"


def detect_device(root: str | Path = "/") -> str:
    """This device as an engine-name token: the Jetson model, else CUDA's GPU name, else the board's device-tree
    model, else ``"unknown-gpu"`` (sanitised by :func:`sanitize_device`)."""
    jetson = jetson_model(root)
    if jetson:
        return sanitize_device(jetson)
    name = cuda_gpu_name() or device_tree_model(root) or ""
    return sanitize_device(name) if name.strip() else "unknown-gpu"


__all__ = ["cpu_model", "cuda_gpu_name", "detect_device", "device_tree_model", "gpu_name", "gpu_sm", "jetson_model",
           "l4t_core_package", "l4t_release", "parse_nv_tegra_release", "read_text", "sanitize_device"]

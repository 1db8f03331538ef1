"""describe_environment on this (non-Jetson) machine and on fake Jetson roots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy
import onnxruntime
import pytest

from edgekd.core.errors import ConfigError
from edgekd.device.profile.environment import JETSON_CLOCKS_ADVICE, describe_environment, parse_nvpmodel


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_jetson(root: Path, lo: int, hi: int) -> Path:
    _write(root / "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    _write(root / "proc/cpuinfo", "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    cpufreq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    _write(cpufreq / "scaling_min_freq", f"{lo}\n")
    _write(cpufreq / "scaling_max_freq", f"{hi}\n")
    return root


def test_this_machine(monkeypatch):
    monkeypatch.delenv("EDGEKD_THREADS", raising=False)
    env = describe_environment("onnxruntime")
    assert env["backend"] == "onnxruntime"
    assert isinstance(env["cpu"], str) and env["cpu"]
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert env["cpu"] in Path("/proc/cpuinfo").read_text()
    assert env["cores"] == os.cpu_count()
    assert env["threads"] == os.cpu_count()
    assert env["numpy"] == numpy.__version__
    assert env["onnxruntime"] == onnxruntime.__version__
    assert env["onnx"] and env["opencv"] and env["python"]
    assert not env["jetson"]
    assert env["power_mode"] is None and env["advice"] is None


def test_threads_from_env(monkeypatch):
    monkeypatch.setenv("EDGEKD_THREADS", "3")
    assert describe_environment("onnxruntime")["threads"] == 3
    monkeypatch.setenv("EDGEKD_THREADS", "junk")  # one parser (device/options.env_threads): refused, not ignored
    with pytest.raises(ConfigError, match="EDGEKD_THREADS"):
        describe_environment("onnxruntime")
    monkeypatch.setenv("EDGEKD_THREADS", "")
    assert describe_environment("onnxruntime")["threads"] == os.cpu_count()


def test_fake_jetson_unlocked_clocks(tmp_path):
    env = describe_environment("tensorrt", root=fake_jetson(tmp_path, 115200, 1510400))
    assert env["jetson"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert env["cpu"] == "ARMv8 Processor rev 1 (v8l)"
    assert env["clocks_locked"] is False
    assert env["advice"] == JETSON_CLOCKS_ADVICE
    assert "jetson_clocks" in env["advice"]


def test_fake_jetson_locked_clocks(tmp_path):
    env = describe_environment("tensorrt", root=fake_jetson(tmp_path, 1510400, 1510400))
    assert env["jetson"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert env["clocks_locked"] is True
    assert env["advice"] is None


def _fake_tool(bin_dir: Path, name: str, stdout: str) -> None:
    tool = bin_dir / name
    _write(tool, "#!/bin/sh\ncat <<'EOF'\n" + stdout + "EOF\n")
    tool.chmod(0o755)


def test_fake_jetson_power_mode_and_gpu_from_the_tools(tmp_path, monkeypatch):
    """nvpmodel -q and nvidia-smi are run for real: small scripts on PATH stand in for NVIDIA's tools."""
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "nvpmodel", "NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env = describe_environment("tensorrt", root=fake_jetson(tmp_path / "root", 1510400, 1510400))
    assert (env["power_mode"], env["power_mode_id"]) == ("15W", 2)
    assert env["gpu"] == "NVIDIA Jetson Orin Nano Developer Kit (integrated GPU)"  # no nvidia-smi: the board's
    _fake_tool(bin_dir, "nvidia-smi", "Orin (nvgpu)\n")
    assert describe_environment("tensorrt", root=tmp_path / "root")["gpu"] == "Orin (nvgpu)"


def test_empty_root_is_not_a_jetson(tmp_path):
    env = describe_environment("onnxruntime", root=tmp_path)
    assert env["jetson"] is None and env["clocks_locked"] is None and env["advice"] is None


def test_parse_nvpmodel():
    out = "NVPM WARN: fan mode is not set!\nNV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"
    assert parse_nvpmodel(out) == ("MAXN", 0)
    assert parse_nvpmodel("NV Power Mode: 15W\n2\n") == ("15W", 2)
    assert parse_nvpmodel("") == (None, None)

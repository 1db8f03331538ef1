"""The machine's facts (edgekd.device.machine) on fake ``/proc`` and ``/etc`` trees: the Jetson model, the L4T
release, the CPU, and the device token engines are named by. (The GPU's name and SM through the CUDA layer are in
tests/device/test_cuda.py, against a stand-in runtime.)"""

from __future__ import annotations

from edgekd.device import machine
from edgekd.device.machine import cpu_features, cpu_model, detect_device, jetson_model, l4t_release, sanitize_device
from tests.helpers import write_text


def test_sanitize_device():
    assert sanitize_device("NVIDIA Jetson Orin Nano Developer Kit\x00") == "jetson-orin-nano-developer-kit"
    assert sanitize_device("NVIDIA GeForce RTX 3090") == "geforce-rtx-3090"
    assert sanitize_device("Tesla T4") == "tesla-t4"
    assert sanitize_device("  \x00 ") == "unknown"
    assert len(sanitize_device("x" * 200)) <= 48
    assert sanitize_device(sanitize_device("NVIDIA H100 80GB HBM3")) == "h100-80gb-hbm3"  # idempotent


def test_detect_device_reads_the_jetson_device_tree(tmp_path):
    model = tmp_path / "proc/device-tree/model"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\x00")
    assert detect_device(tmp_path) == "jetson-xavier-nx-developer-kit"
    assert detect_device(tmp_path / "absent")  # the GPU name, or "unknown-gpu" on a machine without one


def test_a_board_that_is_not_a_jetson(tmp_path, monkeypatch):
    """A Raspberry Pi's device tree names no Jetson: no Jetson model, and without a CUDA GPU the engine token is the
    board's own model."""
    write_text(tmp_path / "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    monkeypatch.setattr(machine, "cuda_gpu_name", lambda: "")
    assert jetson_model(tmp_path) is None
    assert detect_device(tmp_path) == "raspberry-pi-4-model-b-rev-1-4"
    monkeypatch.setattr(machine, "cuda_gpu_name", lambda: "NVIDIA GeForce RTX 3090")
    assert detect_device(tmp_path) == "geforce-rtx-3090"
    assert detect_device(tmp_path / "nothing") == "geforce-rtx-3090"
    monkeypatch.setattr(machine, "cuda_gpu_name", lambda: "")
    assert detect_device(tmp_path / "nothing") == "unknown-gpu"


def test_jetson_model_l4t_release_and_cpu_from_the_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "l4t_core_package", lambda: None)  # not this machine's dpkg
    write_text(tmp_path / "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    write_text(tmp_path / "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n")
    write_text(tmp_path / "proc/cpuinfo", "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    assert jetson_model(tmp_path) == "NVIDIA Jetson Orin Nano Developer Kit"
    assert l4t_release(tmp_path) == "36.4.3"
    assert cpu_model(tmp_path) == "ARMv8 Processor rev 1 (v8l)"
    assert l4t_release(tmp_path / "nothing") is None
    assert cpu_model(tmp_path / "nothing")  # platform's answer, never empty


def test_cpu_features_reads_the_first_cpus_flags_in_a_fixed_order(tmp_path):
    write_text(tmp_path / "x86/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu avx512_vnni sse avx2 avx512f\n\n"
               "processor\t: 1\nflags\t\t: fpu amx_int8\n")
    assert cpu_features(tmp_path / "x86") == ["avx2", "avx512f", "avx512_vnni"]
    write_text(tmp_path / "arm/proc/cpuinfo", "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
    assert cpu_features(tmp_path / "arm") == ["asimddp", "i8mm"]
    write_text(tmp_path / "plain/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu sse2\n")
    assert cpu_features(tmp_path / "plain") == []
    assert cpu_features(tmp_path / "nothing") == []

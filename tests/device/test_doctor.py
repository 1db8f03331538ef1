"""edgekd doctor: the Jetson branches on fake /proc, /sys and /etc trees with fake NVIDIA tools on PATH, the
TensorRT/CUDA probe against fake ``tensorrt`` and ``cuda`` modules, and this (CPU) machine.

What the fakes are: small files and shell scripts standing in for a Jetson's device tree, nv_tegra_release,
cpufreq, INA3221 rails, ``nvpmodel``, ``dpkg-query`` and ``apt-cache``; and tiny Python packages named ``tensorrt``
and ``cuda`` whose few attributes mimic the real bindings. They test the doctor's parsing and decisions, not a
Jetson, TensorRT or CUDA: none of those has run here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.device import doctor
from edgekd.device.compiler.targets import list_targets
from edgekd.device.doctor import diagnose, jetpack_family, parse_nv_tegra_release, run_tool, suggest_target
from tests.helpers import assert_cli_runs_without_torch, assert_no_heavy_imports, hwmon_tree, write_text

ORIN_NANO = "NVIDIA Jetson Orin Nano Developer Kit"
XAVIER_NX = "NVIDIA Jetson Xavier NX Developer Kit"
# /etc/nv_tegra_release's first line as L4T writes it (the GCID and date are made up)
R36_4 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024\n"
R35_4 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 2023\n"


def fake_jetson(root: Path, model: str, release: str | None, locked: bool = False) -> Path:
    write_text(root / "proc/device-tree/model", model + "\x00")
    if release is not None:
        write_text(root / "etc/nv_tegra_release", release)
    cpufreq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    write_text(cpufreq / "scaling_min_freq", "1510400\n" if locked else "115200\n")
    write_text(cpufreq / "scaling_max_freq", "1510400\n")
    return root


def fake_tool(bin_dir: Path, name: str, stdout: str = "", rc: int = 0) -> None:
    """A shell script on PATH that prints ``stdout`` and exits with ``rc`` (stands in for an NVIDIA/Debian tool)."""
    write_text(bin_dir / name, f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {rc}\n")
    (bin_dir / name).chmod(0o755)


@pytest.fixture
def tools(tmp_path, monkeypatch) -> Path:
    """An empty folder of fake tools, first on PATH (so this machine's own dpkg-query / apt-cache are not asked)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "dpkg-query", "dpkg-query: no packages found matching nvidia-jetpack", rc=1)
    fake_tool(bin_dir, "apt-cache", "", rc=0)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.fixture
def no_gpu_modules(monkeypatch):
    """This Python finds no tensorrt or libcudart (whatever is installed here): no probe runs."""
    real = doctor._find_spec
    monkeypatch.setattr(doctor, "_find_spec", lambda name: None if name == "tensorrt"
                        else real(name))
    monkeypatch.setattr(doctor, "_wants_probe", lambda: False)


STANDIN_CUDART = """
/* A STAND-IN for libcudart, for tests only (not CUDA): the CUDA runtime names edgekd's ctypes layer calls for
   status(), with CUDA's C signatures, answering like one "Orin" GPU (sm 8.7) on a CUDA 12.6 driver; built with
   -DCOUNT_STATUS=35 -DRUNTIME=13000, like a CUDA 13.0 runtime on that driver. */
#include <string.h>
#ifndef COUNT_STATUS
#define COUNT_STATUS 0
#endif
#ifndef RUNTIME
#define RUNTIME 12060
#endif
int cudaGetDeviceCount(int *count) { *count = COUNT_STATUS ? 0 : 1; return COUNT_STATUS; }
int cudaDriverGetVersion(int *v) { *v = 12060; return 0; }
int cudaRuntimeGetVersion(int *v) { *v = RUNTIME; return 0; }
int cudaDeviceGetAttribute(int *value, int attr, int device) { *value = attr == 75 ? 8 : 7; return 0; }
int cudaGetDeviceProperties_v2(void *prop, int device) { strcpy((char *)prop, "Orin"); return 0; }
const char *cudaGetErrorName(int e) { return e == 35 ? "cudaErrorInsufficientDriver" : "cudaErrorUnknown"; }
const char *cudaGetErrorString(int e) {
    return e == 35 ? "CUDA driver version is insufficient for CUDA runtime version" : "unknown error";
}
"""


def standin_cudart(folder: Path, *flags: str) -> Path:
    """Compile :data:`STANDIN_CUDART` to ``folder/libcudart.so.12`` (a skip when there is no C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the stand-in libcudart")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "standin.c").write_text(STANDIN_CUDART)
    lib = folder / "libcudart.so.12"
    subprocess.run([cc, "-shared", "-fPIC", *flags, "-o", str(lib), str(folder / "standin.c")], check=True)
    return lib


@pytest.fixture
def fake_cudart(tmp_path, monkeypatch):
    """edgekd's CUDA layer finds the stand-in libcudart first (LD_LIBRARY_PATH, inherited by the probe)."""
    lib = standin_cudart(tmp_path / "cudart")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    return lib


# -- parsing -----------------------------------------------------------------------------------------------------
def test_parse_nv_tegra_release():
    assert parse_nv_tegra_release(R36_4) == "36.4.0"
    assert parse_nv_tegra_release(R35_4) == "35.4.1"
    assert parse_nv_tegra_release("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n") == "36.4.3"
    assert parse_nv_tegra_release("# R32 (release), REVISION: 7.1, GCID: 29689809, BOARD: t186ref\n") == "32.7.1"
    assert parse_nv_tegra_release("garbage\x00\xff") is None
    assert parse_nv_tegra_release("") is None


@pytest.mark.parametrize("l4t, jetpack, trt, cuda, python", [
    ("36.4.3", "6.1/6.2", "10.3", "12.6", "3.10"),
    ("36.4.0", "6.1/6.2", "10.3", "12.6", "3.10"),
    ("36.3.0", "6.0", "8.6", "12.2", "3.10"),
    ("36.2.0", "6.0 DP", "8.6", "12.2", "3.10"),  # the JetPack 6.0 developer preview
    ("35.4.1", "5.1", "8.5", "11.4", "3.8"),
    ("35.2.1", "5.1", "8.5", "11.4", "3.8"),
    ("35.1.0", "5.0.2", "8.4", "11.4", "3.8"),
    ("32.7.1", "4.x", "8.2 or older", "10.2", "3.6"),
])
def test_jetpack_family(l4t, jetpack, trt, cuda, python):
    family = jetpack_family(l4t)
    assert (family["jetpack"], family["tensorrt"], family["cuda"], family["python"]) == (jetpack, trt, cuda, python)


def test_unknown_l4t_has_no_family():
    assert jetpack_family(None) is None and jetpack_family("38.2.0") is None and jetpack_family("365.1") is None


@pytest.mark.parametrize("model, target", [
    (ORIN_NANO, "orin-nano"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "orin-nx"),
    ("NVIDIA Jetson AGX Orin Developer Kit", "agx-orin"),
    (XAVIER_NX, "xavier-nx"),
    ("Jetson-AGX", "agx-xavier"),
    ("NVIDIA Jetson AGX Xavier Developer Kit", "agx-xavier"),
    ("NVIDIA Jetson TX2 Developer Kit", "jetson-tx2"),
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
    (None, "x86-cpu"),
])
def test_suggest_target(model, target):
    name, why = suggest_target(model)
    assert name == target and name in list_targets()
    assert (model or "not a Jetson") in why


def test_a_jetson_no_target_describes():
    name, why = suggest_target("NVIDIA Jetson Thor Developer Kit")
    assert name is None and "edgekd targets" in why


def test_run_tool_missing_tool_is_none():
    assert run_tool(["edgekd-no-such-tool-here"]) is None


# -- Jetson branches on fake trees -------------------------------------------------------------------------------
def test_orin_nano_jetpack_61(tmp_path, tools, no_gpu_modules):
    root = fake_jetson(tmp_path / "root", ORIN_NANO, R36_4)
    hwmon_tree(root, {1: ("VDD_IN", 5000, 1200), 2: ("VDD_CPU_GPU_CV", 5000, 400)})
    fake_tool(tools, "dpkg-query", "6.1+b123")
    fake_tool(tools, "nvpmodel", "NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0")
    report = diagnose(root)
    json.dumps(report)  # plain data all the way down

    jetson = report["jetson"]
    assert jetson["model"] == ORIN_NANO and jetson["l4t"] == "36.4.0"
    assert (jetson["jetpack"], jetson["jetpack_source"]) == ("6.1", "dpkg-query nvidia-jetpack (installed)")
    assert jetson["ships"]["tensorrt"] == "10.3" and jetson["ships"]["python"] == "3.10"
    assert report["target"]["name"] == "orin-nano" and report["target"]["backend"] == "tensorrt"
    assert (report["power"]["mode"], report["power"]["mode_id"]) == ("15W", 0)
    assert report["power"]["clocks_locked"] is False and "jetson_clocks" in report["power"]["advice"]
    assert report["power"]["rails"] == ["VDD_IN", "VDD_CPU_GPU_CV"]
    # no TensorRT for this Python: said, with what to do, and the target says how to build meanwhile
    trt = report["tensorrt"]
    assert not trt["found"] and not trt["usable"]
    assert "python3-libnvinfer" in trt["reason"]
    assert "x86-cpu" in report["target"]["note"]
    assert any(p.startswith("TensorRT: ") for p in report["problems"])
    assert report["cuda"]["reason"].startswith("no CUDA runtime found")
    # pip's OpenCV here has no GStreamer: on a Jetson that is a problem for csi://, with the shadowing wheel named
    if report["opencv"]["gstreamer"] is False and report["opencv"]["wheel"]:
        assert any("csi://" in p and "pip uninstall opencv" in p for p in report["problems"])

    rows = dict((check, (value, notes)) for check, value, notes in doctor.report_rows(report))
    assert rows["Jetson"][0] == ORIN_NANO
    assert rows["JetPack / L4T"][0] == "JetPack 6.1 / L4T R36.4.0"
    assert rows["Target"][0].startswith("orin-nano (tensorrt")
    assert rows["Power mode"][0] == "15W (id 0)" and rows["Clocks"][0] == "not locked"


def test_xavier_nx_l4t_r35_notes_python_38(tmp_path, tools, no_gpu_modules):
    """No nvidia-jetpack package installed: the JetPack release comes from the L4T release."""
    root = fake_jetson(tmp_path / "root", XAVIER_NX, R35_4, locked=True)
    report = diagnose(root)
    jetson = report["jetson"]
    assert (jetson["l4t"], jetson["jetpack"], jetson["jetpack_source"]) == ("35.4.1", "5.1.2", "L4T R35.4.1")
    assert jetson["ships"]["tensorrt"] == "8.5" and jetson["ships"]["cuda"] == "11.4"
    assert report["target"]["name"] == "xavier-nx"
    assert report["python"]["expected"] == "3.8"
    assert "3.8" in report["python"]["note"]
    if sys.version_info[:2] != (3, 8):  # the device-wing run of `make test` on Python 3.8 has JetPack 5.1's Python
        assert "--system-site-packages" in report["python"]["note"]
        assert any("Python" in p and "3.8" in p for p in report["problems"])
    else:
        assert not any(p.startswith("Python") for p in report["problems"])
    assert report["power"]["clocks_locked"] is True and report["power"]["advice"] is None
    assert report["power"]["mode"] is None  # no nvpmodel on PATH: unknown, not an error


def test_the_installed_l4t_wins_over_what_apt_offers(tmp_path, tools, no_gpu_modules):
    root = fake_jetson(tmp_path / "root", ORIN_NANO, "# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    fake_tool(tools, "apt-cache", "Package: nvidia-jetpack\nVersion: 6.2+b77\nArchitecture: arm64\n")
    jetson = diagnose(root)["jetson"]
    assert (jetson["jetpack"], jetson["jetpack_source"]) == ("6.1", "L4T R36.4.0")  # not apt's newer candidate


def test_apt_cache_when_neither_the_package_nor_the_l4t_release_says(tmp_path, tools, no_gpu_modules):
    root = fake_jetson(tmp_path / "root", ORIN_NANO, "# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic\n")
    fake_tool(tools, "apt-cache", "Package: nvidia-jetpack\nVersion: 7.0+b77\nArchitecture: arm64\n")
    jetson = diagnose(root)["jetson"]
    assert jetson["jetpack"] == "7.0"
    assert jetson["jetpack_source"] == "apt-cache show nvidia-jetpack (offered, not installed)"


def test_a_container_without_nv_tegra_release_reads_nvidia_l4t_core(tmp_path, tools):
    script = ('case "$*" in *nvidia-l4t-core*) echo "36.4.3-20250107174145"; exit 0;; '
              '*) echo "no packages found"; exit 1;; esac')
    write_text(tools / "dpkg-query", f"#!/bin/sh\n{script}\n")
    (tools / "dpkg-query").chmod(0o755)
    assert doctor.l4t_release(tmp_path / "empty-root") == "36.4.3"
    assert doctor.jetpack_release("36.4.3") == ("6.2", "L4T R36.4.3")


@pytest.mark.parametrize("location, source", [
    ("/usr/lib/python3/dist-packages/cv2", "apt"),                   # JetPack's python3-* packages
    ("/usr/local/lib/python3.10/dist-packages/cv2", "pip"),          # `sudo pip install` on Debian/Ubuntu
    ("/home/u/venv/lib/python3.10/site-packages/cv2", "pip"),
    ("/opt/somewhere/cv2", None),
])
def test_install_source(location, source):
    assert doctor.install_source(location) == source


def test_old_jetpack_is_a_problem(tmp_path, tools, no_gpu_modules):
    root = fake_jetson(tmp_path / "root", "NVIDIA Jetson Nano Developer Kit",
                       "# R32 (release), REVISION: 7.1, GCID: 29689809, BOARD: t210ref\n")
    report = diagnose(root)
    assert report["target"]["name"] == "jetson-nano"
    assert any("needs TensorRT 8.5 or newer" in p for p in report["problems"])


def test_broken_files_and_tools_never_raise(tmp_path, tools, no_gpu_modules):
    root = tmp_path / "root"
    (root / "proc/device-tree/model").mkdir(parents=True)  # a folder where a file should be
    write_text(root / "etc/nv_tegra_release", "\x00\xff not a release line")
    write_text(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq", "fast\n")
    write_text(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq", "")
    fake_tool(tools, "nvpmodel", "Segmentation fault", rc=139)
    fake_tool(tools, "dpkg-query", "", rc=0)
    report = diagnose(root)
    assert report["jetson"]["model"] is None and report["jetson"]["l4t"] is None
    assert report["power"]["clocks_locked"] is None
    assert report["target"]["name"] == "x86-cpu"
    json.dumps(report)


# -- the TensorRT / CUDA probe against fake modules --------------------------------------------------------------
FAKE_TRT = """__version__ = "{version}"
class ILogger:
    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)
    def __init__(self):
        pass
class Builder:
    num_DLA_cores = {dla}
    platform_has_fast_fp16 = True
    platform_has_fast_int8 = True
    def __init__(self, logger):
        pass
"""
def fake_gpu_modules(site: Path, *, trt_version: str = "10.3.0", dla: int = 2, trt_body: str | None = None) -> Path:
    """A fake ``tensorrt`` package under ``site`` (not NVIDIA's: a few attributes)."""
    write_text(site / "tensorrt/__init__.py", trt_body if trt_body is not None
               else FAKE_TRT.format(version=trt_version, dla=dla))
    return site


def test_probe_with_a_usable_tensorrt_and_gpu(tmp_path, tools, fake_cudart, monkeypatch):
    site = fake_gpu_modules(tmp_path / "usr/lib/python3/dist-packages")
    monkeypatch.syspath_prepend(str(site))
    root = fake_jetson(tmp_path / "root", "NVIDIA Jetson AGX Orin Developer Kit", R36_4, locked=True)
    report = diagnose(root)
    trt, cuda = report["tensorrt"], report["cuda"]
    assert trt["found"] and trt["usable"] and trt["reason"] is None
    assert trt["version"] == "10.3.0" and trt["source"] == "apt" and trt["location"].startswith(str(site))
    assert (trt["dla_cores"], trt["fast_fp16"], trt["fast_int8"]) == (2, True, True)
    assert cuda["binding"] == f"ctypes ({fake_cudart})"
    assert (cuda["driver"], cuda["runtime"], cuda["devices"]) == ("12.6", "12.6", 1)
    assert (cuda["gpu"], cuda["sm"], cuda["talks_to_driver"], cuda["reason"]) == ("Orin", "8.7", True, None)
    assert report["target"]["name"] == "agx-orin" and report["target"]["note"] is None
    assert not [p for p in report["problems"] if p.startswith(("TensorRT", "CUDA", "tensorrt"))]
    rows = dict((check, (value, notes)) for check, value, notes in doctor.report_rows(report))
    assert rows["DLA cores"][0] == "2" and rows["GPU"][0] == "Orin (SM 8.7)"


def test_probe_a_pip_tensorrt_that_shadows_jetpacks(tmp_path, tools, fake_cudart, monkeypatch):
    site = fake_gpu_modules(tmp_path / "venv/lib/python3.10/site-packages", trt_version="8.6.1", dla=0)
    monkeypatch.syspath_prepend(str(site))
    report = diagnose(fake_jetson(tmp_path / "root", ORIN_NANO, R36_4))
    assert report["tensorrt"]["source"] == "pip"
    assert any("8.6.1" in p and "ships TensorRT 10.3" in p for p in report["problems"])
    assert any("pip uninstall tensorrt" in p for p in report["problems"])


def test_probe_a_libcudart_newer_than_the_driver(tmp_path, tools, monkeypatch):
    """A CUDA 13.0 libcudart first on LD_LIBRARY_PATH on JetPack 6's CUDA 12.6 driver: the real CUDA error, and
    the hint to put the driver's own CUDA first."""
    lib = standin_cudart(tmp_path / "cudart13", "-DCOUNT_STATUS=35", "-DRUNTIME=13000")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    monkeypatch.syspath_prepend(str(fake_gpu_modules(tmp_path / "site")))
    report = diagnose(fake_jetson(tmp_path / "root", ORIN_NANO, R36_4))
    cuda, trt = report["cuda"], report["tensorrt"]
    assert cuda["talks_to_driver"] is False and (cuda["driver"], cuda["runtime"]) == ("12.6", "13.0")
    assert "cudaErrorInsufficientDriver" in cuda["reason"] and "cudaErrorInsufficientDriver" in trt["reason"]
    assert "LD_LIBRARY_PATH" in cuda["reason"] and not trt["usable"]
    assert any(p.startswith("TensorRT: cudaErrorInsufficientDriver") for p in report["problems"])
    rows = dict((check, (value, notes)) for check, value, notes in doctor.report_rows(report))
    assert rows["CUDA binding"][1].startswith("cudaErrorInsufficientDriver")


def test_the_probe_is_a_module_run_with_python_m(tmp_path):
    """``python -m edgekd.device.gpu_probe`` prints one JSON object, whatever this machine has."""
    proc = subprocess.run([sys.executable, "-m", doctor.PROBE_MODULE], capture_output=True, text=True,
                          env=doctor._probe_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(facts, dict) and "trt_usable" in facts and "fatal" not in facts


def test_probe_reports_the_real_import_error(tmp_path, tools, fake_cudart, monkeypatch):
    body = "raise ImportError('libnvinfer.so.10: cannot open shared object file: No such file or directory')\n"
    monkeypatch.syspath_prepend(str(fake_gpu_modules(tmp_path / "site", trt_body=body)))
    report = diagnose(fake_jetson(tmp_path / "root", ORIN_NANO, R36_4))
    assert not report["tensorrt"]["usable"]
    assert "libnvinfer.so.10" in report["tensorrt"]["reason"]


def test_probe_that_crashes_is_reported(tmp_path, tools, fake_cudart, monkeypatch):
    """A TensorRT whose import kills the interpreter (as a broken native install can): the doctor still answers."""
    monkeypatch.syspath_prepend(str(fake_gpu_modules(tmp_path / "site", trt_body="import os\nos.abort()\n")))
    report = diagnose(fake_jetson(tmp_path / "root", ORIN_NANO, R36_4))
    assert "killed by signal" in report["tensorrt"]["reason"]
    assert report["target"]["name"] == "orin-nano"


# -- this machine and the command --------------------------------------------------------------------------------
def test_this_machine_is_an_x86_cpu():
    if Path("/proc/device-tree/model").exists() or Path("/etc/nv_tegra_release").exists():
        pytest.skip("this is a Jetson")
    report = diagnose()
    json.dumps(report)
    assert report["jetson"]["model"] is None and report["jetson"]["l4t"] is None
    assert report["target"]["name"] == "x86-cpu" and report["target"]["backend"] == "onnxruntime"
    assert report["onnxruntime"]["version"] and "CPUExecutionProvider" in report["onnxruntime"]["providers"]
    assert report["opencv"]["version"] and report["python"]["expected"] is None
    assert report["problems"] == []


def test_doctor_imports_no_tensorrt_cuda_or_torch():
    assert_no_heavy_imports("from edgekd.device.doctor import diagnose\ndiagnose()")


def test_cli_table_and_json():
    assert_cli_runs_without_torch(["doctor"])
    assert_cli_runs_without_torch(["doctor", "--json"])
    from edgekd.cli import app

    table = CliRunner().invoke(app, ["doctor"])
    assert table.exit_code == 0, table.output
    assert table.output.count("edgekd doctor") == 1 and "TensorRT" in table.output and "Target" in table.output
    out = CliRunner().invoke(app, ["doctor", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["schema"] == doctor.SCHEMA and "problems" in report and report["target"]["name"]

"""``edgekd doctor``: what this machine can do for edgekd, and why not.

One call, :func:`diagnose`, returns a plain JSON-ready dict: the Jetson model and its JetPack / L4T release, the
Python in use, TensorRT (version, where it was imported from, whether it can build here, DLA cores), the
libcudart edgekd's CUDA layer loads and whether it talks to the driver, OpenCV (and whether it has GStreamer, which ``csi://`` needs), ONNX
Runtime and its providers, power mode, clocks and power rails, and the device target that fits (``edgekd
targets``), plus a list of problems, each with the reason and what to do. :func:`doctor_table` renders it as one
rich table; ``edgekd doctor --json`` prints the dict so a Jetson owner can send it back.

Every probe is guarded: a missing file, tool or library is reported ("not found" and why), never raised.

TensorRT and CUDA are never loaded into this process. They are probed in a child process of the same Python
(:func:`probe_gpu` runs ``python -m edgekd.device.gpu_probe``) that asks the modules owning them,
:func:`edgekd.device.tensorrt.loader.tensorrt_available` and :func:`edgekd.device.cuda.status`, because a broken
TensorRT / CUDA install can abort or hang the interpreter on import, on loading libcudart or on creating a builder,
and the doctor must still answer. The child is started only when there is something to ask (:func:`_wants_probe`).

This module keeps to Python 3.8 syntax: JetPack 5.1, the last JetPack for Xavier NX and AGX Xavier, has 3.8.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgekd.device.profile import environment
from edgekd.device.machine import l4t_release, parse_nv_tegra_release
from edgekd.device.tensorrt.versions import MIN_TENSORRT  # the oldest TensorRT edgekd supports (JetPack 5.1)

SCHEMA = 1
PROBE_TIMEOUT_S = 120.0
TOOL_TIMEOUT_S = 10.0
NOT_FOUND = "not found"

# JetPack releases by L4T (Jetson Linux) release: the first matching prefix wins. Sources, cited in docs/JETSON.md:
# NVIDIA's JetPack 5.0.2 / 5.1 / 5.1.2 pages, the JetPack 6.x docs and Torch-TensorRT's JetPack 6.1/6.2 page.
# (l4t prefix, jetpack, tensorrt major.minor, cuda, ubuntu, python)
JETPACK_FAMILIES: Tuple[Tuple[str, str, str, str, str, str], ...] = (
    ("36.4", "6.1/6.2", "10.3", "12.6", "22.04", "3.10"),
    ("36.3", "6.0", "8.6", "12.2", "22.04", "3.10"),
    ("36.2", "6.0 DP", "8.6", "12.2", "22.04", "3.10"),  # the JetPack 6.0 developer preview
    ("35.1", "5.0.2", "8.4", "11.4", "20.04", "3.8"),
    ("35", "5.1", "8.5", "11.4", "20.04", "3.8"),
    ("32", "4.x", "8.2 or older", "10.2", "18.04", "3.6"),
)
# Exact L4T → JetPack releases (more precise than the family, when the nvidia-jetpack package is not installed).
JETPACK_BY_L4T: Dict[str, str] = {
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
}

# Jetson model (/proc/device-tree/model) → shipped target: every word must appear; the first match wins.
_TARGET_BY_MODEL: Tuple[Tuple[Tuple[str, ...], str], ...] = (
    (("orin", "nano"), "orin-nano"),
    (("orin", "nx"), "orin-nx"),
    (("agx", "orin"), "agx-orin"),
    (("xavier", "nx"), "xavier-nx"),
    (("agx", "xavier"), "agx-xavier"),
    (("agx",), "agx-xavier"),  # the AGX Xavier developer kit's device tree says just "Jetson-AGX"
    (("tx2",), "jetson-tx2"),
    (("nano",), "jetson-nano"),
)
CPU_TARGET = "x86-cpu"


# -- small guarded helpers ---------------------------------------------------------------------------------------
def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _error(exc: BaseException) -> str:
    """``TypeName: first line of the message`` — short enough for a table cell."""
    message = _first_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def run_tool(argv: List[str], timeout: float = TOOL_TIMEOUT_S) -> Optional[Tuple[int, str]]:
    """``(returncode, stdout + stderr)`` of a tool found on PATH; ``None`` when it is not there or cannot run."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def _dist_version(*dists: str) -> Optional[Tuple[str, str]]:
    """``(distribution, version)`` of the first installed distribution among ``dists`` (pip metadata)."""
    for dist in dists:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - broken metadata is "not installed" for this purpose
            continue
    return None


def _find_spec(name: str) -> Any:
    """``importlib.util.find_spec`` for a top-level name (which does not import it), ``None`` on any failure."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _spec_location(spec: Any) -> Optional[str]:
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        return spec.origin
    locations = list(spec.submodule_search_locations or [])
    return locations[0] if locations else None


def install_source(location: Optional[str]) -> Optional[str]:
    """``apt`` for Debian's ``dist-packages`` under /usr/lib (where JetPack's python3-* packages install), ``pip``
    for ``site-packages`` and for ``/usr/local/lib/pythonX.Y/dist-packages`` (where Debian's pip puts a ``sudo pip
    install``); ``None`` when unknown."""
    if not location:
        return None
    parts = Path(location).parts
    if "dist-packages" in parts and parts[:3] == ("/", "usr", "local"):
        return "pip"
    if "dist-packages" in parts:
        return "apt"
    if "site-packages" in parts:
        return "pip"
    return None


def _version_tuple(text: Optional[str]) -> Tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", (text or "").strip())
    return tuple(int(x) for x in match.group(0).split(".")) if match else ()


# -- Jetson, L4T and JetPack -------------------------------------------------------------------------------------
def jetpack_family(l4t: Optional[str]) -> Optional[Dict[str, str]]:
    """What the JetPack of this L4T release ships (JetPack, TensorRT, CUDA, Ubuntu, Python), or ``None``."""
    if not l4t:
        return None
    for prefix, jetpack, trt, cuda, ubuntu, python in JETPACK_FAMILIES:
        if l4t == prefix or l4t.startswith(prefix + "."):
            return {"jetpack": jetpack, "tensorrt": trt, "cuda": cuda, "ubuntu": ubuntu, "python": python}
    return None


def _package_version(text: str) -> Optional[str]:
    """``6.1+b123`` / ``5.1.2-b104`` → ``6.1`` / ``5.1.2``."""
    match = re.match(r"\s*(?:\d+:)?(\d+(?:\.\d+)*)", text or "")
    return match.group(1) if match else None


def jetpack_release(l4t: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """``(JetPack version, where it came from)``: the installed ``nvidia-jetpack`` package (dpkg-query), else the
    installed L4T release, else the one apt offers (apt-cache show: a candidate, which may be newer than what is
    installed, so only when the L4T release says nothing)."""
    out = run_tool(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if out is not None and out[0] == 0 and _package_version(out[1]):
        return _package_version(out[1]), "dpkg-query nvidia-jetpack (installed)"
    if l4t:
        if l4t in JETPACK_BY_L4T:
            return JETPACK_BY_L4T[l4t], f"L4T R{l4t}"
        family = jetpack_family(l4t)
        if family:
            return family["jetpack"], f"L4T R{l4t} (family)"
    out = run_tool(["apt-cache", "show", "nvidia-jetpack"])
    if out is not None and out[0] == 0:
        match = re.search(r"^Version:\s*(\S+)", out[1], re.MULTILINE)
        if match and _package_version(match.group(1)):
            return _package_version(match.group(1)), "apt-cache show nvidia-jetpack (offered, not installed)"
    return None, None


def suggest_target(model: Optional[str]) -> Tuple[Optional[str], str]:
    """The shipped target for a Jetson ``model`` string, or :data:`CPU_TARGET` off a Jetson; ``(None, why)`` for
    a Jetson that no shipped target describes."""
    if not model:
        return CPU_TARGET, "not a Jetson: ONNX Runtime on the CPU"
    words = set(re.split(r"[^a-z0-9]+", model.lower()))
    for needed, name in _TARGET_BY_MODEL:
        if all(word in words for word in needed):
            return name, f"matches the Jetson model {model!r}"
    return None, f"no shipped target describes {model!r}: copy the closest YAML of `edgekd targets` and pass its path"


# -- TensorRT and CUDA (in a child process) ----------------------------------------------------------------------
#: The module the child runs (``python -m``): it asks the modules that own the TensorRT and CUDA imports.
PROBE_MODULE = "edgekd.device.gpu_probe"


def _probe_env() -> Dict[str, str]:
    """The child sees the modules this process sees: its ``sys.path`` goes first on ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def probe_gpu(python: Optional[str] = None, timeout: float = PROBE_TIMEOUT_S) -> Dict[str, Any]:
    """Ask a child process of ``python`` (default: this one) what TensorRT and the CUDA layer say (see the module
    docstring for why a child). Returns the child's facts, or ``{"probe_error": why}``; never raises."""
    try:
        proc = subprocess.run([python or sys.executable, "-m", PROBE_MODULE], capture_output=True, text=True,
                              timeout=timeout, env=_probe_env())
    except subprocess.TimeoutExpired:
        return {"probe_error": f"the TensorRT/CUDA probe did not answer within {timeout:g} s "
                               "(importing tensorrt or creating a CUDA context hangs)"}
    except (OSError, subprocess.SubprocessError) as exc:
        return {"probe_error": f"the TensorRT/CUDA probe could not start: {_error(exc)}"}
    if proc.returncode != 0:
        how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        tail = _first_line((proc.stderr or "").strip().splitlines()[-1] if (proc.stderr or "").strip() else "")
        return {"probe_error": f"the TensorRT/CUDA probe {how} (importing tensorrt or loading libcudart crashes "
                               f"this Python){': ' + tail if tail else ''}"}
    for line in reversed((proc.stdout or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                facts = json.loads(line)
            except ValueError:
                break
            if isinstance(facts, dict):
                return facts
            break
    return {"probe_error": "the TensorRT/CUDA probe printed no report"}


def _cuda_version(number: Optional[int]) -> Optional[str]:
    """CUDA's integer versions: 12060 → ``"12.6"``; 0 (``cudaDriverGetVersion`` without a driver) → ``"none"``."""
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        return None
    return f"{number // 1000}.{(number % 1000) // 10}" if number else "none"


def _wants_probe() -> bool:
    """Is there anything for the child to ask? A ``tensorrt`` this Python can find, or a ``libcudart`` that
    :mod:`edgekd.device.cuda` would load (a file search: nothing is loaded here)."""
    if _find_spec("tensorrt") is not None:
        return True
    try:
        from edgekd.device.cuda import find_cudart

        return bool(find_cudart())
    except Exception:  # noqa: BLE001
        return False


# -- the sections ------------------------------------------------------------------------------------------------
def _python_section(family: Optional[Dict[str, str]]) -> Dict[str, Any]:
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    system_site: Optional[bool] = None
    if in_venv:
        cfg = _read(Path(sys.prefix) / "pyvenv.cfg") or ""
        match = re.search(r"^\s*include-system-site-packages\s*=\s*(\w+)", cfg, re.MULTILINE)
        system_site = bool(match) and match.group(1).lower() == "true"
    version = platform.python_version()
    expected = family["python"] if family else None
    note = None
    if expected and not version.startswith(expected + "."):
        note = (f"JetPack {family['jetpack']} ships Python {expected}; its TensorRT (python3-libnvinfer) and OpenCV "
                f"bindings exist for that Python only: use /usr/bin/python3 ({expected}) in a venv made with "
                "--system-site-packages")
    elif expected:
        note = f"Python {expected} is the Python of JetPack {family['jetpack']}"
    return {"version": version, "executable": sys.executable, "venv": in_venv,
            "system_site_packages": system_site, "expected": expected, "note": note}


def _jetson_section(root: Path) -> Dict[str, Any]:
    model = environment.jetson_model(root)
    l4t = l4t_release(root)
    family = jetpack_family(l4t)
    jetpack, source = jetpack_release(l4t) if (model or l4t) else (None, None)
    note = None
    if model and not l4t:
        note = "no /etc/nv_tegra_release: cannot tell the L4T release"
    return {"model": model, "l4t": l4t, "jetpack": jetpack, "jetpack_source": source, "ships": family, "note": note}


def _tensorrt_section(probe: Dict[str, Any], jetson: bool, python: Dict[str, Any]) -> Dict[str, Any]:
    spec = _find_spec("tensorrt")
    location = probe.get("trt_location") or _spec_location(spec)
    version = probe.get("trt_version")
    if version is None and spec is not None:
        found = _dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-bindings",
                              "tensorrt-cu12-bindings")
        version = found[1] if found else None
    section: Dict[str, Any] = {
        "found": spec is not None, "version": version, "location": location, "source": install_source(location),
        "usable": bool(probe.get("trt_usable")), "reason": None, "dla_cores": probe.get("dla_cores"),
        "fast_fp16": probe.get("platform_has_fast_fp16"), "fast_int8": probe.get("platform_has_fast_int8"),
    }
    if spec is None:
        if jetson and python["venv"] and python["system_site_packages"] is False:
            section["reason"] = ("not visible: this venv was made without --system-site-packages, so JetPack's "
                                 "TensorRT (python3-libnvinfer) is hidden; recreate it with that flag")
        elif jetson:
            section["reason"] = ("not installed for this Python: JetPack's TensorRT bindings are the apt package "
                                 "python3-libnvinfer (sudo apt install python3-libnvinfer)")
        else:
            section["reason"] = f"not installed (`import tensorrt` finds nothing in {sys.executable})"
    elif "probe_error" in probe:
        section["reason"] = probe["probe_error"]
    elif "fatal" in probe:
        section["reason"] = probe["fatal"]
    elif probe.get("trt_import_error"):
        section["reason"] = f"`import tensorrt` fails: {probe['trt_import_error']}"
    elif not section["usable"]:
        section["reason"] = probe.get("trt_reason") or "cannot build engines here"
    elif probe.get("builder_error"):
        section["reason"] = f"a TensorRT builder could not be created: {probe['builder_error']}"
    return section


def _cuda_section(probe: Dict[str, Any]) -> Dict[str, Any]:
    """What :func:`edgekd.device.cuda.status` said in the probe: the binding in use, versions, the GPU, and the
    real CUDA error when it cannot talk to the driver."""
    section: Dict[str, Any] = {
        "binding": probe.get("cuda_binding") or None,
        "driver": _cuda_version(probe.get("cuda_driver")), "runtime": _cuda_version(probe.get("cuda_runtime")),
        "devices": probe.get("cuda_devices"), "gpu": probe.get("gpu"), "sm": probe.get("sm"),
        "talks_to_driver": probe.get("cuda_ok") if probe.get("cuda_found") else None, "reason": None,
    }
    if not probe:
        section["reason"] = ("no CUDA runtime found (no libcudart for edgekd's CUDA layer); the "
                             "TensorRT runner needs one")
    elif "probe_error" in probe:
        section["reason"] = probe["probe_error"]
    elif probe.get("cuda_error"):
        section["reason"] = probe["cuda_error"]
    elif not probe.get("cuda_ok"):
        section["reason"] = probe.get("cuda_detail") or "CUDA cannot be used here"
    return section


def _opencv_section() -> Dict[str, Any]:
    section: Dict[str, Any] = {"version": None, "location": None, "source": None, "wheel": None, "gstreamer": None,
                               "error": None}
    try:
        import cv2

        from edgekd.device.runtime.sources import has_gstreamer
    except Exception as exc:  # noqa: BLE001 - e.g. a system OpenCV built against NumPy 1.x under NumPy 2
        section["error"] = _error(exc)
        return section
    section["version"] = str(getattr(cv2, "__version__", "unknown"))
    section["location"] = str(getattr(cv2, "__file__", "") or "") or None
    section["source"] = install_source(section["location"]) or "system"
    if section["source"] == "pip":  # which of pip's opencv-python* wheels (none of them has GStreamer)
        wheel = _dist_version(*environment._CV_DISTS)
        section["wheel"] = wheel[0] if wheel else None
    try:
        section["gstreamer"] = bool(has_gstreamer())
    except Exception as exc:  # noqa: BLE001
        section["error"] = _error(exc)
    return section


def _onnxruntime_section() -> Dict[str, Any]:
    try:
        import onnxruntime as ort

        return {"version": str(ort.__version__), "providers": list(ort.get_available_providers()), "error": None}
    except Exception as exc:  # noqa: BLE001
        return {"version": None, "providers": [], "error": _error(exc)}


def _power_section(root: Path, jetson: bool) -> Dict[str, Any]:
    mode, mode_id = environment.power_mode() if jetson else (None, None)
    locked = environment.clocks_locked(root)
    try:
        from edgekd.device.profile.energy import find_rails

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rails = [rail.name for rail in find_rails(root)]
    except Exception:  # noqa: BLE001
        rails = []
    advice = environment.JETSON_CLOCKS_ADVICE if jetson and locked is not True else None
    return {"mode": mode, "mode_id": mode_id, "clocks_locked": locked, "rails": rails, "advice": advice}


def _target_section(model: Optional[str], trt: Dict[str, Any]) -> Dict[str, Any]:
    name, why = suggest_target(model)
    section: Dict[str, Any] = {"name": name, "why": why, "backend": None, "precisions": None, "note": None}
    if name is None:
        return section
    try:
        from edgekd.device.compiler.targets import list_targets, load_target

        if name not in list_targets():
            section["note"] = f"target {name} is not shipped with this edgekd"
            return section
        target = load_target(name)
        section["backend"], section["precisions"] = target.backend, list(target.precisions)
    except Exception as exc:  # noqa: BLE001
        section["note"] = f"cannot read the targets: {_error(exc)}"
        return section
    if section["backend"] == "tensorrt" and not trt["usable"]:
        section["note"] = (f"TensorRT cannot build here yet ({trt['reason']}); until it can, "
                           f"`--target {CPU_TARGET}` builds for ONNX Runtime on the CPU")
    return section


def _problems(report: Dict[str, Any]) -> List[str]:
    """What stands between this machine and a working TensorRT / camera path, each with what to do."""
    problems: List[str] = []
    jetson, trt, cuda, cv = report["jetson"], report["tensorrt"], report["cuda"], report["opencv"]
    ships = jetson["ships"]
    on_jetson = bool(jetson["model"] or jetson["l4t"])
    if on_jetson and ships and _version_tuple(ships["tensorrt"]) and _version_tuple(ships["tensorrt"]) < MIN_TENSORRT:
        oldest = ".".join(map(str, MIN_TENSORRT))
        problems.append(f"JetPack {ships['jetpack']} ships TensorRT {ships['tensorrt']}: edgekd needs TensorRT "
                        f"{oldest} or newer (JetPack 5.1+); use the ONNX Runtime backend (--target x86-cpu) here")
    if on_jetson and not trt["usable"] and trt["reason"]:
        problems.append(f"TensorRT: {trt['reason']}")
    want = _version_tuple(ships["tensorrt"]) if ships else ()
    if trt["version"] and want and _version_tuple(trt["version"])[:len(want)] != want:
        problems.append(f"TensorRT {trt['version']} is imported from {trt['location']}, but JetPack "
                        f"{ships['jetpack']} ships TensorRT {ships['tensorrt']}: a pip-installed tensorrt "
                        "probably shadows JetPack's (pip uninstall tensorrt)")
    elif on_jetson and trt["found"] and trt["source"] == "pip":
        problems.append(f"tensorrt comes from pip ({trt['location']}); on a Jetson use JetPack's "
                        "(python3-libnvinfer): pip uninstall tensorrt")
    if on_jetson and cuda["reason"] and cuda["reason"] not in (trt["reason"] or ""):
        problems.append(f"CUDA: {cuda['reason']}")
    if cv["error"]:
        hint = (" (JetPack's OpenCV is built against NumPy 1.x: pip install 'numpy<2')"
                if "numpy" in cv["error"].lower() or "_ARRAY_API" in cv["error"] else "")
        problems.append(f"OpenCV cannot be imported: {cv['error']}{hint}")
    elif on_jetson and cv["gstreamer"] is False:
        shadow = (f"; pip's {cv['wheel']} shadows JetPack's OpenCV: pip uninstall {cv['wheel']}"
                  if cv["wheel"] else "")
        problems.append(f"this OpenCV has no GStreamer, so `edgekd run --source csi://N` cannot open a CSI "
                        f"camera{shadow}")
    if report["python"]["expected"] and report["python"]["note"] and "ships Python" in report["python"]["note"]:
        problems.append(f"Python {report['python']['version']}: {report['python']['note']}")
    if report["onnxruntime"]["error"]:
        problems.append(f"ONNX Runtime cannot be imported: {report['onnxruntime']['error']}")
    if report["target"]["name"] is None:
        problems.append(report["target"]["why"])
    return problems


def diagnose(root: "str | Path" = "/", *, python: Optional[str] = None,
             probe_timeout: float = PROBE_TIMEOUT_S) -> Dict[str, Any]:
    """Everything ``edgekd doctor`` reports, as a JSON-ready dict. ``root`` is where ``proc/``, ``sys/`` and
    ``etc/`` are read (tests point it at a fake tree); tools (nvpmodel, dpkg-query, apt-cache) come from PATH."""
    root = Path(root)
    jetson = _jetson_section(root)
    on_jetson = bool(jetson["model"] or jetson["l4t"])
    py = _python_section(jetson["ships"])
    probe = probe_gpu(python, probe_timeout) if _wants_probe() else {}
    trt = _tensorrt_section(probe, on_jetson, py)
    try:
        edgekd_version = importlib.metadata.version("edgekd")
    except importlib.metadata.PackageNotFoundError:
        edgekd_version = None
    report: Dict[str, Any] = {
        "schema": SCHEMA,
        "edgekd": edgekd_version,
        "system": {"machine": platform.machine(), "cpu": environment.cpu_model(root), "cores": os.cpu_count() or 1},
        "jetson": jetson,
        "python": py,
        "tensorrt": trt,
        "cuda": _cuda_section(probe),
        "opencv": _opencv_section(),
        "numpy": {"version": (_dist_version("numpy") or (None, None))[1]},
        "onnxruntime": _onnxruntime_section(),
        "power": _power_section(root, on_jetson),
        "target": _target_section(jetson["model"], trt),
    }
    report["problems"] = _problems(report)
    return report


# -- presentation ------------------------------------------------------------------------------------------------
def _first_sentence(text: str) -> str:
    """The table shows a long CUDA error up to its first sentence (the JSON keeps all of it)."""
    head = text.partition(". ")[0].rstrip(".")
    return re.sub(r"\s*\((?:[^()]|\([^()]*\))*\)$", "", head)  # without its "(driver …, runtime …; …)"


def _or(value: Any, default: str = NOT_FOUND) -> str:
    return default if value is None or value == "" or value == [] else str(value)


def report_rows(report: Dict[str, Any]) -> List[Tuple[str, str, str]]:
    """``(check, value, notes)`` rows, the order of the table."""
    j, py, trt, cuda = report["jetson"], report["python"], report["tensorrt"], report["cuda"]
    cv, ort, power, target = report["opencv"], report["onnxruntime"], report["power"], report["target"]
    rows: List[Tuple[str, str, str]] = []
    rows.append(("Jetson", _or(j["model"], "not a Jetson"),
                 j["note"] or ("" if j["model"] else "/proc/device-tree/model names no Jetson")))
    ships = j["ships"]
    rows.append(("JetPack / L4T",
                 f"JetPack {_or(j['jetpack'], '?')} / L4T R{j['l4t']}" if j["l4t"] else _or(j["jetpack"]),
                 (f"from {j['jetpack_source']}; ships TensorRT {ships['tensorrt']}, CUDA {ships['cuda']}, "
                  f"Ubuntu {ships['ubuntu']}, Python {ships['python']}") if ships else
                 ("" if j["l4t"] else "no /etc/nv_tegra_release")))
    venv = ("venv with system site-packages" if py["system_site_packages"] else "venv without system site-packages"
            ) if py["venv"] else "no venv"
    rows.append(("Python", f"{py['version']} ({py['executable']})", "; ".join(x for x in (venv, py["note"]) if x)))
    system = report["system"]
    rows.append(("CPU", f"{system['cpu']} ({system['machine']}, {system['cores']} cores)", ""))
    trt_value = NOT_FOUND
    if trt["found"]:
        trt_value = f"{_or(trt['version'], 'unknown version')} from {_or(trt['location'], '?')}"
        trt_value += f" ({trt['source']})" if trt["source"] else ""
    rows.append(("TensorRT", trt_value, "can build engines here" if trt["usable"] and not trt["reason"]
                 else _or(trt["reason"], "")))
    dla = "" if trt["dla_cores"] is None else str(trt["dla_cores"])
    fast = ", ".join(k for k in ("fp16", "int8") if trt.get(f"fast_{k}"))
    rows.append(("DLA cores", _or(dla, "unknown"), f"fast: {fast}" if fast else
                 ("asked of a TensorRT builder" if dla else "needs a usable TensorRT")))
    binding = cuda["binding"] or NOT_FOUND
    reason = _first_sentence(cuda["reason"]) if cuda["reason"] else ""
    rows.append(("CUDA binding", binding, reason or ("talks to the driver" if cuda["talks_to_driver"] else "")))
    rows.append(("CUDA driver / runtime", f"{_or(cuda['driver'], '?')} / {_or(cuda['runtime'], '?')}"
                 if cuda["driver"] or cuda["runtime"] else "unknown", ""))
    gpu = f"{cuda['gpu']} (SM {cuda['sm']})" if cuda["gpu"] else _or(cuda["gpu"], "none visible")
    rows.append(("GPU", gpu, "" if cuda["devices"] is None else f"{cuda['devices']} CUDA device(s)"))
    cv_value = f"{cv['version']} ({cv['source']}{' ' + cv['wheel'] if cv['wheel'] else ''})" if cv["version"] \
        else NOT_FOUND
    gst = {True: "GStreamer: yes (csi:// works)", False: "GStreamer: no (csi:// needs it)", None: ""}[cv["gstreamer"]]
    rows.append(("OpenCV", cv_value, cv["error"] or gst))
    rows.append(("ONNX Runtime", _or(ort["version"]), ort["error"] or ", ".join(ort["providers"])))
    rows.append(("NumPy", _or(report["numpy"]["version"]), ""))
    mode = (f"{power['mode']}" + (f" (id {power['mode_id']})" if power["mode_id"] is not None else "")
            if power["mode"] else ("unknown (no nvpmodel)" if j["model"] else "not a Jetson"))
    rows.append(("Power mode", mode, ""))
    clocks = {True: "locked", False: "not locked", None: "unknown"}[power["clocks_locked"]]
    rows.append(("Clocks", clocks, _or(power["advice"], "")))
    rows.append(("Power rails", ", ".join(power["rails"]) if power["rails"] else "none",
                 "" if power["rails"] else "energy figures: not available"))
    target_value = target["name"] or "none"
    if target["backend"]:
        target_value += f" ({target['backend']}: {', '.join(target['precisions'] or [])})"
    rows.append(("Target", target_value, "; ".join(x for x in (target["why"], target["note"]) if x)))
    return rows


def doctor_table(report: Dict[str, Any]) -> Any:
    """The report as one rich table (check, value, notes), problems as the caption."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="edgekd doctor", title_justify="left")
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("notes", overflow="fold")
    for check, value, notes in report_rows(report):
        table.add_row(Text(check), Text(value), Text(notes))  # Text: paths and reasons are not rich markup
    if report["problems"]:
        table.caption = Text("problems:\n" + "\n".join(f"- {p}" for p in report["problems"]))
        table.caption_justify = "left"
    else:
        table.caption = "no problems found"
        table.caption_justify = "left"
    return table


__all__ = ["diagnose", "doctor_table", "jetpack_family", "jetpack_release", "parse_nv_tegra_release", "probe_gpu",
           "report_rows", "suggest_target"]

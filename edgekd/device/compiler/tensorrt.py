"""Build TensorRT engines from ONNX graphs, for one device target and precision, with reuse of fresh engines.

Versions: TensorRT 8.5 (JetPack 5.1) to 11.x; anything else is refused in one line naming them
(:func:`check_tensorrt`). ``tests/device/test_tensorrt_api_surface.py`` checks every TensorRT name used here
against NVIDIA's real Python bindings of 8.6 and 10.3.

An engine only runs on the TensorRT version and the GPU (or DLA core) that built it, so every engine is written
with a sidecar ``<engine>.json`` recording what it was built from (ONNX sha256, precision, TensorRT version,
device and its SM, DLA core, workspace, batch range, input shape, builder settings). A later build with the same
inputs reuses it; any difference, a missing sidecar or an engine that no longer matches the sha256 in its sidecar,
means rebuild. A stale engine is never loaded.

Engine cache: every engine built is also kept in a per-user cache (:func:`default_engine_cache`:
``$EDGEKD_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/edgekd/engines``, else ``~/.cache/edgekd/engines``), named by the
sha256 of its sidecar fields (:func:`engine_cache_key`). A rebuild of the same graph for the same device hard-links
(or copies) the cached engine into the new bundle after the same staleness check, and says so. The TensorRT timing
cache lives there too, one per TensorRT version and device (:func:`timing_cache_path`).

Precision (:func:`build_settings`):

* TensorRT 8.5-10.x (weak typing): fp32: no flag. fp16: the FP16 builder flag. int8: the graph is an
  explicit-quantization (Q/DQ) ONNX graph; INT8 and FP16 flags are set and TensorRT takes the scales from the Q/DQ
  nodes, no calibrator. The one exception is the DLA, which takes only implicit quantization on every TensorRT
  that has a calibrator (8.5-10.x): there the float graph is calibrated with ``IInt8EntropyCalibrator2`` fed from
  ``calib_batches`` (see :func:`use_implicit_calibrator`), with a reusable calibration cache.
* TensorRT 11 removed the FP16/INT8 builder flags, the calibrators and ``EXPLICIT_BATCH``; networks are always
  strongly typed. The precision comes from the graph: fp16 from the FP16 ONNX graph edgekd converts, int8 from its
  Q/DQ nodes (layers outside Q/DQ pairs keep the graph's float32), fp32 from the exported graph.

DLA (:func:`dla_problem`): TensorRT 11.0-11.3 has no DLA support, so a DLA build there is refused in one line;
from 11.4 a DLA int8 build takes the Q/DQ graph and is labelled unverified (nothing here has checked it). TensorRT
needs a static shape on the DLA (optimization profile min = opt = max), so DLA engines are built
for batch :data:`DLA_BATCH` (1, the batch ``edgekd run`` feeds and that every caller can use), whatever the
target's batch range. The layers TensorRT cannot place on the DLA core (``IBuilderConfig.can_run_on_DLA``) are
recorded as GPU fallback, and every engine's layers are read back with the engine inspector (profiling verbosity
DETAILED); both go into the sidecar and from there into the manifest (:func:`engine_record`).

``tensorrt`` (and the CUDA bindings needed to feed a calibrator) are imported inside the functions that use them,
never at import time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgekd.core.atomic import atomic_write, atomic_write_json
from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.core.manifest import sha256_file
from edgekd.device import cuda
from edgekd.device.compiler.targets import DeviceTarget
from edgekd.device.options import ENGINE_CACHE_OFF
from edgekd.device.profile.environment import l4t_release

if TYPE_CHECKING:  # annotations only (never evaluated); they also type the API-surface test's checks
    import tensorrt

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


# -- pure helpers ------------------------------------------------------------------------------------------------
def use_implicit_calibrator(trt_major: int, dla: bool) -> bool:
    """True when int8 must be calibrated implicitly: a DLA build on any TensorRT that has calibrators (8.5-10.x).

    The DLA takes only implicit (calibrator) quantization, TensorRT 10 included: NVIDIA/Model-Optimizer pull request
    1661 ("DLA still only supports IQ"; the Q/DQ Translator of NVIDIA/Deep-Learning-Accelerator-SW turns Q/DQ scales
    back into a calibration cache for the DLA) and NVIDIA/TensorRT issue 2222 (DLA: no explicit quantization, only
    ``IInt8EntropyCalibrator2``). TensorRT 11 removed the calibrators. Every other int8 build uses the explicit Q/DQ
    graph and sets no calibrator."""
    return bool(dla) and trt_major < STRONGLY_TYPED_MAJOR


def sanitize_device(name: str) -> str:
    """A device or GPU name as a short file-name-safe token: ``"NVIDIA Jetson Orin Nano Developer Kit\\0"`` →
    ``"jetson-orin-nano-developer-kit"``; ``"NVIDIA GeForce RTX 3090"`` → ``"geforce-rtx-3090"``."""
    text = re.sub(r"[^a-z0-9]+", "-", name.replace("\x00", " ").lower()).strip("-")
    text = re.sub(r"^nvidia-", "", text)
    return text[:48].strip("-") or "unknown"


def engine_name(onnx_sha: str, precision: str, trt_version: str, device: str, *, stem: str = "full") -> str:
    """File name of an engine, in the spirit of jetson-inference's engine cache names, e.g.
    ``full.0123456789ab.int8.trt10.3.0.orin-nano-gpu.engine``. ``device`` is the device token plus the target
    (``-gpu`` or ``-dla0``); every part is sanitised so the name is safe on any file system."""
    sha = re.sub(r"[^0-9a-f]", "", onnx_sha.lower())[:12] or "nohash"
    prec = re.sub(r"[^a-z0-9]", "", precision.lower()) or "unknown"
    match = re.match(r"\d+(?:\.\d+){0,2}", trt_version.strip())  # major.minor.patch of e.g. "10.3.0.26"
    version = match.group(0) if match else "unknown"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "model"
    return f"{stem}.{sha}.{prec}.trt{version}.{sanitize_device(device)}.engine"


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def engine_is_fresh(engine_path: str | Path, meta_expected: dict) -> bool:
    """True only if the engine exists, its sidecar records exactly ``meta_expected``, and (when the sidecar has
    ``engine_sha256``) the engine still matches it. Anything else is stale: rebuild, never load. The sidecar's
    ``info`` (what the build found: GPU fallback, engine layers, origin) is a record, not part of the comparison."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    try:
        if not engine_path.is_file() or engine_path.stat().st_size == 0 or not side.is_file():
            return False
        recorded = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    digest = recorded.pop("engine_sha256", None)
    recorded.pop("info", None)
    if recorded != json.loads(json.dumps(meta_expected)):  # compare as JSON would store it (tuples → lists)
        return False
    return digest is None or digest == sha256_file(engine_path)


def write_engine_sidecar(engine_path: str | Path, meta: dict, info: dict | None = None) -> Path:
    """Write ``<engine>.json``: ``meta`` plus the engine's sha256 and, when given, ``info`` (atomically, after the
    engine itself)."""
    side = sidecar_path(engine_path)
    data: dict[str, Any] = {**meta, "engine_sha256": sha256_file(engine_path)}
    if info is not None:
        data["info"] = info
    atomic_write_json(side, data)
    return side


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``engine_path`` as written by :func:`write_engine_sidecar` ({} when missing or unreadable)."""
    try:
        data = json.loads(sidecar_path(engine_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- supported versions ------------------------------------------------------------------------------------------
#: The oldest TensorRT edgekd supports (JetPack 5.1; the runner needs the name-based tensor API of 8.5) and the
#: newest major (11: strongly typed networks only, see :func:`build_settings`).
MIN_TENSORRT = (8, 5)
MAX_TENSORRT_MAJOR = 11
SUPPORTED_TENSORRT = "8.5 to 11.x (JetPack 5.1: 8.5, JetPack 6.0: 8.6, JetPack 6.1/6.2: 10.3, desktop: 10.x or 11.x)"


def parse_version(version: str) -> tuple[int, int]:
    """``"10.3.0.26"`` → ``(10, 3)``; ``(0, 0)`` when ``version`` does not start with a number."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", str(version))
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)


def tensorrt_version_problem(version: str) -> str | None:
    """None when edgekd supports TensorRT ``version``; else the one-line reason, naming the supported versions."""
    major, minor = parse_version(version)
    if (major, minor) >= MIN_TENSORRT and major <= MAX_TENSORRT_MAJOR:
        return None
    return f"TensorRT {version} is not supported: edgekd builds and runs engines with TensorRT {SUPPORTED_TENSORRT}"


def check_tensorrt(trt: Any) -> int:
    """The major version of the imported ``tensorrt`` module, or :class:`EdgekdError` (one line) when edgekd does not
    support it. Reads nothing but ``trt.__version__``, so it runs before any other TensorRT name is touched."""
    version = str(getattr(trt, "__version__", "unknown"))
    problem = tensorrt_version_problem(version)
    if problem:
        raise EdgekdError(problem)
    return parse_version(version)[0]


#: The first TensorRT major without calibrators and builder precision flags: networks are strongly typed.
STRONGLY_TYPED_MAJOR = 11
#: The TensorRT 11 releases without DLA support, (major, minor) first and last inclusive; 11.4 has it again.
NO_DLA = ((11, 0), (11, 3))


def dla_problem(version: str) -> str | None:
    """None when TensorRT ``version`` can build for a DLA core; else the one-line reason (11.0-11.3 have no DLA)."""
    if NO_DLA[0] <= parse_version(version) <= NO_DLA[1]:
        return (f"TensorRT {version} cannot build for a DLA core (TensorRT {NO_DLA[0][0]}.{NO_DLA[0][1]} to "
                f"{NO_DLA[1][0]}.{NO_DLA[1][1]} have no DLA support): drop --dla-core, or use the TensorRT of JetPack "
                "(8.5 or 10.3)")
    return None


def dla_int8_unverified(version: str, precision: str, dla: bool) -> bool:
    """True for a DLA int8 build with TensorRT 11.4 or newer: Q/DQ int8 on the DLA with no calibrator, a path no
    device has run for edgekd yet (the build says so, and the sidecar records ``"verified": false``)."""
    return bool(dla) and precision == "int8" and parse_version(version)[0] >= STRONGLY_TYPED_MAJOR


# -- what to ask TensorRT for ------------------------------------------------------------------------------------
#: The batch of every DLA engine: the DLA needs min = opt = max, and 1 is the batch every caller can feed.
DLA_BATCH = 1


def profile_batches(target_batch: tuple[int, int, int], *, dla: bool, onnx_batch: int = -1) -> tuple[int, int, int]:
    """The optimization profile's (min, opt, max) batch: the ONNX graph's own batch when it is fixed (> 0), else
    :data:`DLA_BATCH` three times on a DLA core (static shapes only), else the device target's batch range."""
    if onnx_batch > 0:
        return (onnx_batch,) * 3
    if dla:
        return (DLA_BATCH,) * 3
    low, opt, high = (int(b) for b in target_batch)
    return (low, opt, high)


@dataclass(frozen=True)
class BuildSettings:
    """How TensorRT is asked to build one engine, derived from the TensorRT major, precision and device alone (so
    it can be tested without TensorRT and is part of the engine cache key)."""

    typing: str  # "weak": builder flags choose the precisions (8.x-10.x); "strong": the graph's types do (11)
    flags: tuple[str, ...]  # the BuilderFlag names set, in order
    explicit_batch_flag: bool  # create the network with EXPLICIT_BATCH (8.x; 10 ignores it, 11 removed it)
    calibration: str | None  # int8: "explicit" (Q/DQ scales) or "implicit" (entropy calibrator); else None
    batch: tuple[int, int, int]  # the optimization profile's min/opt/max batch


def build_settings(major: int, precision: str, *, dla: bool, batch: tuple[int, int, int]) -> BuildSettings:
    """The :class:`BuildSettings` for TensorRT ``major``, ``precision`` and a DLA or GPU build."""
    strong = major >= STRONGLY_TYPED_MAJOR
    flags = []
    if not strong:
        if precision in ("fp16", "int8"):
            flags.append("FP16")  # int8: layers without Q/DQ scales may still run in fp16
        if precision == "int8":
            flags.append("INT8")
    if dla:
        flags.append("GPU_FALLBACK")
    calibration = None
    if precision == "int8":
        calibration = "implicit" if use_implicit_calibrator(major, dla) else "explicit"
    return BuildSettings(typing="strong" if strong else "weak", flags=tuple(flags), explicit_batch_flag=major < 10,
                         calibration=calibration, batch=tuple(int(b) for b in batch))  # type: ignore[arg-type]


# -- the graph, read with onnx (before TensorRT is touched) -------------------------------------------------------
@dataclass(frozen=True)
class GraphFacts:
    """What the build needs to know about an ONNX graph: its inputs (dims, -1 where symbolic), the float types of
    its weights and casts, and whether it carries Q/DQ nodes."""

    inputs: dict[str, tuple[int, ...]]
    float_types: frozenset[str]
    has_qdq: bool


def graph_facts(onnx_path: str | Path) -> GraphFacts:
    """:class:`GraphFacts` of ``onnx_path`` (external weights are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 -- protobuf raises assorted types on a corrupt file
        raise EdgekdError(f"tensorrt cannot parse {onnx_path}: not a readable ONNX graph "
                          f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in weights:
            continue
        dims = value.type.tensor_type.shape.dim
        inputs[value.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.DOUBLE: "float64"}
    found = {names[t.data_type] for t in graph.initializer if t.data_type in names}
    found |= {names[v.type.tensor_type.elem_type] for v in [*graph.input, *graph.output, *graph.value_info]
              if v.type.tensor_type.elem_type in names}
    has_qdq = False
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            has_qdq = True
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to in names:
                found.add(names[to])
    return GraphFacts(inputs=inputs, float_types=frozenset(found), has_qdq=has_qdq)


def precision_problem(precision: str, settings: BuildSettings, facts: GraphFacts, name: str) -> str | None:
    """Why the graph ``name`` cannot be built as ``precision`` with ``settings`` (None when it can)."""
    if facts.has_qdq and precision != "int8":
        return f"{name} has Q/DQ nodes: build it as int8, or use the float graph for {precision}"
    if settings.calibration == "implicit" and facts.has_qdq:
        return (f"{name} has Q/DQ nodes, but int8 on a DLA core needs the float graph and calibration data "
                "(the DLA takes implicit quantization only)")
    if settings.typing == "strong":  # TensorRT 11: the precision is whatever the graph's types say
        if precision == "int8" and not facts.has_qdq:
            return f"{name} has no Q/DQ nodes; with TensorRT 11 int8 comes from the graph's Q/DQ nodes only"
        if precision == "fp16" and "float16" not in facts.float_types:
            return f"{name} has no float16 tensors; with TensorRT 11 fp16 comes from the FP16 graph edgekd converts"
        if precision == "fp32" and "float16" in facts.float_types:
            return f"{name} has float16 tensors; with TensorRT 11 that builds fp16: use the exported float32 graph"
    return None


# -- engine cache ------------------------------------------------------------------------------------------------
ENGINE_CACHE_ENV = "EDGEKD_ENGINE_CACHE"  # a folder, or off/none/0/"" to disable the cache


def default_engine_cache(environ: Mapping[str, str] | None = None) -> Path | None:
    """The per-user engine cache folder: ``$EDGEKD_ENGINE_CACHE`` (off/none/0/empty: no cache), else
    ``$XDG_CACHE_HOME/edgekd/engines``, else ``~/.cache/edgekd/engines``."""
    env = os.environ if environ is None else environ
    value = env.get(ENGINE_CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ENGINE_CACHE_OFF else Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path("~").expanduser() / ".cache")
    return Path(base) / "edgekd" / "engines"


def engine_cache_key(meta: Mapping[str, Any]) -> str:
    """sha256 of the sidecar fields (canonical JSON): graph, precision, TensorRT version, device and SM, L4T release,
    edgekd version, DLA core, workspace, batch range, input, builder settings. Any difference is another engine."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cached_engine_path(cache_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    return Path(cache_dir) / f"{engine_cache_key(meta)}.engine"


def timing_cache_path(cache_dir: str | Path, trt_version: str, device: str, sm: str = "") -> Path:
    """The timing cache for one TensorRT version and device, inside the engine cache: ``timing/<version>.<device>``.
    TensorRT also checks it (``ignore_mismatch=False``) and starts a new one when it does not fit."""
    version = re.sub(r"[^0-9A-Za-z.]+", "-", str(trt_version)).strip("-.") or "unknown"
    where = sanitize_device(f"{device}-{sm}" if sm else device)
    return Path(cache_dir) / "timing" / f"trt{version}.{where}.cache"


def engine_meta(*, onnx_sha256: str, precision: str, trt_version: str, device: str, sm: str, dla_core: int | None,
                input_name: str, input_shape_chw: Iterable[int], workspace_mib: int, settings: BuildSettings,
                calib_digest: str | None = None, l4t: str | None = None) -> dict[str, Any]:
    """The sidecar fields of an engine: everything it was built from. Equal fields, equal engine: the staleness
    check compares them and the engine cache key hashes them (an implicitly calibrated engine also depends on its
    calibration data, ``calib_digest``). ``l4t`` is the Jetson's L4T release (:func:`l4t_release`; None elsewhere):
    JetPack updates change the DLA compiler and libraries under an unchanged TensorRT version (5.1.x all ship 8.5.2).
    edgekd's own version is part of it too, so a fixed edgekd never reuses an engine an older one built."""
    calibration = settings.calibration
    if calibration == "implicit":
        calibration = f"implicit:{calib_digest}" if calib_digest else "implicit"
    from edgekd import __version__

    return {
        "onnx_sha256": onnx_sha256, "precision": precision, "tensorrt": trt_version, "device": device, "sm": sm,
        "l4t": l4t, "edgekd": __version__,
        "dla_core": dla_core, "input": input_name, "input_shape": [int(d) for d in input_shape_chw],
        "batch": list(settings.batch), "workspace_mib": int(workspace_mib),
        "settings": {"typing": settings.typing, "flags": list(settings.flags), "profiling": "detailed",
                     "calibration": calibration},
    }


def engine_source(bundle_engine: Path, cached_engine: Path | None, meta: dict) -> str:
    """Where this build's engine comes from: ``"bundle"`` (a fresh engine is already there), ``"cache"`` (a fresh
    engine in the engine cache) or ``"build"``. Both reuses pass :func:`engine_is_fresh`; a stale one never does."""
    if engine_is_fresh(bundle_engine, meta):
        return "bundle"
    if cached_engine is not None and engine_is_fresh(cached_engine, meta):
        return "cache"
    return "build"


def calibration_digest(batches: Iterable[np.ndarray]) -> str:
    """sha256 of calibration batches (shape, dtype, bytes): an implicitly calibrated engine depends on its data."""
    h = hashlib.sha256()
    for batch in batches:
        x = np.ascontiguousarray(batch)
        h.update(f"{x.shape}{x.dtype.str}".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def _link_or_copy(src: Path, dest: Path) -> str:
    """Put ``src`` at ``dest`` atomically: a hard link when the file system allows it, else a copy. Returns which."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
            how = "hard-linked"
        except OSError:
            shutil.copyfile(src, tmp)
            how = "copied"
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return how


# -- the engine inspector's layer information -------------------------------------------------------------------
def parse_engine_information(text: str) -> list[dict[str, Any]]:
    """The engine's layers from ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)`` as
    ``[{"name", "type"}]``.

    The format is TensorRT's (developer guide, "Engine Inspector",
    https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/engine-tools.html; NVIDIA's TREx reads
    the same ``{"Layers": [...], "Bindings": [...]}``): with ``ProfilingVerbosity.DETAILED`` each layer is an object
    with ``"Name"`` and ``"LayerType"`` (and parameters edgekd does not keep); with ``LAYER_NAMES_ONLY`` a layer is
    only its name (a string): its type is then None. Anything else is a ``ValueError``.
    """
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise ValueError("engine information has no 'Layers' list")
    layers = []
    for entry in data["Layers"]:
        if isinstance(entry, str):
            layers.append({"name": entry, "type": None})
        elif isinstance(entry, dict) and isinstance(entry.get("Name"), str):
            kind = entry.get("LayerType")
            layers.append({"name": entry["Name"], "type": kind if isinstance(kind, str) else None})
        else:
            raise ValueError(f"engine information has a layer that is neither a name nor an object: {entry!r}")
    return layers


@dataclass(frozen=True)
class EngineBuild:
    """One engine :func:`build_engine` produced or reused, and what the build found out about it."""

    path: Path
    origin: str  # "built", "bundle" (a fresh engine was already in out_dir) or "cache" (from the engine cache)
    device: str  # "gpu" or "dla<N>"
    batch: tuple[int, int, int]  # the optimization profile's min/opt/max batch
    gpu_fallback: tuple[dict[str, Any], ...] | None  # DLA: network layers TensorRT cannot run on the DLA core
    engine_layers: tuple[dict[str, Any], ...] | None  # the engine's layers (engine inspector), None if unread


def engine_record(engine_path: str | Path) -> dict[str, Any]:
    """What the manifest records about a built engine (``build.engines``), from its sidecar: file, device, batch,
    precision, TensorRT version, typing, origin (built here or taken from the engine cache), cache key, the layers
    that fall back to the GPU on a DLA core, and the engine's layers."""
    side = read_sidecar(engine_path)
    info = side.get("info") if isinstance(side.get("info"), dict) else {}
    dla_core = side.get("dla_core")
    return {
        "file": Path(engine_path).name,
        "device": "gpu" if dla_core is None else f"dla{dla_core}",
        "batch": side.get("batch"),
        "precision": side.get("precision"),
        "tensorrt": side.get("tensorrt"),
        "typing": (side.get("settings") or {}).get("typing"),
        "origin": info.get("origin"),
        "cache_key": info.get("cache_key"),
        "gpu_fallback": info.get("gpu_fallback"),
        "engine_layers": info.get("engine_layers"),
        "unverified": info.get("unverified"),
    }


# -- environment -------------------------------------------------------------------------------------------------
def _cuda_runtime() -> cuda.CudaRuntime | None:
    """The CUDA runtime of :mod:`edgekd.device.cuda` (system libcudart, cuda-python or pycuda) when one sees a
    GPU, else None (:func:`edgekd.device.cuda.status` says why)."""
    try:
        return cuda.runtime()
    except cuda.CudaError:
        return None


def _cuda_device_count() -> int | None:
    """GPUs visible through :mod:`edgekd.device.cuda`; 0 when a CUDA runtime loads but fails or sees none (wrong
    driver, no GPU); None when no CUDA runtime is found at all."""
    state = cuda.status()
    return state.devices if state.ok else (0 if state.found else None)


def tensorrt_available() -> tuple[bool, str]:
    """``(True, tensorrt version)`` when engines can be built, verified and run here, else ``(False, reason)``.

    A working CUDA runtime (:func:`edgekd.device.cuda.status`) is required, not only an importable TensorRT: the
    build verifies every engine through it, so without one a build would compile every engine and fail only at the
    verification. The reason carries the real CUDA error and the driver/runtime versions (e.g.
    ``cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version (driver 11.4,
    runtime 12.6; …)``)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        if exc.name == "tensorrt":
            return False, "tensorrt is not installed"
        return False, f"tensorrt cannot be imported: {' '.join(str(exc).split())}"  # e.g. libnvinfer.so.10 missing
    except Exception as exc:  # e.g. the Python package is there but libnvinfer is not
        return False, f"tensorrt cannot be imported: {exc}"
    state = cuda.status()
    if not state.ok:  # no CUDA runtime, or one that fails: engines could be built but never verified or run
        why = state.detail if state.found else f"no CUDA runtime for edgekd's CUDA layer: {state.detail}"
        return False, why
    return True, str(trt.__version__)


def _gpu_name() -> str:
    rt = _cuda_runtime()
    try:
        return rt.device_name(0) if rt is not None else ""
    except cuda.CudaError:
        return ""


def detect_device() -> str:
    """The Jetson model from the device tree (``/proc/device-tree/model``), else the CUDA GPU name; sanitised."""
    try:
        model = DEVICE_TREE_MODEL.read_bytes().decode("utf-8", errors="ignore")
    except OSError:
        model = ""
    if any(word in model.lower() for word in ("jetson", "nvidia")):
        return sanitize_device(model)
    name = _gpu_name() or model
    return sanitize_device(name) if name.strip("\x00 ") else "unknown-gpu"


def gpu_sm() -> str:
    """GPU 0's compute capability as ``"sm87"`` ("" when no CUDA binding can tell): engines and timing caches are
    specific to it, so it is part of the engine cache key."""
    rt = _cuda_runtime()
    try:
        return "sm%d%d" % rt.compute_capability(0) if rt is not None else ""
    except cuda.CudaError:
        return ""


# -- TensorRT objects (built only inside functions, tensorrt imported there) -------------------------------------
def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


_LOGGER: list[Any] = []  # [(the tensorrt module, its logger)]: the process's one TensorRT logger


def tensorrt_logger(trt: Any, log: Callable[[str], Any] | None = None) -> Any:
    """The process's one TensorRT logger, now forwarding warnings and errors to ``log`` (default: stderr), its
    kept errors cleared.

    TensorRT keeps a single logger for every builder, runtime and refitter of a process: one created with another
    logger gets a warning on every run ("The logger passed into createInferRuntime differs from one already
    provided for an existing builder, runtime, or refitter. TensorRT maintains only a single logger pointer at any
    given time", NVIDIA/TensorRT issues 1475 and 1539). So the builder and the runner share this one."""
    if not _LOGGER or _LOGGER[0][0] is not trt:
        _LOGGER[:] = [(trt, _make_logger(trt))]
    logger = _LOGGER[0][1]
    logger.sink = log or _to_stderr
    logger.errors = []
    return logger


def _make_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class _Logger(trt.ILogger):
        """Forwards TensorRT warnings and errors to ``sink`` and keeps the errors for the failure message."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.sink: Callable[[str], Any] = _to_stderr

        def log(self, sev: Any, msg: str) -> None:
            # brackets → parentheses: TensorRT's "[file.cpp::fn::line]" tags would read as markup to rich
            text = " ".join(str(msg).split()).replace("[", "(").replace("]", ")")
            if sev in errors:
                self.errors.append(text)
            if sev in errors or sev == severity.WARNING:
                self.sink(f"tensorrt: {text}")

    return _Logger()


#: Why TensorRT's Builder or Runtime constructor gives nothing back (one line, naming the usual causes).
CANNOT_START = ("TensorRT could not create its {what} ({detail}): usually the GPU is out of memory (close other GPU "
                "programs), or this user or container cannot open the GPU devices (/dev/nvhost-* and /dev/nvmap on "
                "a Jetson, /dev/nvidia* elsewhere: add the user to the video group, or start the container with "
                "--runtime nvidia)")


def create_builder(trt: Any, logger: Any) -> tensorrt.Builder:
    """``trt.Builder(logger)``, or a one-line :class:`EdgekdError` (:data:`CANNOT_START`) when TensorRT cannot start."""
    try:
        builder = trt.Builder(logger)
    except TypeError as exc:  # pybind11: "factory function returned nullptr"
        raise EdgekdError(CANNOT_START.format(what="builder", detail=" ".join(str(exc).split()))) from None
    if builder is None:
        raise EdgekdError(CANNOT_START.format(what="builder", detail="it returned None"))
    return builder


def create_runtime(trt: Any, logger: Any) -> tensorrt.Runtime:
    """``trt.Runtime(logger)``, or a one-line :class:`EdgekdError` (:data:`CANNOT_START`) when TensorRT cannot start.

    Both constructors are pybind11 factories over ``createInferBuilder`` / ``createInferRuntime``; when those return
    nullptr (no GPU memory for TensorRT's context, device nodes the process cannot open) pybind11 raises
    ``TypeError: pybind11::init(): factory function returned nullptr`` (NVIDIA/TensorRT ``python/src/infer/pyCore.cpp``
    and pybind11's ``init.h``)."""
    try:
        runtime = trt.Runtime(logger)
    except TypeError as exc:
        raise EdgekdError(CANNOT_START.format(what="runtime", detail=" ".join(str(exc).split()))) from None
    if runtime is None:
        raise EdgekdError(CANNOT_START.format(what="runtime", detail="it returned None"))
    return runtime


def _make_calibrator(trt: Any, batches: Iterable[np.ndarray], shape: tuple[int, ...], cache: Path | None,
                     log: Callable[[str], Any]) -> Any:
    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds float32 NCHW batches of exactly ``shape`` (the calibration profile); others are skipped."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind trampolines must be initialised explicitly
            self._batches = iter(batches)
            self._cuda: cuda.Stream | None = None  # created with the first batch
            self._ptr = 0
            self.fed = 0

        def get_batch_size(self) -> int:
            return 1  # explicit-batch network: the batch is part of the shape (as Polygraphy does)

        def get_batch(self, names: list[str]) -> list[int] | None:
            for batch in self._batches:
                x = np.ascontiguousarray(batch, dtype=np.float32)
                if x.shape != shape:
                    log(f"calibration: skipping a batch of shape {x.shape} (the calibration profile is {shape})")
                    continue
                if self._cuda is None:
                    self._cuda = cuda.Stream()
                    self._ptr = self._cuda.runtime.malloc(x.nbytes)
                self._cuda.htod(self._ptr, x)
                self._cuda.synchronize()
                self.fed += 1
                return [self._ptr] * len(names)
            return None

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.is_file() and cache.stat().st_size:
                log(f"calibration: using cache {cache}")
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                atomic_write(cache, lambda f: f.write(bytes(data)))

        def close(self) -> None:
            if self._cuda is not None:
                self._cuda.synchronize()
                self._cuda.runtime.free(self._ptr)
                self._cuda.release()
                self._cuda = None

    return _EntropyCalibrator()


def _network_flags(trt: Any, settings: BuildSettings) -> int:
    """``create_network`` flags: EXPLICIT_BATCH on 8.x; 0 from 10 (always explicit batch; 11 removed the flag and is
    always strongly typed, so it needs no STRONGLY_TYPED flag either)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if settings.explicit_batch_flag else 0


def _builder_flag(trt: Any, name: str) -> Any:
    """The ``trt.BuilderFlag`` named ``name`` (spelled out, so the API-surface test sees every flag edgekd sets)."""
    if name == "FP16":
        return trt.BuilderFlag.FP16
    if name == "INT8":
        return trt.BuilderFlag.INT8
    if name == "GPU_FALLBACK":
        return trt.BuilderFlag.GPU_FALLBACK
    raise ValueError(f"edgekd sets no builder flag {name!r}")


def _configure(trt: Any, config: tensorrt.IBuilderConfig, settings: BuildSettings, *, workspace_mib: int,
               dla_core: int | None) -> None:
    """Apply ``settings`` to a builder config: workspace pool, precision flags (weak typing only), profiling
    verbosity DETAILED (for the engine inspector) and the DLA core (with GPU fallback)."""
    if workspace_mib:  # MemoryPoolType exists from TensorRT 8.4; max_workspace_size is gone in 10
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for name in settings.flags:
        config.set_flag(_builder_flag(trt, name))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core


def _parse_onnx(trt: Any, builder: tensorrt.Builder, onnx_path: Path, logger: Any,
                settings: BuildSettings) -> tuple[tensorrt.INetworkDefinition, tensorrt.OnnxParser]:
    network = builder.create_network(_network_flags(trt, settings))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise EdgekdError(f"tensorrt cannot parse {onnx_path}: " + ("; ".join(errors) or "unknown parser error"))
    return network, parser


def _dla_fallback(config: tensorrt.IBuilderConfig, network: tensorrt.INetworkDefinition) -> list[dict[str, Any]]:
    """The network's layers TensorRT reports it cannot run on the configured DLA core: with GPU fallback they run on
    the GPU (TensorRT may move more at build time, e.g. when a DLA subgraph does not compile; this is the floor)."""
    fallback = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not config.can_run_on_DLA(layer):
            fallback.append({"name": str(layer.name), "type": getattr(layer.type, "name", str(layer.type))})
    return fallback


def _engine_layers(trt: Any, serialized: Any, dla_core: int | None, logger: Any,
                   log: Callable[[str], Any]) -> list[dict[str, Any]] | None:
    """The built engine's layers from the engine inspector (None, with a note, when they cannot be read)."""
    try:
        runtime = create_runtime(trt, logger)
        if dla_core is not None:
            runtime.DLA_core = dla_core
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise EdgekdError("the engine did not deserialize")
        inspector = engine.create_engine_inspector()
        return parse_engine_information(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception as exc:  # noqa: BLE001 -- a record only: the engine itself is fine
        log(f"note: could not read the engine's layers ({' '.join(str(exc).split()) or type(exc).__name__})")
        return None


# -- the build ---------------------------------------------------------------------------------------------------
def _resolve_engine_cache(engine_cache: str | Path | bool | None) -> Path | None:
    if engine_cache is True:
        return default_engine_cache()
    if engine_cache is None or engine_cache is False:
        return None
    return Path(engine_cache).expanduser()


def build_engine(onnx_path: str | Path, out_dir: str | Path, *, precision: str, target: DeviceTarget,
                 input_name: str, input_shape_chw: tuple[int, ...], dla_core: int | None = None,
                 timing_cache: str | Path | None = None, calib_batches: Iterable[np.ndarray] | None = None,
                 calib_cache: str | Path | None = None, calib_digest: str | None = None,
                 engine_cache: str | Path | bool | None = True, log: Callable[[str], Any] = print) -> EngineBuild:
    """Build (or reuse) the engine of ``onnx_path`` in ``out_dir`` for the device ``target`` and ``precision``.

    ``input_shape_chw`` is the input's shape without the batch; the optimization profile spans
    ``target.batch_min/opt/max`` on the GPU and is batch :data:`DLA_BATCH` on a DLA core (see
    :func:`profile_batches`). ``dla_core`` targets that DLA core (with GPU fallback) on devices whose target has DLA
    cores. ``engine_cache``: True for the per-user cache (:func:`default_engine_cache`), a folder, or None/False for
    none. ``timing_cache`` is loaded when present and saved after the build; by default it lives in the engine
    cache (:func:`timing_cache_path`). ``calib_batches`` (float32 NCHW arrays), ``calib_cache`` and
    ``calib_digest`` (:func:`calibration_digest` of the batches, which keys the engine cache) are used only for
    implicit calibration (int8 on DLA before TensorRT 10, where ``onnx_path`` must be the float graph).
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if target.backend != "tensorrt":
        raise ConfigError(f"target {target.name} uses the {target.backend} backend, not tensorrt")
    target.check_precision(precision)
    if dla_core is not None:
        if target.dla_cores == 0:
            log(f"target {target.name} has no DLA cores: building for the GPU")
            dla_core = None
        elif not 0 <= dla_core < target.dla_cores:
            raise ConfigError(f"target {target.name} has DLA cores 0..{target.dla_cores - 1}, not {dla_core}")
        elif precision == "fp32":
            raise ConfigError("DLA runs fp16 or int8 only; choose --precision fp16 or int8, or build for the GPU")
    if not onnx_path.is_file():
        raise EdgekdError(f"ONNX graph not found: {onnx_path}")
    ok, why = tensorrt_available()
    if not ok:
        raise EdgekdError(f"cannot build a TensorRT engine here: {why}")
    import tensorrt as trt

    major = check_tensorrt(trt)
    version = str(trt.__version__)
    if dla_core is not None:
        problem = dla_problem(version)
        if problem:
            raise EdgekdError(problem)

    facts = graph_facts(onnx_path)
    if input_name not in facts.inputs:
        raise EdgekdError(f"{onnx_path.name} has no input {input_name!r}; its inputs are {sorted(facts.inputs)}")
    if len(facts.inputs) > 1:
        raise EdgekdError(f"{onnx_path.name} has several inputs {sorted(facts.inputs)}; edgekd builds one-input graphs")
    onnx_shape, chw = facts.inputs[input_name], tuple(int(d) for d in input_shape_chw)
    if len(onnx_shape) != len(chw) + 1 or any(d not in (-1, want) for d, want in zip(onnx_shape[1:], chw)):
        want = ", ".join(["N", *map(str, chw)])
        raise EdgekdError(f"{onnx_path.name}: input {input_name} has shape {onnx_shape}, not ({want})")
    on_dla = dla_core is not None
    batches = profile_batches(target.batch, dla=on_dla, onnx_batch=onnx_shape[0])
    if onnx_shape[0] > 0 and batches != target.batch:
        log(f"{onnx_path.name}: input {input_name} has a fixed batch of {onnx_shape[0]}; ignoring the target's batch "
            "range")
    elif on_dla and batches != target.batch:
        log(f"DLA engines take one static shape: building {onnx_path.name} for batch {batches[0]} "
            f"(the target's batch range {target.batch_min}..{target.batch_max} is for the GPU)")
    settings = build_settings(major, precision, dla=on_dla, batch=batches)
    problem = precision_problem(precision, settings, facts, onnx_path.name)
    if problem:
        raise EdgekdError(problem)
    if settings.calibration == "explicit" and not facts.has_qdq:
        log(f"warning: {onnx_path.name} has no Q/DQ nodes; without scales TensorRT keeps layers in fp16/fp32")
    implicit = settings.calibration == "implicit"
    unverified = None
    if dla_int8_unverified(version, precision, on_dla):
        unverified = f"int8 on a DLA core with TensorRT {version} (Q/DQ graph, no calibrator) has not run on a device"
        log(f"warning: {unverified}: check the verification below and report what you see")

    device, sm = detect_device(), gpu_sm()
    where = "gpu" if dla_core is None else f"dla{dla_core}"
    onnx_sha = sha256_file(onnx_path)
    meta = engine_meta(onnx_sha256=onnx_sha, precision=precision, trt_version=version, device=device, sm=sm,
                       dla_core=dla_core, input_name=input_name, input_shape_chw=chw,
                       workspace_mib=target.workspace_mib, settings=settings, calib_digest=calib_digest,
                       l4t=l4t_release())
    engine_path = out_dir / engine_name(onnx_sha, precision, version, f"{device}-{where}", stem=onnx_path.stem)
    cache_dir = _resolve_engine_cache(engine_cache)
    if cache_dir is not None and implicit and not calib_digest:
        log("engine cache: not used for an implicitly calibrated engine without a calibration digest")
        cache_dir = None
    cached = cached_engine_path(cache_dir, meta) if cache_dir is not None else None

    source = engine_source(engine_path, cached, meta)
    if source == "bundle":
        log(f"reusing engine {engine_path}")
        return _reused(engine_path, "bundle", where, batches)
    if source == "cache" and cached is not None:
        try:
            how = _link_or_copy(cached, engine_path)
            info = {**(read_sidecar(cached).get("info") or {}), "origin": "cache"}
            write_engine_sidecar(engine_path, meta, info)
        except OSError as exc:
            log(f"engine cache: cannot take {cached.name} ({exc}); building instead")
        else:
            if engine_is_fresh(engine_path, meta):
                log(f"reusing cached engine {cached} ({how} into {out_dir}): same graph, precision, "
                    f"TensorRT {version}, device and build settings")
                return _reused(engine_path, "cache", where, batches)
    if engine_path.exists():
        log(f"engine {engine_path.name} is stale (its sidecar does not match this build): rebuilding")

    logger = tensorrt_logger(trt, log)
    builder = create_builder(trt, logger)
    network, _parser = _parse_onnx(trt, builder, onnx_path, logger, settings)  # keep the parser alive
    config = builder.create_builder_config()
    if dla_core is not None and dla_core >= builder.num_DLA_cores:
        raise EdgekdError(f"this device has {builder.num_DLA_cores} DLA cores; no DLA core {dla_core}")
    _configure(trt, config, settings, workspace_mib=target.workspace_mib, dla_core=dla_core)

    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, *((b, *chw) for b in batches))
    config.add_optimization_profile(opt_profile)

    fallback = None
    if dla_core is not None:
        fallback = _dla_fallback(config, network)
        names = ", ".join(layer["name"] for layer in fallback[:5]) + (", ..." if len(fallback) > 5 else "")
        log(f"DLA core {dla_core}: {len(fallback)} of {network.num_layers} layers fall back to the GPU"
            + (f" ({names})" if fallback else ""))

    calibrator = None
    if implicit:
        calib_cache = Path(calib_cache) if calib_cache is not None else None
        stream = iter(calib_batches if calib_batches is not None else ())
        first = next(stream, None)
        has_cache = calib_cache is not None and calib_cache.is_file() and calib_cache.stat().st_size > 0
        if first is None and not has_cache:
            raise ConfigError(f"int8 on DLA with TensorRT {version} calibrates implicitly: give calibration data "
                              "(or an existing calibration cache)")
        shape = tuple(np.shape(first)) if first is not None else (batches[1], *chw)
        if shape[1:] != chw:
            raise ConfigError(f"calibration batches have shape {shape}; the graph takes {(-1, *chw)} (-1: any batch)")
        calibrator = _make_calibrator(trt, itertools.chain([first], stream) if first is not None else iter(()),
                                      shape, calib_cache, log)
        config.int8_calibrator = calibrator
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(input_name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)

    cache_file = Path(timing_cache) if timing_cache is not None else (
        timing_cache_path(cache_dir, version, device, sm) if cache_dir is not None else None)
    if cache_file is not None:
        _load_timing_cache(config, cache_file, log)

    place = "GPU" if dla_core is None else f"DLA core {dla_core} (GPU fallback)"
    typing_note = ", strongly typed: precision from the graph" if settings.typing == "strong" else ""
    log(f"building {precision} engine {engine_path.name} on {place} with TensorRT {version} "
        f"(batch {batches[0]}..{batches[2]}, workspace {target.workspace_mib} MiB{typing_note})")
    start = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        detail = "; ".join(logger.errors[-3:]) or "see the TensorRT log above"
        raise EdgekdError(f"TensorRT could not build {onnx_path.name} as {precision}: {detail}")
    if calibrator is not None and calibrator.fed:
        log(f"calibration: fed {calibrator.fed} batches")

    layers = _engine_layers(trt, serialized, dla_core, logger, log)
    info = {"origin": "built", "cache_key": engine_cache_key(meta), "gpu_fallback": fallback,
            "engine_layers": layers, "unverified": unverified}
    atomic_write(engine_path, lambda f: f.write(memoryview(serialized)))
    write_engine_sidecar(engine_path, meta, info)
    if cache_file is not None:
        try:
            atomic_write(cache_file, lambda f: f.write(memoryview(config.get_timing_cache().serialize())))
        except OSError as exc:
            log(f"timing cache: cannot write {cache_file} ({exc})")
    if cached is not None:
        try:
            _link_or_copy(engine_path, cached)
            write_engine_sidecar(cached, meta, info)
        except OSError as exc:
            log(f"engine cache: cannot store {cached} ({exc})")
    log(f"built {engine_path} in {time.perf_counter() - start:.1f} s")
    return EngineBuild(path=engine_path, origin="built", device=where, batch=batches,
                       gpu_fallback=None if fallback is None else tuple(fallback),
                       engine_layers=None if layers is None else tuple(layers))


def _reused(engine_path: Path, origin: str, device: str, batch: tuple[int, int, int]) -> EngineBuild:
    """An :class:`EngineBuild` for a reused engine, its findings read back from its sidecar."""
    info = read_sidecar(engine_path).get("info") or {}
    fallback, layers = info.get("gpu_fallback"), info.get("engine_layers")
    return EngineBuild(path=engine_path, origin=origin, device=device, batch=batch,
                       gpu_fallback=None if fallback is None else tuple(fallback),
                       engine_layers=None if layers is None else tuple(layers))


def _load_timing_cache(config: tensorrt.IBuilderConfig, path: Path, log: Callable[[str], Any]) -> None:
    """Attach the timing cache at ``path`` (or a fresh one when it is missing, corrupt or from elsewhere)."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
        attached = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    except Exception:
        attached = False
    if data and attached:
        log(f"using timing cache {path}")
    if not attached:
        if data:
            log(f"timing cache {path} does not match this TensorRT/GPU: starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


__all__ = ["DLA_BATCH", "ENGINE_CACHE_ENV", "BuildSettings", "EngineBuild", "GraphFacts", "build_engine",
           "build_settings", "calibration_digest", "cached_engine_path", "check_tensorrt", "create_builder",
           "create_runtime", "default_engine_cache", "dla_int8_unverified", "dla_problem", "tensorrt_logger",
           "detect_device", "engine_cache_key", "engine_is_fresh", "engine_meta", "engine_name", "engine_record",
           "engine_source", "gpu_sm", "graph_facts", "parse_engine_information", "precision_problem",
           "profile_batches", "read_sidecar", "sanitize_device", "sidecar_path", "tensorrt_available",
           "tensorrt_version_problem", "timing_cache_path", "use_implicit_calibrator", "write_engine_sidecar"]

"""Build TensorRT engines from ONNX graphs, for one device target and precision, with reuse of fresh engines.

An engine only runs on the TensorRT version and the GPU (or DLA core) that built it, so every engine is written
with a sidecar ``<engine>.json`` recording what it was built from (ONNX sha256, precision, TensorRT version,
device, DLA core, batch range, input shape). A later build with the same inputs reuses it; any difference, a
missing sidecar or an engine that no longer matches the sha256 in its sidecar, means rebuild. A stale engine
is never loaded.

Precision:

* fp32: no flag. fp16: the FP16 builder flag.
* int8: the graph is an explicit-quantization (Q/DQ) ONNX graph; INT8 and FP16 flags are set and TensorRT takes
  the scales from the Q/DQ nodes, no calibrator. The one exception is DLA before TensorRT 10, which cannot use
  Q/DQ graphs: there the float graph is calibrated implicitly with ``IInt8EntropyCalibrator2`` fed from
  ``calib_batches`` (see :func:`use_implicit_calibrator`), with a reusable calibration cache.

``tensorrt`` (and the CUDA bindings needed to feed a calibrator) are imported inside the functions that use them,
never at import time.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.atomic import atomic_write, atomic_write_json
from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.core.manifest import sha256_file
from edgekd.device.compiler.targets import DeviceTarget

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


# -- pure helpers ------------------------------------------------------------------------------------------------
def use_implicit_calibrator(trt_major: int, dla: bool) -> bool:
    """True when int8 must be calibrated implicitly: a DLA build before TensorRT 10, which cannot take Q/DQ
    graphs. Every other int8 build uses the explicit Q/DQ graph and sets no calibrator."""
    return bool(dla) and trt_major < 10


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
    ``engine_sha256``) the engine still matches it. Anything else is stale: rebuild, never load."""
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
    if recorded != json.loads(json.dumps(meta_expected)):  # compare as JSON would store it (tuples → lists)
        return False
    return digest is None or digest == sha256_file(engine_path)


def write_engine_sidecar(engine_path: str | Path, meta: dict) -> Path:
    """Write ``<engine>.json``: ``meta`` plus the engine's sha256 (atomically, after the engine itself)."""
    side = sidecar_path(engine_path)
    atomic_write_json(side, {**meta, "engine_sha256": sha256_file(engine_path)})
    return side


# -- environment -------------------------------------------------------------------------------------------------
def _cuda_runtime() -> Any:
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt
        except ImportError:
            return None
    return rt


def _cuda_device_count() -> int | None:
    """GPUs visible through cuda-python or pycuda; None when neither binding is installed."""
    rt = _cuda_runtime()
    if rt is not None:
        try:
            err, count = rt.cudaGetDeviceCount()
            return int(count) if int(err) == 0 else 0
        except Exception:
            return 0
    try:
        import pycuda.driver as drv
    except ImportError:
        return None
    try:
        drv.init()
        return int(drv.Device.count())
    except Exception:
        return 0


def tensorrt_available() -> tuple[bool, str]:
    """``(True, tensorrt version)`` when engines can be built here, else ``(False, reason)``."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "tensorrt is not installed"
    except Exception as exc:  # e.g. the Python package is there but libnvinfer is not
        return False, f"tensorrt cannot be imported: {exc}"
    count = _cuda_device_count()
    if count == 0:
        return False, "no CUDA GPU visible"
    if count is None:  # no CUDA bindings to ask: a builder can only be created with a usable GPU
        try:
            usable = trt.Builder(trt.Logger(trt.Logger.ERROR)) is not None
        except Exception:
            usable = False
        if not usable:
            return False, "no CUDA GPU visible"
    return True, str(trt.__version__)


def _gpu_name() -> str:
    rt = _cuda_runtime()
    try:
        if rt is not None:
            err, props = rt.cudaGetDeviceProperties(0)
            if int(err) == 0:
                name = props.name
                return (name.split(b"\0")[0].decode(errors="ignore") if isinstance(name, bytes) else str(name))
        else:
            import pycuda.driver as drv

            drv.init()
            return str(drv.Device(0).name())
    except Exception:
        pass
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


# -- TensorRT objects (built only inside functions, tensorrt imported there) -------------------------------------
def _make_logger(trt: Any, log: Callable[[str], Any]) -> Any:
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class _Logger(trt.ILogger):
        """Forwards TensorRT warnings and errors to ``log`` and keeps the errors for the failure message."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, sev: Any, msg: str) -> None:
            # brackets → parentheses: TensorRT's "[file.cpp::fn::line]" tags would read as markup to rich
            text = " ".join(str(msg).split()).replace("[", "(").replace("]", ")")
            if sev in errors:
                self.errors.append(text)
            if sev in errors or sev == severity.WARNING:
                log(f"tensorrt: {text}")

    return _Logger()


def _make_calibrator(trt: Any, batches: Iterable[np.ndarray], shape: tuple[int, ...], cache: Path | None,
                     log: Callable[[str], Any]) -> Any:
    from edgekd.device.runners.tensorrt import CudaMemory

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds float32 NCHW batches of exactly ``shape`` (the calibration profile); others are skipped."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind trampolines must be initialised explicitly
            self._batches = iter(batches)
            self._cuda: CudaMemory | None = None
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
                    self._cuda = CudaMemory()
                    self._ptr = self._cuda.malloc(x.nbytes)
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
                self._cuda.free(self._ptr)
                self._cuda.close()
                self._cuda = None

    return _EntropyCalibrator()


def _parse_onnx(trt: Any, builder: Any, onnx_path: Path, logger: Any) -> tuple[Any, Any]:
    major = int(trt.__version__.split(".")[0])
    # TensorRT 10 networks are always explicit batch (the flag is deprecated and ignored); 8.x needs the flag.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise EdgekdError(f"tensorrt cannot parse {onnx_path}: " + ("; ".join(errors) or "unknown parser error"))
    return network, parser


# -- the build ---------------------------------------------------------------------------------------------------
def build_engine(onnx_path: str | Path, out_dir: str | Path, *, precision: str, target: DeviceTarget,
                 input_name: str, input_shape_chw: tuple[int, ...], dla_core: int | None = None,
                 timing_cache: str | Path | None = None, calib_batches: Iterable[np.ndarray] | None = None,
                 calib_cache: str | Path | None = None, log: Callable[[str], Any] = print) -> Path:
    """Build (or reuse) the engine of ``onnx_path`` for the device ``target`` and ``precision``; return its path.

    ``input_shape_chw`` is the input's shape without the batch; TensorRT's optimization profile spans
    ``target.batch_min/opt/max``. ``dla_core`` targets that DLA core (with GPU fallback) on devices whose target
    has DLA cores. ``timing_cache`` is loaded when present and saved after the build. ``calib_batches`` (float32
    NCHW arrays) and ``calib_cache`` are used only for implicit calibration (int8 on DLA before TensorRT 10,
    where ``onnx_path`` must be the float graph).
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

    version = str(trt.__version__)
    major = int(version.split(".")[0])
    device = detect_device()
    target = f"{device}-gpu" if dla_core is None else f"{device}-dla{dla_core}"
    onnx_sha = sha256_file(onnx_path)
    engine_path = out_dir / engine_name(onnx_sha, precision, version, target, stem=onnx_path.stem)
    meta: dict[str, Any] = {
        "onnx_sha256": onnx_sha, "precision": precision, "tensorrt": version, "device": device,
        "dla_core": dla_core, "input": input_name, "input_shape": list(input_shape_chw),
        "batch": [target.batch_min, target.batch_opt, target.batch_max],
    }
    if engine_is_fresh(engine_path, meta):
        log(f"reusing engine {engine_path}")
        return engine_path
    if engine_path.exists():
        log(f"engine {engine_path.name} is stale (its sidecar does not match this build): rebuilding")

    logger = _make_logger(trt, log)
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, onnx_path, logger)  # keep the parser alive with the network
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    if input_name not in inputs:
        raise EdgekdError(f"{onnx_path.name} has no input {input_name!r}; its inputs are {sorted(inputs)}")
    if len(inputs) > 1:
        raise EdgekdError(f"{onnx_path.name} has several inputs {sorted(inputs)}; edgekd builds one-input graphs")
    onnx_shape, chw = inputs[input_name], tuple(int(d) for d in input_shape_chw)
    if len(onnx_shape) != len(chw) + 1 or any(d not in (-1, want) for d, want in zip(onnx_shape[1:], chw)):
        want = ", ".join(["N", *map(str, chw)])
        raise EdgekdError(f"{onnx_path.name}: input {input_name} has shape {onnx_shape}, not ({want})")
    batches = (target.batch_min, target.batch_opt, target.batch_max)
    if onnx_shape[0] != -1:
        log(f"{onnx_path.name}: input {input_name} has a fixed batch of {onnx_shape[0]}; ignoring the target's batch range")
        batches = (onnx_shape[0],) * 3
    layer_types = {network.get_layer(i).type for i in range(network.num_layers)}
    has_qdq = bool(layer_types & {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE})
    implicit = precision == "int8" and use_implicit_calibrator(major, dla_core is not None)

    config = builder.create_builder_config()
    workspace = target.workspace_mib << 20
    if workspace:
        if hasattr(trt, "MemoryPoolType"):  # TensorRT >= 8.4
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        else:
            config.max_workspace_size = workspace
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without Q/DQ scales may still run in fp16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if implicit and has_qdq:
            raise EdgekdError(f"{onnx_path.name} has Q/DQ nodes, but int8 on DLA with TensorRT {version} needs the "
                              "float graph and calibration data (implicit quantization)")
        if not implicit and not has_qdq:
            log(f"warning: {onnx_path.name} has no Q/DQ nodes; without scales TensorRT keeps layers in fp16/fp32")
    elif has_qdq:
        raise EdgekdError(f"{onnx_path.name} has Q/DQ nodes: build it as int8, or use the float graph for {precision}")

    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, *((b, *chw) for b in batches))
    config.add_optimization_profile(opt_profile)

    if dla_core is not None:
        if dla_core >= builder.num_DLA_cores:
            raise EdgekdError(f"this device has {builder.num_DLA_cores} DLA cores; no DLA core {dla_core}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

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

    cache_file = Path(timing_cache) if timing_cache is not None else None
    if cache_file is not None:
        _load_timing_cache(config, cache_file, log)

    where = "GPU" if dla_core is None else f"DLA core {dla_core} (GPU fallback)"
    log(f"building {precision} engine {engine_path.name} on {where} with TensorRT {version} "
        f"(batch {batches[0]}..{batches[2]}, workspace {target.workspace_mib} MiB)")
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

    atomic_write(engine_path, lambda f: f.write(memoryview(serialized)))
    write_engine_sidecar(engine_path, meta)
    if cache_file is not None:
        atomic_write(cache_file, lambda f: f.write(memoryview(config.get_timing_cache().serialize())))
    log(f"built {engine_path} in {time.perf_counter() - start:.1f} s")
    return engine_path


def _load_timing_cache(config: Any, path: Path, log: Callable[[str], Any]) -> None:
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


__all__ = ["build_engine", "detect_device", "engine_is_fresh", "engine_name", "sanitize_device", "sidecar_path",
           "tensorrt_available", "use_implicit_calibrator", "write_engine_sidecar"]

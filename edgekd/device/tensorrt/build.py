"""Build TensorRT engines from ONNX graphs, for one device target and precision, with reuse of fresh engines.

Versions: TensorRT 8.5 (JetPack 5.1) to 11.x, gated by :func:`~edgekd.device.tensorrt.versions.check_tensorrt`
(applied by :func:`~edgekd.device.tensorrt.loader.import_tensorrt`, which the runner uses too).
``tests/device/test_tensorrt_api_surface.py`` checks every TensorRT name used in this package against NVIDIA's real
Python bindings of 8.6 and 10.3.

:func:`build_engine` runs in short steps: :func:`_plan` (every check and decision made before TensorRT is touched:
the request, the version gate, the DLA rule, the graph's input, the build settings, the engine's name and sidecar
fields), :func:`_reuse` (a fresh engine in the bundle or the engine cache, :mod:`edgekd.device.tensorrt.engine_cache`),
:func:`_compile` (parse, configure, optimization profile, calibrator, timing cache, build) and :func:`_store`
(engine, sidecar, timing cache and engine cache, each written atomically).

DLA: a DLA core on a target or device without one is refused in one line
(:func:`edgekd.device.options.dla_core_problem`, the rule the runner applies too); TensorRT 11.0-11.3 has no DLA
support (:func:`~edgekd.device.tensorrt.versions.dla_problem`); from 11.4 a DLA int8 build takes the Q/DQ graph and
is labelled unverified. TensorRT needs a static shape on the DLA (optimization profile min = opt = max), so DLA
engines are built for batch :data:`~edgekd.device.tensorrt.settings.DLA_BATCH`. The layers TensorRT cannot place on
the DLA core (``IBuilderConfig.can_run_on_DLA``) are recorded as GPU fallback, and every engine's layers are read
back with the engine inspector (profiling verbosity DETAILED); both go into the sidecar and from there into the
manifest (:func:`~edgekd.device.tensorrt.engine_cache.engine_record`).

``tensorrt`` (and the CUDA bindings needed to feed a calibrator) are imported inside the functions that use them,
never at import time.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.core.atomic import atomic_write
from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.core.manifest import sha256_file
from edgekd.device import machine
from edgekd.device.compiler.targets import DeviceTarget
from edgekd.device.options import dla_core_problem
from edgekd.device.tensorrt import loader
from edgekd.device.tensorrt.calibrator import make_calibrator
from edgekd.device.tensorrt.engine_cache import (
    cached_engine_path,
    default_engine_cache,
    engine_cache_key,
    engine_is_fresh,
    engine_meta,
    engine_name,
    engine_source,
    link_or_copy,
    read_sidecar,
    timing_cache_path,
    write_engine_sidecar,
)
from edgekd.device.tensorrt.settings import (
    BuildSettings,
    build_settings,
    graph_facts,
    precision_problem,
    profile_batches,
)
from edgekd.device.tensorrt.versions import check_tensorrt, dla_int8_unverified, dla_problem

if TYPE_CHECKING:  # annotations only (never evaluated); they also type the API-surface test's checks
    import tensorrt


@dataclass(frozen=True)
class EngineBuild:
    """One engine :func:`build_engine` produced or reused, and what the build found out about it."""

    path: Path
    origin: str  # "built", "bundle" (a fresh engine was already in out_dir) or "cache" (from the engine cache)
    device: str  # "gpu" or "dla<N>"
    batch: tuple[int, int, int]  # the optimization profile's min/opt/max batch
    gpu_fallback: tuple[dict[str, Any], ...] | None  # DLA: network layers TensorRT cannot run on the DLA core
    engine_layers: tuple[dict[str, Any], ...] | None  # the engine's layers (engine inspector), None if unread


@dataclass(frozen=True)
class _Plan:
    """Everything :func:`_plan` decided before TensorRT builds anything."""

    onnx_path: Path
    precision: str
    target: DeviceTarget
    input_name: str
    chw: tuple[int, ...]
    dla_core: int | None
    version: str  # TensorRT's __version__
    settings: BuildSettings
    meta: dict[str, Any]  # the sidecar fields (engine_cache.engine_meta)
    engine_path: Path
    cache_dir: Path | None  # the engine cache (None: not used)
    cached: Path | None  # this engine's place in the engine cache
    device: str  # the device token and its SM name the timing cache
    sm: str
    unverified: str | None  # why this engine's path is unverified (None: it is not)

    @property
    def where(self) -> str:
        return "gpu" if self.dla_core is None else f"dla{self.dla_core}"


def build_engine(onnx_path: str | Path, out_dir: str | Path, *, precision: str, target: DeviceTarget,
                 input_name: str, input_shape_chw: tuple[int, ...], dla_core: int | None = None,
                 timing_cache: str | Path | None = None, calib_batches: Iterable[np.ndarray] | None = None,
                 calib_cache: str | Path | None = None, calib_digest: str | None = None,
                 engine_cache: str | Path | bool | None = True, log: Callable[[str], Any] = print) -> EngineBuild:
    """Build (or reuse) the engine of ``onnx_path`` in ``out_dir`` for the device ``target`` and ``precision``.

    ``input_shape_chw`` is the input's shape without the batch; the optimization profile spans
    ``target.batch_min/opt/max`` on the GPU and is batch ``DLA_BATCH`` on a DLA core (see
    :func:`~edgekd.device.tensorrt.settings.profile_batches`). ``dla_core`` targets that DLA core (with GPU
    fallback); a target or device without it is refused. ``engine_cache``: True for the per-user cache
    (:func:`~edgekd.device.tensorrt.engine_cache.default_engine_cache`), a folder, or None/False for none.
    ``timing_cache`` is loaded when present and saved after the build; by default it lives in the engine cache.
    ``calib_batches`` (float32 NCHW arrays), ``calib_cache`` and ``calib_digest`` (the batches'
    ``calibration_digest``, which keys the engine cache) are used only for implicit calibration (int8 on DLA before
    TensorRT 11, where ``onnx_path`` must be the float graph).
    """
    plan = _plan(Path(onnx_path), Path(out_dir), precision=precision, target=target, input_name=input_name,
                 chw=tuple(int(d) for d in input_shape_chw), dla_core=dla_core, calib_digest=calib_digest,
                 engine_cache=engine_cache, log=log)
    reused = _reuse(plan, log)
    if reused is not None:
        return reused
    import tensorrt as trt

    logger = loader.tensorrt_logger(trt, log)
    cache_file = Path(timing_cache) if timing_cache is not None else (
        timing_cache_path(plan.cache_dir, plan.version, plan.device, plan.sm) if plan.cache_dir is not None else None)
    start = time.perf_counter()
    serialized, config, fallback = _compile(trt, plan, logger, calib_batches, calib_cache, cache_file, log)
    layers = _engine_layers(trt, serialized, plan.dla_core, logger, log)
    info = {"origin": "built", "cache_key": engine_cache_key(plan.meta), "gpu_fallback": fallback,
            "engine_layers": layers, "unverified": plan.unverified}
    _store(plan, serialized, config, info, cache_file, log)
    log(f"built {plan.engine_path} in {time.perf_counter() - start:.1f} s")
    return EngineBuild(path=plan.engine_path, origin="built", device=plan.where, batch=plan.settings.batch,
                       gpu_fallback=None if fallback is None else tuple(fallback),
                       engine_layers=None if layers is None else tuple(layers))


# -- before TensorRT is touched ----------------------------------------------------------------------------------
def _check_request(onnx_path: Path, precision: str, target: DeviceTarget, dla_core: int | None) -> None:
    """The target's backend and precision, the DLA rule (one line, also the runner's) and the graph's presence."""
    if target.backend != "tensorrt":
        raise ConfigError(f"target {target.name} uses the {target.backend} backend, not tensorrt")
    target.check_precision(precision)
    if dla_core is not None:
        problem = dla_core_problem(dla_core, target.backend, target.dla_cores, f"target {target.name}")
        if problem:
            raise ConfigError(problem)
        if precision == "fp32":
            raise ConfigError("DLA runs fp16 or int8 only; choose --precision fp16 or int8, or build for the GPU")
    if not onnx_path.is_file():
        raise EdgekdError(f"ONNX graph not found: {onnx_path}")


def _input_batch(onnx_path: Path, facts: Any, input_name: str, chw: tuple[int, ...]) -> int:
    """The graph's one input checked against ``input_name`` and ``chw``; its batch dimension (-1: symbolic)."""
    if input_name not in facts.inputs:
        raise EdgekdError(f"{onnx_path.name} has no input {input_name!r}; its inputs are {sorted(facts.inputs)}")
    if len(facts.inputs) > 1:
        raise EdgekdError(f"{onnx_path.name} has several inputs {sorted(facts.inputs)}; edgekd builds one-input graphs")
    onnx_shape = facts.inputs[input_name]
    if len(onnx_shape) != len(chw) + 1 or any(d not in (-1, want) for d, want in zip(onnx_shape[1:], chw)):
        want = ", ".join(["N", *map(str, chw)])
        raise EdgekdError(f"{onnx_path.name}: input {input_name} has shape {onnx_shape}, not ({want})")
    return int(onnx_shape[0])


def _settings(onnx_path: Path, precision: str, target: DeviceTarget, major: int, version: str, input_name: str,
              chw: tuple[int, ...], on_dla: bool, log: Callable[[str], Any]) -> BuildSettings:
    """The :class:`BuildSettings` of this build, after the graph's input and precision checks, saying what differs
    from what was asked (a fixed batch, the DLA's one batch, an int8 graph without scales)."""
    facts = graph_facts(onnx_path)
    onnx_batch = _input_batch(onnx_path, facts, input_name, chw)
    batches = profile_batches(target.batch, dla=on_dla, onnx_batch=onnx_batch)
    if onnx_batch > 0 and batches != target.batch:
        log(f"{onnx_path.name}: input {input_name} has a fixed batch of {onnx_batch}; ignoring the target's batch "
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
    return settings


def _plan(onnx_path: Path, out_dir: Path, *, precision: str, target: DeviceTarget, input_name: str,
          chw: tuple[int, ...], dla_core: int | None, calib_digest: str | None, engine_cache: str | Path | bool | None,
          log: Callable[[str], Any]) -> _Plan:
    """Every check and decision of a build that needs no TensorRT object (only its version)."""
    _check_request(onnx_path, precision, target, dla_core)
    ok, why = loader.tensorrt_available()
    if not ok:
        raise EdgekdError(f"cannot build a TensorRT engine here: {why}")
    import tensorrt as trt

    major, version = check_tensorrt(trt), str(trt.__version__)
    if dla_core is not None and dla_problem(version):
        raise EdgekdError(str(dla_problem(version)))
    settings = _settings(onnx_path, precision, target, major, version, input_name, chw, dla_core is not None, log)
    unverified = None
    if dla_int8_unverified(version, precision, dla_core is not None):
        unverified = f"int8 on a DLA core with TensorRT {version} (Q/DQ graph, no calibrator) has not run on a device"
        log(f"warning: {unverified}: check the verification below and report what you see")
    device, sm = machine.detect_device(), machine.gpu_sm()
    onnx_sha = sha256_file(onnx_path)
    meta = engine_meta(onnx_sha256=onnx_sha, precision=precision, trt_version=version, device=device, sm=sm,
                       dla_core=dla_core, input_name=input_name, input_shape_chw=chw,
                       workspace_mib=target.workspace_mib, settings=settings, calib_digest=calib_digest,
                       l4t=machine.l4t_release())
    where = "gpu" if dla_core is None else f"dla{dla_core}"
    engine_path = out_dir / engine_name(onnx_sha, precision, version, f"{device}-{where}", stem=onnx_path.stem)
    cache_dir = _resolve_engine_cache(engine_cache)
    if cache_dir is not None and settings.calibration == "implicit" and not calib_digest:
        log("engine cache: not used for an implicitly calibrated engine without a calibration digest")
        cache_dir = None
    cached = cached_engine_path(cache_dir, meta) if cache_dir is not None else None
    return _Plan(onnx_path=onnx_path, precision=precision, target=target, input_name=input_name, chw=chw,
                 dla_core=dla_core, version=version, settings=settings, meta=meta, engine_path=engine_path,
                 cache_dir=cache_dir, cached=cached, device=device, sm=sm, unverified=unverified)


def _resolve_engine_cache(engine_cache: str | Path | bool | None) -> Path | None:
    if engine_cache is True:
        return default_engine_cache()
    if engine_cache is None or engine_cache is False:
        return None
    return Path(engine_cache).expanduser()


# -- reuse -------------------------------------------------------------------------------------------------------
def _reuse(plan: _Plan, log: Callable[[str], Any]) -> EngineBuild | None:
    """The fresh engine already in the bundle, or the engine cache's (linked or copied in and checked again); None
    when the engine must be built."""
    engine_path, cached, meta = plan.engine_path, plan.cached, plan.meta
    source = engine_source(engine_path, cached, meta)
    if source == "bundle":
        log(f"reusing engine {engine_path}")
        return _reused(engine_path, "bundle", plan.where, plan.settings.batch)
    if source == "cache" and cached is not None:
        try:
            how = link_or_copy(cached, engine_path)
            info = {**(read_sidecar(cached).get("info") or {}), "origin": "cache"}
            write_engine_sidecar(engine_path, meta, info)
        except OSError as exc:
            log(f"engine cache: cannot take {cached.name} ({exc}); building instead")
        else:
            if engine_is_fresh(engine_path, meta):
                log(f"reusing cached engine {cached} ({how} into {engine_path.parent}): same graph, precision, "
                    f"TensorRT {plan.version}, device and build settings")
                return _reused(engine_path, "cache", plan.where, plan.settings.batch)
    if engine_path.exists():
        log(f"engine {engine_path.name} is stale (its sidecar does not match this build): rebuilding")
    return None


def _reused(engine_path: Path, origin: str, device: str, batch: tuple[int, int, int]) -> EngineBuild:
    """An :class:`EngineBuild` for a reused engine, its findings read back from its sidecar."""
    info = read_sidecar(engine_path).get("info") or {}
    fallback, layers = info.get("gpu_fallback"), info.get("engine_layers")
    return EngineBuild(path=engine_path, origin=origin, device=device, batch=batch,
                       gpu_fallback=None if fallback is None else tuple(fallback),
                       engine_layers=None if layers is None else tuple(layers))


# -- the build ---------------------------------------------------------------------------------------------------
def _compile(trt: Any, plan: _Plan, logger: Any, calib_batches: Iterable[np.ndarray] | None,
             calib_cache: str | Path | None, cache_file: Path | None,
             log: Callable[[str], Any]) -> tuple[Any, Any, list[dict[str, Any]] | None]:
    """Parse the graph, configure the builder and build: ``(serialized engine, builder config, GPU-fallback
    layers on a DLA core or None)``."""
    builder: tensorrt.Builder = loader.create_builder(trt, logger)
    network, _parser = _parse_onnx(trt, builder, plan.onnx_path, logger, plan.settings)  # keep the parser alive
    config = builder.create_builder_config()
    if plan.dla_core is not None:
        problem = dla_core_problem(plan.dla_core, "tensorrt", int(builder.num_DLA_cores), "this device")
        if problem:
            raise EdgekdError(problem)
    _configure(trt, config, plan.settings, workspace_mib=plan.target.workspace_mib, dla_core=plan.dla_core)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(plan.input_name, *((b, *plan.chw) for b in plan.settings.batch))
    config.add_optimization_profile(opt_profile)
    fallback = None
    if plan.dla_core is not None:
        fallback = _dla_fallback(config, network)
        _log_fallback(plan.dla_core, fallback, network.num_layers, log)
    calibrator = None
    if plan.settings.calibration == "implicit":
        calibrator = _attach_calibrator(trt, builder, config, plan, calib_batches, calib_cache, log)
    if cache_file is not None:
        _load_timing_cache(config, cache_file, log)
    place = "GPU" if plan.dla_core is None else f"DLA core {plan.dla_core} (GPU fallback)"
    typing_note = ", strongly typed: precision from the graph" if plan.settings.typing == "strong" else ""
    batch = plan.settings.batch
    log(f"building {plan.precision} engine {plan.engine_path.name} on {place} with TensorRT {plan.version} "
        f"(batch {batch[0]}..{batch[2]}, workspace {plan.target.workspace_mib} MiB{typing_note})")
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        detail = "; ".join(logger.errors[-3:]) or "see the TensorRT log above"
        raise EdgekdError(f"TensorRT could not build {plan.onnx_path.name} as {plan.precision}: {detail}")
    if calibrator is not None and calibrator.fed:
        log(f"calibration: fed {calibrator.fed} batches")
    return serialized, config, fallback


def _log_fallback(dla_core: int, fallback: list[dict[str, Any]], layers: int, log: Callable[[str], Any]) -> None:
    names = ", ".join(layer["name"] for layer in fallback[:5]) + (", ..." if len(fallback) > 5 else "")
    log(f"DLA core {dla_core}: {len(fallback)} of {layers} layers fall back to the GPU"
        + (f" ({names})" if fallback else ""))


def _attach_calibrator(trt: Any, builder: tensorrt.Builder, config: tensorrt.IBuilderConfig, plan: _Plan,
                       calib_batches: Iterable[np.ndarray] | None, calib_cache: str | Path | None,
                       log: Callable[[str], Any]) -> Any:
    """The entropy calibrator of an implicitly calibrated build, set on ``config`` with its calibration profile
    (the first batch's shape, or the profile's opt batch when only a calibration cache is given)."""
    cache = Path(calib_cache) if calib_cache is not None else None
    stream = iter(calib_batches if calib_batches is not None else ())
    first = next(stream, None)
    has_cache = cache is not None and cache.is_file() and cache.stat().st_size > 0
    if first is None and not has_cache:
        raise ConfigError(f"int8 on DLA with TensorRT {plan.version} calibrates implicitly: give calibration data "
                          "(or an existing calibration cache)")
    shape = tuple(np.shape(first)) if first is not None else (plan.settings.batch[1], *plan.chw)
    if shape[1:] != plan.chw:
        raise ConfigError(f"calibration batches have shape {shape}; the graph takes {(-1, *plan.chw)} (-1: any batch)")
    calibrator = make_calibrator(trt, itertools.chain([first], stream) if first is not None else iter(()),
                                 shape, cache, log)
    config.int8_calibrator = calibrator
    calib_profile = builder.create_optimization_profile()
    calib_profile.set_shape(plan.input_name, shape, shape, shape)
    config.set_calibration_profile(calib_profile)
    return calibrator


def _store(plan: _Plan, serialized: Any, config: tensorrt.IBuilderConfig, info: dict[str, Any],
           cache_file: Path | None, log: Callable[[str], Any]) -> None:
    """Write the engine and its sidecar, then the timing cache and the engine cache's copy (those two are only
    caches: failing to write them is a note, not an error)."""
    atomic_write(plan.engine_path, lambda f: f.write(memoryview(serialized)))
    write_engine_sidecar(plan.engine_path, plan.meta, info)
    if cache_file is not None:
        try:
            atomic_write(cache_file, lambda f: f.write(memoryview(config.get_timing_cache().serialize())))
        except OSError as exc:
            log(f"timing cache: cannot write {cache_file} ({exc})")
    if plan.cached is not None:
        try:
            link_or_copy(plan.engine_path, plan.cached)
            write_engine_sidecar(plan.cached, plan.meta, info)
        except OSError as exc:
            log(f"engine cache: cannot store {plan.cached} ({exc})")


# -- TensorRT calls -------------------------------------------------------------------------------------------------
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


def _engine_layers(trt: Any, serialized: Any, dla_core: int | None, logger: Any,
                   log: Callable[[str], Any]) -> list[dict[str, Any]] | None:
    """The built engine's layers from the engine inspector (None, with a note, when they cannot be read)."""
    try:
        runtime: tensorrt.Runtime = loader.create_runtime(trt, logger)
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


__all__ = ["EngineBuild", "build_engine", "parse_engine_information"]

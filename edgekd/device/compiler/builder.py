"""Build: an exported bundle → a built bundle for one precision and backend.

Steps (all inside a temporary directory that replaces ``--out`` only when everything succeeded):

1. resolve the device target and check the precision *before* any work;
2. produce the graphs: fp32 as exported; fp16 converted with float32 IO; int8 as explicit quantization — ranges
   calibrated once (cached), full graph on images, stage graphs on the activations the FP32 stages produce —
   then the Q/DQ form of the target backend (uint8 activations for ONNX Runtime, symmetric int8 for TensorRT);
3. for TensorRT, compile engines from those graphs;
4. verify the built full graph against the FP32 reference on the validation sample (fail above ``max_drop``);
5. early-exit thresholds on the built segment chain's probabilities of the validation sample, against the built full
   graph's best full answer on the same images (:func:`edgekd.core.certify.reference_predictions`): certified to
   lose at most ``target_drop`` points with probability ``confidence`` (:func:`edgekd.core.certify.certify_thresholds`),
   or with ``fit="point"`` the old minimum-cost point estimate (not certified); the whole record goes under the
   manifest's ``build.thresholds`` and its one-line summary is printed;
6. write the manifest.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from edgekd import __version__
from edgekd.core.atomic import atomic_directory
from edgekd.core.certify import Certificate, early_exit_thresholds, manifest_record
from edgekd.core.errors import EdgekdError
from edgekd.core.labelled import load_images
from edgekd.core.manifest import (
    Manifest,
    file_entry,
    full_output_names,
    load_manifest,
    segment_input_name,
    segment_output_names,
    sha256_file,
    write_manifest,
)
from edgekd.core.spec import InputSpec
from edgekd.device.chain import Chain, full_probs
from edgekd.device.compiler.verify import compare, print_verification
from edgekd.device.options import (
    BACKEND_AUTO,
    CACHE_DIR,
    CALIB_AUTO,
    CALIB_CHOICES,
    CALIB_METHODS,
    CONFIDENCE,
    COSTS,
    FITS,
    MAX_CALIB_IMAGES,
    MAX_DROP,
    TARGET_DROP,
    threshold_option_problem,
)

if TYPE_CHECKING:
    from edgekd.device.compiler.targets import DeviceTarget



class BuildError(EdgekdError):
    """A build cannot start or did not pass verification."""


@dataclass(frozen=True)
class BuildPlan:
    """What the user asked for, checked: the exported bundle, the device target and every build option."""

    source: Manifest  # the exported bundle
    target: DeviceTarget
    precision: str
    calib_method: str
    max_drop: float
    target_drop: float  # ε, points of top-1 early exit may lose against the full answer
    cost: str  # what thresholds minimise: "macs" or "latency"
    confidence: float  # 1 − δ: the probability that certified thresholds keep ``target_drop``
    fit: str  # "certified" or "point" (the old minimum-cost point estimate, not certified)
    force: bool
    cache_dir: str | None
    dla_core: int | None

    @property
    def ort_options(self) -> dict[str, Any]:
        """Options of the ONNX Runtime runners (reference, verification of graphs)."""
        return {"threads": self.target.threads} if self.target.threads else {}


# ------------------------------------------------------------------------------------------------ options


def resolve_target(name: str | None, backend: str):
    """The device target: named/file, or the default for the backend (auto: TensorRT if it can run here)."""
    from edgekd.device.compiler.targets import load_target

    if name:
        target = load_target(name)
        if backend not in (BACKEND_AUTO, target.backend):
            raise BuildError(f"target {target.name} is for {target.backend}, not {backend}")
        return target
    if backend == BACKEND_AUTO:
        from edgekd.device.compiler.tensorrt import tensorrt_available

        backend = "tensorrt" if tensorrt_available()[0] else "onnxruntime"
    if backend == "tensorrt":
        raise BuildError("the tensorrt backend needs a device target: pass --target (e.g. orin-nano, xavier-nx)")
    if backend != "onnxruntime":
        raise BuildError(f"unknown backend {backend!r}; choose auto, onnxruntime or tensorrt")
    return load_target("x86-cpu")


def default_out(bundle: Path, precision: str, backend: str) -> Path:
    suffix = precision if backend == "onnxruntime" else f"{precision}-trt"
    return bundle.parent / f"{bundle.name}-{suffix}"


# --------------------------------------------------------------------------------------------- graph steps


def _source_paths(src: Manifest) -> dict[str, Path]:
    paths = {"full": src.full_graph()}
    paths.update({f"segment{i}": src.segment_graph(i) for i in range(src.num_exits)})
    return paths


def _calibration_feeds(src: Manifest, calib_images: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """Feeds for every graph: images for the full graph and stage 0, FP32 stage activations for later stages."""
    feeds: dict[str, list[dict[str, np.ndarray]]] = {f"segment{i}": [] for i in range(src.num_exits)}
    with Chain.from_manifest(src) as chain:  # an exported bundle: plain ONNX on ONNX Runtime
        chain.probs(calib_images, src.spec, batch=32,
                    on_segment_input=lambda i, feed: feeds[f"segment{i}"].append(dict(feed)))
    feeds["full"] = feeds["segment0"]
    return feeds


def _int8_graphs(src: Manifest, work: Path, calib_images: np.ndarray, method: str, qdq_backend: str,
                 cache_dir: str | None, log) -> tuple[dict[str, Path], dict[str, Any]]:
    from edgekd.device.compiler.calibration import CalibrationCache, calibrate
    from edgekd.device.compiler.quantize import preprocess_for_quantization, quantize_qdq

    cache = CalibrationCache(cache_dir) if cache_dir else None
    feeds = _calibration_feeds(src, calib_images)
    out, reused = {}, {}
    for key, path in _source_paths(src).items():
        pre = preprocess_for_quantization(path, work / f"_pre_{key}.onnx")
        ranges, reused[key] = calibrate(pre, feeds[key], method, cache)
        out[key] = quantize_qdq(pre, work / f"{key}.int8.onnx", ranges, backend=qdq_backend)
        pre.unlink(missing_ok=True)
    n_reused = sum(reused.values())
    log(f"calibration ({method}): {n_reused}/{len(reused)} graph(s) reused from the cache" if cache else
        f"calibration ({method}): computed, cache disabled")
    return out, {"method": method, "reused": reused, "images": int(len(calib_images)), "backend": qdq_backend}


def _fp_graphs(src: Manifest, work: Path, precision: str) -> dict[str, Path]:
    out = {}
    for key, path in _source_paths(src).items():
        dest = work / f"{key}.{precision}.onnx"
        if precision == "fp16":
            from edgekd.device.compiler.fp16 import convert_fp16

            convert_fp16(path, dest, keep_io_types=True)
        else:
            shutil.copyfile(path, dest)
        out[key] = dest
    return out


def _segment_latency_ms(chain: Chain, spec: InputSpec, runs: int = 30) -> list[float]:
    """Median batch-1 latency of each segment graph of the open ``chain``, fetching what the chain fetches (a quick
    cost estimate; `edgekd profile` measures properly). One chained run on a zero image warms up and gives every
    segment its input."""
    feeds: list[dict[str, np.ndarray]] = []
    chain.run(np.zeros((1, *spec.shape), dtype=np.float32), on_segment_input=lambda i, feed: feeds.append(feed))
    medians = []
    for i, feed in enumerate(feeds):
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            chain.segment(i, feed)
            samples.append((time.perf_counter() - t0) * 1e3)
        medians.append(statistics.median(samples))
    return medians


# ----------------------------------------------------------------------------------------------- the build


def build_bundle(bundle: str | Path, *, precision: str | None = None, backend: str = BACKEND_AUTO,
                 target: str | None = None, out: str | Path | None = None, calib_data: str | Path | None = None,
                 calib_method: str = CALIB_METHODS[0], max_drop: float = MAX_DROP, target_drop: float = TARGET_DROP,
                 cost: str = COSTS[0], confidence: float = CONFIDENCE, fit: str = FITS[0], force: bool = False,
                 cache_dir: str | None = CACHE_DIR, dla_core: int | None = None,
                 console: Console | None = None) -> Manifest:
    """Compile ``bundle`` and write the built bundle to ``out``; see the module docstring for the steps."""
    console = console or Console()
    bundle = Path(bundle)
    src = load_manifest(bundle)
    if src.backend != "onnx":
        raise BuildError(f"{bundle} is already built ({src.backend}, {src.precision}); build from the exported bundle")
    target = resolve_target(target, backend)
    precision = precision or target.default_precision
    target.check_precision(precision)
    if calib_method not in CALIB_CHOICES:
        raise BuildError(f"--calib-method must be one of {', '.join(CALIB_CHOICES)}")
    if cost not in COSTS:
        raise BuildError("--cost must be macs or latency")
    problem = threshold_option_problem(fit, target_drop, confidence)
    if problem:
        raise BuildError(problem)
    if target.backend == "tensorrt":
        from edgekd.device.compiler.tensorrt import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise BuildError(f"cannot build for {target.name} with TensorRT here: {why}")
        from edgekd.device.compiler.trt_compat import check_bundle_graphs

        misread = check_bundle_graphs(_source_paths(src).values(), why)  # e.g. opset 18 Reduce axes on TensorRT 8.x
        if misread:
            raise BuildError(misread)
    out = Path(out) if out else default_out(bundle, precision, target.backend)
    if out.exists() and not force:
        raise BuildError(f"{out} already exists; pass --force to replace it (or --out elsewhere)")
    if precision == "fp16" and target.backend == "onnxruntime":
        console.print("[yellow]note:[/] FP16 runs slower than FP32 on a CPU with ONNX Runtime (measured); "
                      "building it because you asked")
    with np.load(src.file("val_sample")) as f:
        val_images, labels = f["images"], f["labels"]
    calib_images = (load_images(calib_data, src.spec, max_images=MAX_CALIB_IMAGES, option="--calib-data") if calib_data
                    else _bundle_calib(src))
    plan = BuildPlan(source=src, target=target, precision=precision, calib_method=calib_method, max_drop=max_drop,
                     target_drop=target_drop, cost=cost, confidence=confidence, fit=fit, force=force,
                     cache_dir=cache_dir, dla_core=dla_core)
    with atomic_directory(out, overwrite=force) as tmp:
        manifest = _build_into(tmp, plan, calib_images, val_images, labels, console)
    console.print(f"built {out} ({target.backend}, {precision}); thresholds {manifest['thresholds']}")
    return load_manifest(out)


def _bundle_calib(src: Manifest) -> np.ndarray:
    with np.load(src.file("calib")) as f:
        return f["images"]


def _build_into(tmp: Path, plan: BuildPlan, calib_images: np.ndarray, val_images: np.ndarray, labels: np.ndarray,
                console: Console) -> dict[str, Any]:
    """Steps 2-6 of the module docstring into ``tmp``; returns the manifest data written there."""
    def log(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    src, spec, n = plan.source, plan.source.spec, plan.source.num_exits
    reference = full_probs("onnxruntime", src.full_graph(), val_images, spec, n, **plan.ort_options)  # (E, N, K)
    graphs, calibration = _graphs_for(tmp, plan, calib_images, val_images, labels, reference, log)
    run_backend, run_paths, engines = "onnxruntime", graphs, {}
    if plan.target.backend == "tensorrt":
        engines = _engines_for(tmp, plan, graphs, calib_images, log)
        run_backend, run_paths = "tensorrt", engines
    run_opts = plan.ort_options if run_backend == "onnxruntime" else {}
    built = full_probs(run_backend, run_paths["full"], val_images, spec, n, **run_opts)  # (E, N, K)
    report = compare(built, reference, labels, src.vote_rule, src.vote_weights)
    print_verification(console, report, plan.precision, plan.max_drop)
    if report["max_drop"] > plan.max_drop and not plan.force:
        raise BuildError(f"{plan.precision} loses {report['max_drop']:.2f} points of top-1 (> --max-drop "
                         f"{plan.max_drop}); nothing was written (use --force to keep it anyway, or try "
                         "--calib-method auto)")
    with Chain(run_backend, [run_paths[f"segment{i}"] for i in range(n)], **run_opts) as segments:
        p_chain = segments.probs(val_images, spec)  # (E, N, K)
        latency = _segment_latency_ms(segments, spec)
    costs = np.cumsum(latency) if plan.cost == "latency" else np.array([e["macs"] for e in src.exits], dtype=float)
    certificate = early_exit_thresholds(p_chain, built, labels, costs, epsilon=plan.target_drop,
                                        delta=round(1.0 - plan.confidence, 12), fit=plan.fit,
                                        vote_weights=src.vote_weights)
    log(f"thresholds: {certificate.summary()}")
    for name in ("val_sample", "calib"):
        shutil.copyfile(src.file(name), tmp / f"{name}.npz")
    data = _manifest(plan, tmp, Built(graphs, engines, calibration, report, certificate, latency))
    write_manifest(tmp, data)
    return data


def _graphs_for(tmp: Path, plan: BuildPlan, calib_images: np.ndarray, val_images: np.ndarray, labels: np.ndarray,
                reference: np.ndarray, log) -> tuple[dict[str, Path], dict[str, Any] | None]:
    src = plan.source
    if plan.precision != "int8":
        return _fp_graphs(src, tmp, plan.precision), None
    qdq_backend = "tensorrt" if plan.target.backend == "tensorrt" else "onnxruntime"
    methods = CALIB_METHODS if plan.calib_method == CALIB_AUTO else (plan.calib_method,)
    if len(methods) == 1:
        return _int8_graphs(src, tmp, calib_images, methods[0], qdq_backend, plan.cache_dir, log)
    trials = []
    for method in methods:  # auto: keep the method with the smallest accuracy drop on the validation sample
        work = tmp / f"_auto_{method}"
        work.mkdir()
        graphs, info = _int8_graphs(src, work, calib_images, method, qdq_backend, plan.cache_dir, log)
        probs = full_probs("onnxruntime", graphs["full"], val_images, src.spec, src.num_exits, **plan.ort_options)
        rep = compare(probs, reference, labels, src.vote_rule, src.vote_weights)
        mean_drop = float(np.mean([r["drop"] for r in rep["rows"]]))
        log(f"  {method}: max drop {rep['max_drop']:+.2f}, mean drop {mean_drop:+.2f}")
        trials.append((rep["max_drop"], mean_drop, method, work, graphs, info))
    _, _, method, work, graphs, info = min(trials, key=lambda t: t[:2])
    log(f"calibration auto: kept {method}")
    final = {}
    for key, path in graphs.items():
        final[key] = tmp / path.name
        path.replace(final[key])
    for trial in trials:
        shutil.rmtree(trial[3], ignore_errors=True)
    info = {**info, "auto": {t[2]: {"max_drop": t[0], "mean_drop": t[1]} for t in trials}}
    return final, info


def _engines_for(tmp: Path, plan: BuildPlan, graphs: dict[str, Path], calib_images: np.ndarray,
                 log) -> dict[str, Path]:
    """TensorRT engines for every graph (untested here: needs TensorRT and an NVIDIA GPU).

    Explicit quantization (the Q/DQ graphs) everywhere except TensorRT 8.x on DLA, which only supports implicit
    calibration: there the FP32 graphs are built with the entropy calibrator, fed with the same calibration images
    (and, for stage graphs, the activations the FP32 stages produce). Engines come from (and go to) the per-user
    engine cache, with the timing cache next to them; each engine's sidecar records what the build found (GPU
    fallback on a DLA core, the engine's layers), which :func:`_manifest` copies under ``build.engines``.
    """
    from edgekd.device.compiler.tensorrt import (
        build_engine,
        calibration_digest,
        tensorrt_available,
        tensorrt_version_problem,
        use_implicit_calibrator,
    )

    src, target, precision, dla_core = plan.source, plan.target, plan.precision, plan.dla_core
    version = tensorrt_available()[1]
    problem = tensorrt_version_problem(version)
    if problem:
        raise BuildError(problem)
    on_dla = dla_core is not None and target.dla_cores > 0
    implicit = precision == "int8" and use_implicit_calibrator(int(version.split(".")[0]), on_dla)
    feeds = _calibration_feeds(src, calib_images) if implicit else {}
    sources = _source_paths(src) if implicit else graphs
    engines = {}
    for key, path in sources.items():
        i = None if key == "full" else int(key[len("segment"):])
        input_name = "image" if i is None else segment_input_name(i)
        shape = src.spec.shape if i in (None, 0) else tuple(src.exits[i - 1]["feat_shape"])
        batches = [feed[input_name] for feed in feeds[key]] if implicit else None
        built = build_engine(path, tmp, precision=precision, target=target, input_name=input_name,
                             input_shape_chw=shape, dla_core=dla_core, calib_batches=batches,
                             calib_cache=tmp / f"{key}.calib" if implicit else None,
                             calib_digest=calibration_digest(batches) if batches is not None else None, log=log)
        engines[key] = built.path
    return engines


def _graph_entry(tmp: Path, path: Path, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {**file_entry(tmp, path.name), "inputs": inputs, "outputs": outputs}


@dataclass(frozen=True)
class Built:
    """What the build steps produced, as the manifest records it."""

    graphs: dict[str, Path]  # "full", "segment{i}" → the ONNX graph for the precision
    engines: dict[str, Path]  # the same keys → TensorRT engines ({} for ONNX Runtime); their sidecars say the rest
    calibration: dict[str, Any] | None  # int8 only: method, cache reuse, images, Q/DQ backend
    verification: dict[str, Any]  # :func:`edgekd.device.compiler.verify.compare` against FP32
    certificate: Certificate  # the early-exit thresholds and what backs them (certified or a point estimate)
    segment_latency_ms: list[float]  # quick median batch-1 latency per segment


def _manifest(plan: BuildPlan, tmp: Path, built: Built) -> dict[str, Any]:
    import onnx
    import onnxruntime

    src, n = plan.source, plan.source.num_exits
    graphs, engines, cert = built.graphs, built.engines, built.certificate
    run_paths = engines or graphs
    files = {name: file_entry(tmp, f"{name}.npz") for name in ("val_sample", "calib")}
    if engines:  # keep the ONNX graphs the engines came from
        files.update({f"onnx_{k}": file_entry(tmp, p.name) for k, p in graphs.items()})
    data = {k: v for k, v in src.data.items()}
    data.update({
        "precision": plan.precision,
        "backend": plan.target.backend,
        "graphs": {
            "full": _graph_entry(tmp, run_paths["full"], ["image"], full_output_names(n)),
            "stages": [_graph_entry(tmp, run_paths[f"segment{i}"], [segment_input_name(i)], segment_output_names(i, n))
                       for i in range(n)],
        },
        "files": files,
        "thresholds": cert.thresholds,
        "build": {
            "source": {"name": src.data["name"], "manifest_sha256": sha256_file(src.root / "manifest.json")},
            "target": plan.target.name,
            "calibration": built.calibration,
            "verification": {**built.verification, "max_drop_allowed": plan.max_drop},
            "thresholds": manifest_record(cert, plan.cost, {"source": "val_sample", "n": cert.n}),
            "segment_latency_ms": built.segment_latency_ms,
        },
    })
    if engines:  # per engine: device, batch, origin (built or from the engine cache), DLA GPU fallback, layers
        from edgekd.device.compiler.tensorrt import engine_record

        data["build"]["engines"] = {key: engine_record(tmp / path.name) for key, path in engines.items()}
    data["versions"] = {**src.data["versions"], "build_edgekd": __version__, "build_onnx": onnx.__version__,
                        "build_onnxruntime": onnxruntime.__version__}
    return data

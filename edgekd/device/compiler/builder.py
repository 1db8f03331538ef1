"""Build: an exported bundle → a built bundle for one precision and backend.

Steps (all inside a temporary directory that replaces ``--out`` only when everything succeeded):

1. resolve the device target and check the precision *before* any work;
2. produce the graphs: fp32 as exported; fp16 converted with float32 IO; int8 as explicit quantization — ranges
   calibrated once (cached), full graph on images, segment graphs on the activations the FP32 segments produce —
   then the Q/DQ form of the target backend (uint8 activations for ONNX Runtime, symmetric int8 for TensorRT);
   When INT8 is confidently over ``max_drop`` (below), mixed precision leaves the most sensitive nodes in float
   until it is not (:mod:`edgekd.device.compiler.mixed`; ``--mixed-precision off`` fails instead);
3. for TensorRT, compile engines from those graphs;
4. verify the built full graph against the FP32 reference on the validation sample, as a paired comparison per
   exit and for the vote (:mod:`edgekd.device.compiler.verify`): fail only when a drop is confidently above
   ``max_drop``; when the sample cannot tell, say so and how many images would;
5. early-exit thresholds on the built segment chain's probabilities of the validation sample, against the built full
   graph's best full answer on the same images (:func:`edgekd.core.certify.reference_predictions`): certified to
   lose at most ``target_drop`` points with probability ``confidence`` (:func:`edgekd.core.certify.certify_thresholds`),
   or with ``fit="point"`` the point fit (the minimum-cost thresholds, not certified); the whole record goes under the
   manifest's ``build.thresholds`` and its one-line summary is printed;
6. for ONNX Runtime (FP32 and INT8), the one-call early-exit graph: the built segment graphs joined by ``If`` nodes
   (:mod:`edgekd.device.compiler.early_exit_graph`, ``graphs.early_exit``);
7. write the manifest; then time early exit at the new thresholds against the full graph on this device, one
   frame at a time (:func:`edgekd.device.profile.payoff.measure_payoff`: the one-call graph, the chain, and
   ``--mode full-vote``), print "early exit saves X% of the latency here" or "costs Y% more here; use --mode
   full-vote", and keep the figure, the faster early-exit graph and the device under ``build.early_exit``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from edgekd import __version__
from edgekd.core.destination import is_within
from edgekd.core.certify import Certificate, early_exit_thresholds, manifest_record
from edgekd.core.errors import EdgekdError
from edgekd.core.labelled import load_images
from edgekd.core.manifest import (
    EARLY_EXIT_INPUTS,
    EARLY_EXIT_OUTPUTS,
    MANIFEST_NAME,
    Manifest,
    bundle_directory,
    check_bundle_destination,
    file_entry,
    full_output_names,
    graph_entry,
    load_manifest,
    segment_input_name,
    segment_output_names,
    sha256_file,
    write_manifest,
)
from edgekd.core.manifest_records import BuildRecord, Graphs
from edgekd.core.spec import InputSpec
from edgekd.device.chain import Chain, full_probs
from edgekd.device.compiler.mixed import Quantizable, quantize_excluding
from edgekd.device.compiler.verify import OVER, VERDICTS, Verification, compare, print_verification, verdict_line
from edgekd.device.options import (
    BACKEND_AUTO,
    CALIB_AUTO,
    CALIB_CHOICES,
    CALIB_METHODS,
    CONFIDENCE,
    COSTS,
    FITS,
    MAX_CALIB_IMAGES,
    MAX_DROP,
    MIXED_PRECISION,
    OUT_WORDING,
    TARGET_DROP,
    calibration_cache_dir,
    dla_core_problem,
    engine_cache_choice,
    options_problem,
    threshold_option_problem,
)

if TYPE_CHECKING:
    from edgekd.device.compiler.targets import DeviceTarget



class BuildError(EdgekdError):
    """A build cannot start or did not pass verification."""


@dataclass(frozen=True)
class BuildOptions:
    """Every option of a build as given (``edgekd build``'s flags, :func:`build_bundle`'s keywords), checked once,
    here, on construction: a bad value is a one-line :class:`BuildError` before any work. What needs the device
    target (the precision it supports, the DLA cores it has, TensorRT here) is checked by :func:`plan_build`."""

    precision: str | None = None  # None: the target's default
    backend: str = BACKEND_AUTO
    target: str | None = None  # a device target's name or YAML file; None: the backend's default
    out: str | Path | None = None  # None: next to the bundle (:func:`default_out`)
    calib_data: str | Path | None = None  # --calib-data, when given (else the bundle's calibration images)
    calib_method: str = CALIB_METHODS[0]
    max_drop: float = MAX_DROP
    target_drop: float = TARGET_DROP  # ε, points of top-1 early exit may lose against the full answer
    cost: str = COSTS[0]  # what thresholds minimise: "macs" or "latency"
    confidence: float = CONFIDENCE  # 1 − δ: the probability that certified thresholds keep ``target_drop``
    fit: str = FITS[0]  # "certified" or "point" (the point fit: minimum-cost thresholds, not certified)
    force: bool = False
    #: the calibration cache: True the per-user one, None or an off word none, else that folder
    #: (:func:`edgekd.device.options.calibration_cache_dir`)
    cache_dir: str | Path | bool | None = True
    dla_core: int | None = None
    mixed_precision: str = MIXED_PRECISION[0]  # "auto": the most sensitive nodes stay in float when int8 is over
    engine_cache: str | None = None  # --engine-cache: a folder, or off; None: $EDGEKD_ENGINE_CACHE or the user's

    def __post_init__(self) -> None:
        problem = options_problem(max_drop=self.max_drop, dla_core=self.dla_core)
        if not problem and self.calib_method not in CALIB_CHOICES:
            problem = f"--calib-method must be one of {', '.join(CALIB_CHOICES)}"
        if not problem and self.cost not in COSTS:
            problem = "--cost must be macs or latency"
        if not problem and self.mixed_precision not in MIXED_PRECISION:
            problem = (f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got "
                       f"{self.mixed_precision!r}")
        problem = problem or threshold_option_problem(self.fit, self.target_drop, self.confidence)
        if problem:
            raise BuildError(problem)


@dataclass(frozen=True)
class BuildPlan:
    """What the user asked for, checked: the exported bundle, the device target, the precision and every option."""

    source: Manifest  # the exported bundle
    target: DeviceTarget
    precision: str  # the option, or the target's default
    out: Path
    options: BuildOptions

    @property
    def ort_options(self) -> dict[str, Any]:
        """Options of the ONNX Runtime runners (reference, verification of graphs)."""
        return {"threads": self.target.threads} if self.target.threads else {}

    @property
    def qdq_backend(self) -> str:
        """The backend whose Q/DQ form an int8 graph takes (:mod:`edgekd.device.compiler.quantize`)."""
        return "tensorrt" if self.target.backend == "tensorrt" else "onnxruntime"


@dataclass(frozen=True)
class BuildData:
    """The images a build works on, read once: calibration images (M, H, W, C) uint8, the validation sample
    (N, H, W, C) uint8 with its labels (N,), and the exported FP32 full graph's probabilities on it (E, N, K), the
    reference every verification compares with (None until computed)."""

    calib_images: np.ndarray
    val_images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray | None = None


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
        from edgekd.device.tensorrt.loader import tensorrt_available

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


def calibration_feeds(src: Manifest, calib_images: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """Feeds for every graph: images for the full graph and segment 0, FP32 segment activations for later segments."""
    feeds: dict[str, list[dict[str, np.ndarray]]] = {f"segment{i}": [] for i in range(src.num_exits)}
    with Chain.from_manifest(src) as chain:  # an exported bundle: plain ONNX on ONNX Runtime
        chain.probs(calib_images, src.spec, batch=32,
                    on_segment_input=lambda i, feed: feeds[f"segment{i}"].append(dict(feed)))
    feeds["full"] = feeds["segment0"]
    return feeds


def _int8_graphs(plan: BuildPlan, method: str, work: Path, scratch: Path, calib_images: np.ndarray,
                 log) -> tuple[dict[str, Path], dict[str, Any], dict[str, Quantizable]]:
    """Q/DQ graphs of every graph for one calibration method, in the plan's Q/DQ form, into ``work``; the
    pre-processed models and their ranges stay in ``scratch`` (:class:`Quantizable`), for mixed precision to quantize
    again. For ONNX Runtime the weight range (7 or 8 bits) is measured on this machine first
    (:func:`weight_range_choice`)."""
    from edgekd.device.compiler.calibration import CalibrationCache, calibrate
    from edgekd.device.compiler.mixed import weight_range_choice
    from edgekd.device.compiler.quantize import preprocess_for_quantization

    src, qdq_backend, cache_dir = plan.source, plan.qdq_backend, calibration_cache_dir(plan.options.cache_dir)
    cache = CalibrationCache(cache_dir) if cache_dir else None
    feeds = calibration_feeds(src, calib_images)
    reused, quantizables = {}, {}
    for key, path in _source_paths(src).items():
        pre = preprocess_for_quantization(path, scratch / f"_pre_{key}.onnx")
        ranges, reused[key] = calibrate(pre, feeds[key], method, cache)
        quantizables[key] = Quantizable(key, pre, ranges)
    n_reused = sum(reused.values())
    log(f"calibration ({method}): {n_reused}/{len(reused)} graph(s) reused from the cache" if cache else
        f"calibration ({method}): computed, cache disabled")
    weights = {"reduce_range": False, "how": "TensorRT's form: symmetric 8-bit weights"}
    if qdq_backend == "onnxruntime":
        weights = weight_range_choice(quantizables["full"], calib_images, src.spec, src.num_exits, scratch,
                                      **plan.ort_options)
        log(f"weights: {'7' if weights['reduce_range'] else '8'}-bit (KL from fp32 on the calibration images: "
            f"7-bit {weights['kl_7bit']:.4f}, 8-bit {weights['kl_8bit']:.4f})")
    quantizables = {k: Quantizable(k, q.pre, q.ranges, weights["reduce_range"]) for k, q in quantizables.items()}
    out = {key: quantize_excluding(q, work / f"{key}.int8.onnx", qdq_backend, []) for key, q in quantizables.items()}
    info = {"method": method, "reused": reused, "images": int(len(calib_images)), "backend": qdq_backend,
            "weights": weights}
    return out, info, quantizables


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


def plan_build(bundle: str | Path, options: BuildOptions) -> BuildPlan:
    """Step 1 of the module docstring: the exported bundle, the device target and the precision, each checked against
    ``options`` (checked themselves when made) and the destination, before any work."""
    bundle = Path(bundle)
    src = load_manifest(bundle)
    if src.backend != "onnx":
        raise BuildError(f"{bundle} is already built ({src.backend}, {src.precision}); build from the exported bundle")
    target = resolve_target(options.target, options.backend)
    precision = options.precision or target.default_precision
    target.check_precision(precision)
    dla_core = options.dla_core
    # refused, never ignored: the one DLA rule, also applied by the TensorRT builder and runner
    problem = dla_core_problem(dla_core, target.backend, target.dla_cores, f"target {target.name}")
    if problem:
        raise BuildError(problem)
    if target.backend == "tensorrt":
        from edgekd.device.tensorrt.loader import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise BuildError(f"cannot build for {target.name} with TensorRT here: {why}")
        from edgekd.device.tensorrt.parser_rules import check_bundle_graphs

        misread = check_bundle_graphs(_source_paths(src).values(), why)  # e.g. opset 18 Reduce axes on TensorRT 8.x
        if misread:
            raise BuildError(misread)
        if dla_core is not None:
            from edgekd.device.tensorrt.versions import dla_problem

            no_dla = dla_problem(why)  # TensorRT 11.0-11.3: no DLA
            if no_dla:
                raise BuildError(no_dla)
    calib_data = options.calib_data
    out = Path(options.out) if options.out else default_out(bundle, precision, target.backend)
    # --force replaces only a bundle
    check_bundle_destination(out, force=options.force, inputs=[bundle, calib_data], wording=OUT_WORDING)
    for folder, what in ((bundle, "the bundle it builds from"), (calib_data, "the --calib-data folder")):
        if folder is not None and os.path.isdir(folder) and is_within(out, folder):
            raise BuildError(f"refusing to write --out {out} inside {folder}, {what}; choose another --out")
    return BuildPlan(source=src, target=target, precision=precision, out=out, options=options)


def build_bundle(bundle: str | Path, options: BuildOptions | None = None, *, console: Console | None = None,
                 **given: Any) -> Manifest:
    """Compile ``bundle`` and write the built bundle to ``options.out``; see the module docstring for the steps.
    ``options``, or else the :class:`BuildOptions` fields ``given`` by name (``precision="int8"``, ``max_drop=…``):
    checked once, when made.

    ``engine_cache`` (TensorRT): the engine cache folder, or off/none/0 for none; None: ``$EDGEKD_ENGINE_CACHE``,
    else the per-user cache (:func:`edgekd.device.tensorrt.engine_cache.default_engine_cache`)."""
    if options is not None and given:
        raise TypeError(f"build_bundle takes options or keywords, not both (got {', '.join(given)})")
    options = options if options is not None else BuildOptions(**given)
    console = console or Console()
    plan = plan_build(bundle, options)
    src, target, precision, out = plan.source, plan.target, plan.precision, plan.out
    if precision == "fp16" and target.backend == "onnxruntime":
        console.print("[yellow]note:[/] FP16 runs slower than FP32 on a CPU with ONNX Runtime (measured); "
                      "building it because you asked")
    val_images, labels = src.val_sample()  # checked, and never inflated past the memory available
    calib_data = options.calib_data
    calib_images = (load_images(calib_data, src.spec, max_images=MAX_CALIB_IMAGES, option="--calib-data") if calib_data
                    else _bundle_calib(src))
    with bundle_directory(out, force=options.force, inputs=[bundle, calib_data], wording=OUT_WORDING) as tmp:
        manifest = _build_into(tmp, plan, BuildData(calib_images, val_images, labels), console)
    mixed = ((manifest.build and manifest.build.calibration) or {}).get("mixed_precision")
    if mixed:
        console.print(mixed_summary(mixed), markup=False, highlight=False)
    console.print(f"built {out} ({target.backend}, {precision}); thresholds {manifest.thresholds}")
    return load_manifest(out)


def _bundle_calib(src: Manifest) -> np.ndarray:
    return src.calib_images()


def _build_into(tmp: Path, plan: BuildPlan, data: BuildData, console: Console) -> Manifest:
    """Steps 2-7 of the module docstring into ``tmp``; returns the manifest written there."""
    def log(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    src, spec, n, opts = plan.source, plan.source.spec, plan.source.num_exits, plan.options
    val_images, labels = data.val_images, data.labels
    reference = full_probs("onnxruntime", src.full_graph(), val_images, spec, n, **plan.ort_options)  # (E, N, K)
    data = replace(data, reference=reference)
    graphs, calibration = _graphs_for(tmp, plan, data, log)
    run_backend, run_paths, engines = "onnxruntime", graphs, {}
    if plan.target.backend == "tensorrt":
        mixed = (calibration or {}).get("mixed_precision")
        engines = _engines_for(tmp, plan, graphs, data.calib_images, log, len(mixed["float_nodes"]) if mixed else 0)
        run_backend, run_paths = "tensorrt", engines
    run_opts = plan.ort_options if run_backend == "onnxruntime" else {}
    built = full_probs(run_backend, run_paths["full"], val_images, spec, n, **run_opts)  # (E, N, K)
    report = compare(built, reference, labels, src.vote_rule, src.vote_weights, max_drop=opts.max_drop)
    print_verification(console, report, plan.precision, opts.max_drop)
    if report.verdict == OVER and not opts.force:
        worst = ", ".join(f"{r.name} {r.drop:+.2f} (interval {r.interval[0]:+.2f} to {r.interval[1]:+.2f})"
                          for r in report.over_rows())
        raise BuildError(f"{plan.precision} loses more than --max-drop {opts.max_drop:g} points of top-1, "
                         f"confidently: {worst}; nothing was written (tried: {_tried(plan, calibration)}; next: "
                         f"{_next_steps(plan)})")
    with Chain(run_backend, [run_paths[f"segment{i}"] for i in range(n)], **run_opts) as segments:
        p_chain = segments.probs(val_images, spec)  # (E, N, K)
        latency = _segment_latency_ms(segments, spec)
    costs = np.cumsum(latency) if opts.cost == "latency" else np.array([e.macs for e in src.exits], dtype=float)
    certificate = early_exit_thresholds(p_chain, built, labels, costs, epsilon=opts.target_drop,
                                        delta=round(1.0 - opts.confidence, 12), fit=opts.fit,
                                        vote_weights=src.vote_weights)
    log(f"thresholds: {certificate.summary()}")
    one_call = _one_call_graph(tmp, plan, graphs) if run_backend == "onnxruntime" else None
    for name in ("val_sample", "calib"):
        shutil.copyfile(src.file(name), tmp / f"{name}.npz")
    manifest = write_manifest(tmp, _manifest(plan, tmp, Built(graphs, engines, calibration, report, certificate,
                                                                latency, one_call)))
    from edgekd.device.profile.payoff import measure_payoff, payoff_line

    payoff = measure_payoff(manifest, val_images, runner_options=run_opts)
    log(payoff_line(payoff))
    assert manifest.build is not None
    return write_manifest(tmp, replace(manifest, build=replace(manifest.build, early_exit=payoff)))


def _one_call_graph(tmp: Path, plan: BuildPlan, graphs: dict[str, Path]) -> Path | None:
    """Step 6: the built segment graphs joined into the one-call early-exit graph, for the precisions whose one-call
    graph decides as the chain does (:data:`~edgekd.device.compiler.early_exit_graph.ONE_CALL_PRECISIONS`)."""
    from edgekd.device.compiler.early_exit_graph import ONE_CALL_PRECISIONS, write_early_exit_graph

    if plan.precision not in ONE_CALL_PRECISIONS:
        return None
    segments = [graphs[f"segment{i}"] for i in range(plan.source.num_exits)]
    return write_early_exit_graph(segments, tmp / f"early_exit.{plan.precision}.onnx")


def _graphs_for(tmp: Path, plan: BuildPlan, data: BuildData, log) -> tuple[dict[str, Path], dict[str, Any] | None]:
    """The graphs of the precision into ``tmp``, and for int8 the calibration record: calibration (one method, or
    each with ``auto``, keeping the best verdict), then mixed precision when INT8 is confidently over budget."""
    src = plan.source
    if plan.precision != "int8":
        return _fp_graphs(src, tmp, plan.precision), None
    scratch = tmp / "_scratch"  # pre-processed models for re-quantization; inside tmp, so a failed build drops it
    scratch.mkdir()
    try:
        graphs, info, quantizables, report = _calibrated_graphs(tmp, scratch, plan, data, log)
        if plan.options.mixed_precision == "off":
            return graphs, info
        report = report or _ort_report(plan, graphs["full"], data)
        if report.verdict != OVER:
            return graphs, info
        log(f"{verdict_line(report, 'int8', plan.options.max_drop)}: searching for mixed precision")
        info["mixed_precision"] = _mixed(tmp, scratch, plan, graphs, quantizables, data, info, log)
        return graphs, info
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ort_report(plan: BuildPlan, full: Path, data: BuildData) -> Verification:
    """The verification of a full Q/DQ graph run on ONNX Runtime (for TensorRT's form: a simulation of it)."""
    src = plan.source
    probs = full_probs("onnxruntime", full, data.val_images, src.spec, src.num_exits, **plan.ort_options)  # (E, N, K)
    return compare(probs, data.reference, data.labels, src.vote_rule, src.vote_weights,
                   max_drop=plan.options.max_drop)


def _calibrated_graphs(tmp: Path, scratch: Path, plan: BuildPlan, data: BuildData, log):
    """INT8 graphs for the calibration method; ``auto`` tries each and keeps the best verdict (then the smallest
    largest drop, then the smallest mean drop). Returns graphs, record, quantizables and the kept verification
    (None when only one method ran: it has not been verified yet)."""
    methods = CALIB_METHODS if plan.options.calib_method == CALIB_AUTO else (plan.options.calib_method,)
    if len(methods) == 1:
        graphs, info, quantizables = _int8_graphs(plan, methods[0], tmp, scratch, data.calib_images, log)
        return graphs, info, quantizables, None
    trials = []
    for method in methods:
        work = scratch / f"auto_{method}"
        work.mkdir()
        graphs, info, quantizables = _int8_graphs(plan, method, work, work, data.calib_images, log)
        rep = _ort_report(plan, graphs["full"], data)
        mean_drop = rep.mean_drop
        log(f"  {method}: {rep.verdict}, largest drop {rep.max_drop:+.2f}, mean drop {mean_drop:+.2f}")
        trials.append(((VERDICTS.index(rep.verdict), rep.max_drop, mean_drop), method, graphs, info,
                       quantizables, rep))
    _, method, graphs, info, quantizables, rep = min(trials, key=lambda t: t[0])
    log(f"calibration auto: kept {method}")
    final = {}
    for key, path in graphs.items():
        final[key] = tmp / path.name
        path.replace(final[key])
    info = {**info, "auto": {t[1]: {"verdict": t[5].verdict, "max_drop": t[0][1], "mean_drop": t[0][2]}
                             for t in trials}}
    return final, info, quantizables, rep


def _mixed(tmp: Path, scratch: Path, plan: BuildPlan, graphs: dict[str, Path], quantizables: dict[str, Quantizable],
           data: BuildData, info: dict[str, Any], log) -> dict[str, Any]:
    """Run the mixed-precision search (:mod:`edgekd.device.compiler.mixed`), re-quantize every graph of ``graphs``
    in place with the chosen nodes in float, and return the record."""
    from edgekd.device.compiler.mixed import MixedSearch, SearchInputs, latency_ms, node_keys
    from edgekd.core.onnx_graph import read_graph

    src, qdq_backend = plan.source, plan.qdq_backend
    inputs = SearchInputs(full=quantizables["full"], backend=qdq_backend, spec=src.spec, n_exits=src.num_exits,
                          calib_images=data.calib_images, val_images=data.val_images, labels=data.labels,
                          reference=data.reference,
                          vote_rule=src.vote_rule, vote_weights=src.vote_weights, max_drop=plan.options.max_drop,
                          work=scratch, ort_options=plan.ort_options)
    result = MixedSearch(inputs, log).run()
    if result is None:
        raise BuildError(f"int8 stays over --max-drop {plan.options.max_drop:g} even with every candidate node in "
                         "float; "
                         f"nothing was written (tried: {_tried(plan, info)}; next: {_next_steps(plan, mixed=True)})")
    latency = None
    if plan.target.backend == "onnxruntime":  # the speed cost, measured here; TensorRT's: `edgekd profile` on device
        latency = {"int8": latency_ms(graphs["full"], src.spec, **plan.ort_options)}
    per_graph = {key: set(node_keys(read_graph(q.pre)).values()) for key, q in quantizables.items()}
    for key, q in quantizables.items():
        graphs[key] = quantize_excluding(q, tmp / f"{key}.int8.onnx", qdq_backend, result.float_keys)
    record = dict(result.record)
    for node in record["float_nodes"]:
        node["graphs"] = [key for key in quantizables if node["key"] in per_graph[key]]
    record["float_precision"] = ("fp32" if qdq_backend == "onnxruntime" else
                                 "fp16 where TensorRT 8.5-10 finds it faster (FP16 flag), else fp32; "
                                 "fp32 on TensorRT 11 (strongly typed)")
    if latency is not None:
        latency["mixed"] = latency_ms(graphs["full"], src.spec, **plan.ort_options)
        latency["fp32"] = latency_ms(src.full_graph(), src.spec, **plan.ort_options)
        record["latency_ms"] = {**latency, "batch": 1, "backend": "onnxruntime", "graph": "full"}
    record["verification"] = {"verdict": result.report.verdict, "max_drop": result.report.max_drop}
    return record


def mixed_summary(record: dict[str, Any]) -> str:
    """One line: how many nodes stayed in float, which, and what it costs in speed (when measured)."""
    nodes = record["float_nodes"]
    names = ", ".join(f"{n['key']} ({n['op']})" for n in nodes[:4]) + (", ..." if len(nodes) > 4 else "")
    line = (f"mixed precision: {len(nodes)} of {record['candidates']} nodes in float ({names}), "
            f"{record['int8_nodes']} in int8")
    lat = record.get("latency_ms")
    if lat:
        line += (f"; batch-1 full graph {lat['mixed']:.2f} ms vs {lat['int8']:.2f} ms all-int8 and "
                 f"{lat['fp32']:.2f} ms fp32 ({lat['mixed'] / lat['int8']:.2f}x int8)")
        if lat["mixed"] >= lat["fp32"]:
            line += "; slower than fp32 here: --precision fp32 is faster and loses nothing"
    return line


def _tried(plan: BuildPlan, calibration: dict[str, Any] | None) -> str:
    """What this build tried, for an error message."""
    if plan.precision != "int8":
        return f"{plan.precision}"
    methods = ", ".join(CALIB_METHODS) if plan.options.calib_method == CALIB_AUTO else plan.options.calib_method
    source = "--calib-data" if plan.options.calib_data else "the bundle's calibration images"
    parts = [f"int8 calibrated with {methods} on {source}"]
    mixed = (calibration or {}).get("mixed_precision")
    if mixed:
        parts.append(f"mixed precision with {len(mixed['float_nodes'])} of {mixed['candidates']} nodes in float "
                     "(chosen on ONNX Runtime)")
    elif plan.options.mixed_precision == "off":
        parts.append("no mixed precision (--mixed-precision off)")
    return "; ".join(parts)


def _next_steps(plan: BuildPlan, mixed: bool = False) -> str:
    """What to try next, never what this build just did."""
    steps = []
    if plan.precision == "int8":
        if plan.options.mixed_precision == "off":
            steps.append("--mixed-precision auto (the most sensitive nodes stay in float)")
        if plan.options.calib_method != CALIB_AUTO:
            steps.append("--calib-method auto (tries minmax, entropy and percentile)")
        if not plan.options.calib_data:
            steps.append("--calib-data DIR (more, or more representative, calibration images)")
    for other in ("fp16", "fp32"):
        if other != plan.precision and other in plan.target.precisions and not (mixed and other == "fp16"):
            steps.append(f"--precision {other}")
    steps.append("a larger --max-drop")
    if not plan.options.force:
        steps.append("--force to keep it anyway")
    return "; ".join(steps)


def _engines_for(tmp: Path, plan: BuildPlan, graphs: dict[str, Path], calib_images: np.ndarray,
                 log, float_nodes: int = 0) -> dict[str, Path]:
    """TensorRT engines for every graph (untested here: needs TensorRT and an NVIDIA GPU).

    Explicit quantization (the Q/DQ graphs) everywhere except on a DLA core with TensorRT 8.5-10.x (the DLA takes
    implicit quantization only, see :func:`edgekd.device.tensorrt.versions.use_implicit_calibrator`): there the FP32
    graphs are built with the entropy calibrator, fed with the same calibration images (and, for segment graphs, the
    activations the FP32 segments produce). Engines come from (and go to) the per-user
    engine cache, with the timing cache next to them; each engine's sidecar records what the build found (GPU
    fallback on a DLA core, the engine's layers), which :func:`_manifest` copies under ``build.engines``.
    """
    from edgekd.device.tensorrt.build import build_engine
    from edgekd.device.tensorrt.engine_cache import calibration_digest
    from edgekd.device.tensorrt.loader import tensorrt_available
    from edgekd.device.tensorrt.versions import parse_version, tensorrt_version_problem, use_implicit_calibrator

    src, target, precision, dla_core = plan.source, plan.target, plan.precision, plan.options.dla_core
    version = tensorrt_available()[1]
    problem = tensorrt_version_problem(version)
    if problem:
        raise BuildError(problem)
    on_dla = dla_core is not None  # a target without that DLA core was refused by build_bundle
    implicit = precision == "int8" and use_implicit_calibrator(parse_version(version)[0], on_dla)
    engine_cache = engine_cache_choice(plan.options.engine_cache)
    if implicit and float_nodes:
        log(f"note: TensorRT {version} on a DLA core calibrates implicitly from the float graphs, so the {float_nodes} "
            "mixed-precision float node(s) do not apply there; the engine verification below judges the result")
    feeds = calibration_feeds(src, calib_images) if implicit else {}
    sources = _source_paths(src) if implicit else graphs
    engines = {}
    for key, path in sources.items():
        i = None if key == "full" else int(key[len("segment"):])
        input_name = "image" if i is None else segment_input_name(i)
        shape = src.spec.shape if i is None else src.segment_input_shape(i)
        batches = [feed[input_name] for feed in feeds[key]] if implicit else None
        built = build_engine(path, tmp, precision=precision, target=target, input_name=input_name,
                             input_shape_chw=shape, dla_core=dla_core, calib_batches=batches,
                             calib_cache=tmp / f"{key}.calib" if implicit else None,
                             calib_digest=calibration_digest(batches) if batches is not None else None,
                             engine_cache=engine_cache, log=log)
        engines[key] = built.path
    return engines


@dataclass(frozen=True)
class Built:
    """What the build steps produced, as the manifest records it."""

    graphs: dict[str, Path]  # "full", "segment{i}" → the ONNX graph for the precision
    engines: dict[str, Path]  # the same keys → TensorRT engines ({} for ONNX Runtime); their sidecars say the rest
    calibration: dict[str, Any] | None  # int8 only: method, cache reuse, images, Q/DQ backend
    verification: Verification  # :func:`edgekd.device.compiler.verify.compare` against FP32
    certificate: Certificate  # the early-exit thresholds and what backs them (certified or a point estimate)
    segment_latency_ms: list[float]  # quick median batch-1 latency per segment
    early_exit: Path | None = None  # the one-call early-exit graph (ONNX Runtime builds)


def _manifest(plan: BuildPlan, tmp: Path, built: Built) -> Manifest:
    """The built bundle's manifest: the exported one's, with what this build made and recorded."""
    import onnx
    import onnxruntime

    src, n = plan.source, plan.source.num_exits
    graphs, engines, cert = built.graphs, built.engines, built.certificate
    run_paths = engines or graphs
    files = {name: file_entry(tmp, f"{name}.npz") for name in ("val_sample", "calib")}
    if engines:  # keep the ONNX graphs the engines came from
        files.update({f"onnx_{k}": file_entry(tmp, p.name) for k, p in graphs.items()})
    early = built.early_exit
    record = BuildRecord(
        source={"name": src.name, "manifest_sha256": sha256_file(src.root / MANIFEST_NAME)},
        target=plan.target.name,
        calibration=built.calibration,
        verification={**built.verification.to_json(), "max_drop_allowed": plan.options.max_drop},
        thresholds=manifest_record(cert, plan.options.cost, {"source": "val_sample", "n": cert.n}),
        segment_latency_ms=built.segment_latency_ms,
    )
    if engines:  # per engine: device, batch, origin (built or from the engine cache), DLA GPU fallback, layers
        from edgekd.device.tensorrt.engine_cache import engine_record

        record = replace(record, engines={key: engine_record(tmp / path.name) for key, path in engines.items()})
    return replace(
        src, precision=plan.precision, backend=plan.target.backend, root=tmp,
        graphs=Graphs(
            graph_entry(tmp, run_paths["full"].name, ["image"], full_output_names(n)),
            [graph_entry(tmp, run_paths[f"segment{i}"].name, [segment_input_name(i)], segment_output_names(i, n))
             for i in range(n)],
            graph_entry(tmp, early.name, EARLY_EXIT_INPUTS, EARLY_EXIT_OUTPUTS) if early is not None else None),
        files=files, thresholds=list(cert.thresholds), build=record,
        versions={**src.versions, "build_edgekd": __version__, "build_onnx": onnx.__version__,
                  "build_onnxruntime": onnxruntime.__version__})

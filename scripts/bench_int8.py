"""Benchmark (issue 12): INT8 that keeps its accuracy, on a real exported bundle and the 10,000 CIFAR-10 test images.

For one exported bundle (default: the issue's model, a multi-exit CIFAR ResNet-20 trained with BYOT on 10,000 images
for 10 epochs, made by ``scripts/bench_certify.py`` under ``runs/certify``), every variant is built with the product's
own ``build_bundle`` / quantizer and then, side by side:

* top-1 per exit and for the bundle's vote on all 10,000 test images (full graph on ONNX Runtime);
* the build's verdict on the bundle's validation sample (:func:`edgekd.device.compiler.verify.compare`, ``--max-drop``
  1.0): drop, 95% interval, within / undecided / over, per exit and vote;
* the nodes kept in float (mixed precision) and the batch-1 latency of the full graph (median of interleaved rounds).

Variants: ``fp32``; ``int8-<method>`` for minmax, entropy and percentile (mixed precision off, so each is judged as
calibrated); ``int8-dark`` (minmax on the calibration images at half brightness: a deliberately bad calibration set
that puts INT8 over budget) and ``mixed-dark`` (the default build from that set: mixed precision steps in); and the
weight-range choice: ``w7`` / ``w8`` (7-bit ``reduce_range`` vs full 8-bit weights, minmax, ONNX Runtime's fused
u8s8 kernels on this CPU) and ``w7-exact`` / ``w8-exact`` (the same graphs with ONNX Runtime's graph optimizations
off, so Q/DQ runs as float arithmetic: the exact int8 result, what a CPU without the u8s8 overflow -- VNNI, ARM --
computes).

Resumable: each variant's result is a JSON under ``--results`` (committed in ``docs/benchmarks/int8/``) and is skipped
when present; the timing pass (``timing.json``) runs when every variant has a graph. ``--report`` prints the tables.

    .venv/bin/python scripts/bench_certify.py --work runs/certify     # once: the bundle (about 10 minutes)
    .venv/bin/python scripts/bench_int8.py --bundle runs/certify/bundle --data runs/certify/cifar10-10k.npz
    .venv/bin/python scripts/bench_int8.py --report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, interleaved_medians, write_result
from rich.console import Console

from edgekd.core.manifest import load_manifest
from edgekd.core.manifest_records import BuildRecord
from edgekd.core.vote import accuracy, vote
from edgekd.device.chain import full_probs, normalized_batches
from edgekd.device.compiler import build_bundle
from edgekd.device.compiler.verify import compare

MAX_DROP = 1.0
METHODS = ("minmax", "entropy", "percentile")
VARIANTS = ("fp32", *(f"int8-{m}" for m in METHODS), "int8-dark", "mixed-dark", "w7", "w8", "w7-exact", "w8-exact")


def _dark_calib(bundle: Path, work: Path) -> Path:
    out = work / "calib-dark.npz"
    if not out.exists():
        with np.load(bundle / "calib.npz") as f:
            np.savez(out, images=(f["images"] // 2).astype(np.uint8))
    return out


def _graph(variant: str, bundle: Path, work: Path, console: Console) -> Path:
    """The full graph of ``variant`` (built under ``work`` if missing)."""
    src = load_manifest(bundle)
    if variant == "fp32":
        return src.full_graph()
    if variant.startswith("w"):
        return _weights_graph(variant.split("-")[0], bundle, work)
    out = work / variant
    if not (out / "manifest.json").exists():
        kwargs = dict(precision="int8", backend="onnxruntime", out=out, cache_dir=str(work / "calibration"),
                      force=out.exists(), console=console)
        if variant.startswith("int8-") and variant != "int8-dark":
            build_bundle(bundle, calib_method=variant[5:], max_drop=100.0, mixed_precision="off", **kwargs)
        elif variant == "int8-dark":
            build_bundle(bundle, calib_data=_dark_calib(bundle, work), max_drop=100.0, mixed_precision="off",
                         **kwargs)
        else:  # mixed-dark: the default build from the bad calibration set
            build_bundle(bundle, calib_data=_dark_calib(bundle, work), max_drop=MAX_DROP, **kwargs)
    return load_manifest(out).full_graph()


def _weights_graph(bits: str, bundle: Path, work: Path) -> Path:
    """The minmax full graph with 7-bit (``w7``) or 8-bit (``w8``) weights, from the product's quantizer."""
    from edgekd.device.compiler.builder import calibration_feeds
    from edgekd.device.compiler.calibration import CalibrationCache, calibrate
    from edgekd.device.compiler.quantize import preprocess_for_quantization, quantize_qdq

    out = work / f"full.{bits}.onnx"
    if not out.exists():
        src = load_manifest(bundle)
        with np.load(src.file("calib")) as f:
            feeds = calibration_feeds(src, f["images"])
        pre = preprocess_for_quantization(src.full_graph(), work / "_pre_full.onnx")
        ranges, _ = calibrate(pre, feeds["full"], "minmax", CalibrationCache(str(work / "calibration")))
        quantize_qdq(pre, out, ranges, backend="onnxruntime", reduce_range=bits == "w7")
    return out


def _exact_probs(path: Path, images: np.ndarray, src) -> np.ndarray:
    """(E, N, K) probabilities with ONNX Runtime's graph optimizations off: Q/DQ as float arithmetic, no fused
    integer kernels, so no u8s8 overflow."""
    import onnxruntime as ort

    from edgekd.core.vote import softmax
    from edgekd.device.runners.onnxruntime import create_session

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = create_session(path, so)
    names = [f"logits{i}" for i in range(src.num_exits)]
    chunks = [np.stack([softmax(o.astype(np.float32)) for o in session.run(names, {"image": x})])
              for x in normalized_batches(images, src.spec, 64)]
    return np.concatenate(chunks, axis=1)


def _scores(probs: np.ndarray, labels: np.ndarray, src) -> dict[str, float]:
    w = np.asarray(src.vote_weights) if src.vote_weights is not None else None
    out = {f"exit{i}": accuracy(probs[i].argmax(1), labels) for i in range(probs.shape[0])}
    out[f"vote:{src.vote_rule}"] = accuracy(vote(probs, src.vote_rule, w), labels)
    return out


def measure(variant: str, bundle: Path, data: Path, work: Path, results: Path, console: Console) -> None:
    dest = results / f"{variant}.json"
    if dest.exists():
        console.print(f"{variant}: done (skipped)")
        return
    src = load_manifest(bundle)
    graph = _graph(variant, bundle, work, console)
    probs_of = ((lambda imgs: _exact_probs(graph, imgs, src)) if variant.endswith("-exact")
                else (lambda imgs: full_probs("onnxruntime", graph, imgs, src.spec, src.num_exits)))
    with np.load(data) as f:
        x_test, y_test = f["x_test"], f["y_test"].astype(np.int64)
    with np.load(src.file("val_sample")) as f:
        val, labels = f["images"], f["labels"]
    reference = full_probs("onnxruntime", src.full_graph(), val, src.spec, src.num_exits)
    report = compare(probs_of(val), reference, labels, src.vote_rule, src.vote_weights, max_drop=MAX_DROP).to_json()
    mixed = None
    if (graph.parent / "manifest.json").exists():
        cal = (load_manifest(graph.parent).build or BuildRecord()).calibration or {}
        mixed = cal.get("mixed_precision")
    result = {
        "variant": variant, "bundle": str(bundle), "graph": str(graph.relative_to(ROOT) if graph.is_relative_to(ROOT)
                                                              else graph),
        "test": {"n": int(y_test.size), "top1": _scores(probs_of(x_test), y_test, src)},
        "verdict": {"n": report["n"], "max_drop": MAX_DROP, "verdict": report["verdict"],
                    "rows": [{k: r[k] for k in ("name", "drop", "interval", "lost", "gained", "verdict")}
                             for r in report["rows"]]},
        "float_nodes": [n["key"] for n in mixed["float_nodes"]] if mixed else [],
        "candidates": mixed["candidates"] if mixed else None,
    }
    write_result(dest, result)
    console.print(f"{variant}: test {result['test']['top1']}, verdict {report['verdict']}")


def timing(bundle: Path, work: Path, results: Path, rounds: int, runs: int, console: Console) -> None:
    """Batch-1 latency of every fused-kernel variant's full graph, interleaved round by round in one process."""
    from edgekd.device.runners import make_runner

    src = load_manifest(bundle)
    variants = [v for v in VARIANTS if not v.endswith("-exact")]
    x = np.zeros((1, *src.spec.shape), dtype=np.float32)
    runners = {v: make_runner("onnxruntime", _graph(v, bundle, work, console)).activate() for v in variants}
    calls = {v: (lambda r=r: r.infer({"image": x})) for v, r in runners.items()}
    median_ms = interleaved_medians(calls, rounds=rounds * runs, warmup_rounds=10)
    for r in runners.values():
        r.deactivate()
    from edgekd.device.compiler.quantize import u8s8_saturates
    from edgekd.device.profile.environment import cpu_model

    out = {"rounds": rounds, "runs": runs, "batch": 1, "machine": cpu_model(),
           "vnni_or_arm": not u8s8_saturates(), "median_ms": median_ms}
    write_result(results / "timing.json", out)
    console.print(out["median_ms"])


def report(results: Path) -> None:
    rows = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json") if p.stem in VARIANTS}
    timing_file = results / "timing.json"
    lat = json.loads(timing_file.read_text())["median_ms"] if timing_file.exists() else {}
    if not rows:
        print("no results yet")
        return
    outputs = list(next(iter(rows.values()))["test"]["top1"])
    print("| variant | " + " | ".join(f"{o} top-1" for o in outputs) + " | verdict (val) | largest drop [95% interval] "
          "| nodes in float | batch-1 ms |")
    print("|---|" + "---:|" * len(outputs) + "---|---|---|---:|")
    for v in VARIANTS:
        if v not in rows:
            continue
        r = rows[v]
        worst = max(r["verdict"]["rows"], key=lambda x: x["drop"])
        nodes = f"{len(r['float_nodes'])} of {r['candidates']}" if r["candidates"] else "0"
        ms = f"{lat[v]:.3f}" if v in lat else "n/a"
        print(f"| {v} | " + " | ".join(f"{r['test']['top1'][o]:.2f}" for o in outputs)
              + f" | {r['verdict']['verdict']} | {worst['name']} {worst['drop']:+.2f} [{worst['interval'][0]:+.2f}, "
              f"{worst['interval'][1]:+.2f}] | {nodes} | {ms} |")
    for v in VARIANTS:
        if rows.get(v, {}).get("float_nodes"):
            print(f"\n{v}: float nodes {', '.join(rows[v]['float_nodes'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "runs" / "certify" / "bundle")
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "certify" / "cifar10-10k.npz",
                    help="an npz with x_test / y_test (scripts/bench_certify.py writes it)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "int8")
    ap.add_argument("--results", type=Path, default=RESULTS / "int8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        report(args.results)
        return
    console = Console()
    args.work.mkdir(parents=True, exist_ok=True)
    for v in VARIANTS:
        measure(v, args.bundle, args.data, args.work, args.results, console)
    if not (args.results / "timing.json").exists():
        timing(args.bundle, args.work, args.results, args.rounds, args.runs, console)
    report(args.results)


if __name__ == "__main__":
    main()

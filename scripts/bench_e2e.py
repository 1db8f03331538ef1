"""Speed benchmark (issue 13): how much faster is edgekd than what users deploy today, at what accuracy?

In one process, on one machine, on the 10,000 CIFAR-10 test images, for one student checkpoint (default: the best
TSKD student of ``scripts/bench_accuracy.py``, picked by validation top-1, never by test), side by side:

* ``torch-eager``: PyTorch eager FP32, the deepest exit only (the plain network a user would otherwise deploy:
  every segment, the last head; ``model.eval()``, ``torch.inference_mode()``, torch's default threads);
* ``ort-fp32-vote``: ONNX Runtime FP32, the exported full graph (every exit and the vote, ``edgekd run --mode
  full-vote`` on the exported bundle);
* ``int8-vote``: the INT8 build (``edgekd build --precision int8``, defaults), ``--mode full-vote``;
* ``int8-ee-certified``: the same build, ``--mode early-exit`` at its certified thresholds (the build's default fit,
  on the bundle's own validation sample: the 1,000 images the student was selected on);
* ``int8-ee-heldout``: the same build with thresholds certified again by ``edgekd profile --write-thresholds`` on
  ``--certify`` held-out CIFAR-10 training images (outside the study's pool: no student trained or selected on them,
  and not the test split) at ``--epsilon`` (issue 23's 5,000 images and ε = 1 by default; δ as build's), one
  global threshold; ``int8-ee-heldout-path`` the same with the path family (per-exit thresholds);
* ``int8-ee-point``: an INT8 build with ``--fit point`` (the point-estimate thresholds, not certified);
* ``int8-ee-chain`` / ``int8-ee-one-call``: ``int8-ee-certified`` with each early-exit graph forced (issue 23: one
  call of the segments joined by ``If`` nodes against one call per segment; ``int8-ee-certified`` runs what build
  measured faster);
* ``int8-ee-all-last`` / ``int8-ee-all-exit0``: the one-call graph with every image sent to the last exit
  (``--threshold 1.5``: the machinery's cost against ``int8-vote``, target ≤ 1.05×) and answered at exit 0
  (``--threshold 0``: target within 10 points of exit 0's share of the MACs).

For each: top-1 of the answer (and of the deepest exit where the graph computes it), mean / median / p99 latency at
batch 1 over all test images (the network and the answer, from the normalised tensor: preprocessing is the same for
every variant and excluded), throughput at batch 32 (median of rounds), the ratio to PyTorch eager, and the achieved
arithmetic rate — GFLOP/s (FP32) or GOP/s (INT8), 2 × the multiply-accumulates each image really ran (early exit: the
exits it reached) × images per second — against this CPU's matrix-multiply peak, measured in the same run (ONNX
Runtime MatMul FP32 and MatMulInteger u8×s8→s32, torch.mm FP32: the fastest call at the best of 512², 1024²
and 2048²). Per-exit batch-1 latencies
(``--mode exit``) are measured too, for the accuracy-vs-latency plot.

``--threads N`` runs every variant with N threads (torch and ONNX Runtime alike; default: every core) and writes
``e2e-threads{N}.json``: on a 2-core CPU a batch-1 call of this small network is faster on one thread than on two.

Batch-1 timing is interleaved: the images are cut into blocks, and each block runs through every variant in turn
(rotating the order), so drift in the machine's load touches every variant alike.

    .venv/bin/python scripts/bench_e2e.py                      # measure (resumable: builds are cached in --work)
    .venv/bin/python scripts/bench_e2e.py --threads 1          # the same, one thread everywhere
    .venv/bin/python scripts/bench_e2e.py --run n5k-resnet18-tskd-s0   # issue 23's 0.56-GMAC model from the study
    .venv/bin/python scripts/bench_e2e.py --report             # Markdown table of the result
    .venv/bin/python scripts/bench_e2e.py --plot docs/benchmarks/e2e/accuracy_latency.png   # with the study's variants
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np
from common import RESULTS, ROOT, SHARED_DATA, write_result

STUDY = RESULTS / "accuracy"
RESULT = RESULTS / "e2e" / "e2e.json"
VARIANTS = ("torch-eager", "ort-fp32-vote", "int8-vote", "int8-ee-certified", "int8-ee-heldout", "int8-ee-heldout-path",
            "int8-ee-point",
            "int8-ee-chain", "int8-ee-one-call", "int8-ee-all-last", "int8-ee-all-exit0")
CERTIFIED = {"int8-ee-certified": "int8", "int8-ee-heldout": "int8-heldout",  # certified variant → its bundle
             "int8-ee-heldout-path": "int8-heldout-path"}
CERTIFY_IMAGES = 5_000  # held-out training images int8-ee-heldout's thresholds are certified on (issue 23's size)
EPSILON = 1.0  # their budget, points of top-1 against the full answer (issue 23's targets are at ε = 1)
BATCH = 32
PEAK_SIZES = (512, 1024, 2048)  # the matrix sizes of the peak measurement (M = N = K); the best one counts
TARGET_EAGER = 10.0  # INT8 early exit vs PyTorch eager, batch-1 mean latency (issue 13)
TARGET_VOTE = 2.0  # INT8 early exit vs INT8 full vote
TARGET_ALL_LAST = 1.05  # issue 23: early exit with every image at the last exit vs the full graph, at most
TARGET_EXIT0_POINTS = 10.0  # issue 23: answering at exit 0, within this many points of its share of the MACs
TARGET_ORACLE_SHARE = 0.6  # issue 23: the certified MAC saving on test, at least this share of the oracle's
TARGET_EE_VS_FULL = 1.5  # issue 23: INT8 certified early exit vs the INT8 full graph, batch-1 mean latency, at least
TARGET_EE_DROP = 1.0  # issue 23: ... at most this many points of top-1 below the INT8 full graph on test


# ------------------------------------------------------------------------------------------------------------ inputs


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def best_tskd_checkpoint() -> tuple[Path, str]:
    """The study's TSKD student with the best validation top-1 of its val-picked answer (the vote rule best on
    validation, or the deepest exit when that is higher): (its best.pt, why)."""
    from bench_accuracy import baseline_result

    # the rebuilt record where there is one: the cache's checkpoint is the rebuild's
    rows = [json.loads(baseline_result(p.stem).read_text()) for p in sorted(STUDY.glob("n5k-tskd-s*.json"))]
    if not rows:
        fail("no finished TSKD run in docs/benchmarks/accuracy (run scripts/bench_accuracy.py, or pass "
             "--checkpoint)")

    def val_score(r: dict[str, Any]) -> float:
        return max(r["val"]["exits"][-1], r["val"]["vote"][r["val_vote_rule"]])

    best = max(rows, key=val_score)
    path, _ = study_checkpoint(best["run"])
    return path, f"{best['run']} (validation {val_score(best):.2f}, best of {len(rows)} TSKD seeds)"


def study_checkpoint(run: str) -> tuple[Path, str]:
    """The best.pt of the study run ``run`` in the study's cache ($EDGEKD_STUDY_CACHE, else runs/study), and why."""
    from bench_accuracy import CACHE

    path = CACHE / run / "best.pt"
    if not path.exists():
        fail(f"{path} is missing (the study's checkpoints live in its cache; "
             f"scripts/bench_accuracy.py --checkpoints {run!r} trains it again)")
    return path, f"the study's run {run}"


def test_split(path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 test images and (N,) labels: ``path`` (an npz with x_test / y_test) or the shared copy."""
    path = path or SHARED_DATA / "cifar10.part1.npz"
    with np.load(path) as f:
        return f["x_test"], f["y_test"].astype(np.int64)


def prepare(checkpoint: Path, work: Path, certify: int, epsilon: float, console) -> dict[str, Path]:
    """The exported bundle, the two INT8 builds, and two copies of the certified build with thresholds certified on
    ``certify`` held-out images at ``epsilon`` (one global threshold; the path family), under ``work`` (made once,
    reused)."""
    import hashlib
    import shutil

    from bench_accuracy import heldout_file

    from edgekd.device.compiler import build_bundle
    from edgekd.device.profile.profiler import write_thresholds
    from edgekd.core.certify import GLOBAL, PATH
    from edgekd.training.export import export_bundle

    # the bundles are cached: refuse a --work that holds another student's
    stamp = {"checkpoint": str(checkpoint.resolve()), "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    stamp_path = work / "student.json"
    if stamp_path.exists() and json.loads(stamp_path.read_text())["sha256"] != stamp["sha256"]:
        fail(f"{work} holds the bundles of another student "
             f"({json.loads(stamp_path.read_text())['checkpoint']}); give another --work")
    write_result(stamp_path, stamp)
    heldout = f"int8-heldout{certify}-e{epsilon:g}"
    paths = {"exported": work / "bundle", "int8": work / "int8", "int8-point": work / "int8-point",
             "int8-heldout": work / heldout, "int8-heldout-path": work / f"{heldout}-path"}
    if not (paths["exported"] / "manifest.json").exists():
        export_bundle(checkpoint, paths["exported"], force=paths["exported"].exists(), console=console)
    for key, fit in (("int8", "certified"), ("int8-point", "point")):
        if not (paths[key] / "manifest.json").exists():
            build_bundle(paths["exported"], precision="int8", backend="onnxruntime", out=paths[key], fit=fit,
                         cache_dir=str(work / "calibration"), force=paths[key].exists(), console=console)
    for key, family in (("int8-heldout", GLOBAL), ("int8-heldout-path", PATH)):
        if not (paths[key] / "manifest.json").exists():
            tmp = paths[key].with_name(paths[key].name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(paths["int8"], tmp)
            cert, _ = write_thresholds(tmp, data=heldout_file(certify), target_drop=epsilon, family=family)
            console.print(f"{key}: {cert.summary()}")
            os.replace(tmp, paths[key])
    return paths


# ------------------------------------------------------------------------------------------------------------ variants


class Variant:
    """One way of answering: ``call(x)`` on a (B, C, H, W) batch returns (answers (B,), exits that answered (B,));
    ``macs(exits)`` the MACs each image ran; ``deep(x)``, where the variant computes it, the deepest exit's answers
    (read in an untimed pass); ``close()`` releases what it holds."""

    def __init__(self, name: str, call: Callable[[np.ndarray], tuple], macs: Callable[[np.ndarray], np.ndarray],
                 precision: str, close: Callable[[], None] = lambda: None,
                 deep: Callable[[np.ndarray], np.ndarray] | None = None):
        self.name, self.call, self.macs, self.precision = name, call, macs, precision
        self.close, self.deep = close, deep


def _exit_macs(manifest) -> tuple[np.ndarray, np.ndarray, int]:
    """Per exit: the MACs of an image that answers there (segments up to it, its head and the heads before it);
    the deepest exit alone (the plain network); the full graph (every head)."""
    exits = manifest.exits
    heads = np.cumsum([e.head_macs for e in exits]) - np.array([e.head_macs for e in exits])
    reached = np.array([e.macs for e in exits], dtype=np.int64) + heads  # (E,)
    return reached, int(exits[-1].macs), int(reached[-1])


def torch_variant(checkpoint: Path, macs: int) -> Variant:
    import torch

    from edgekd.training.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    segments, head = torch.nn.Sequential(*model.segments), model.heads[-1]

    def call(x: np.ndarray) -> tuple:
        with torch.inference_mode():
            _, logits = head(segments(torch.from_numpy(x)))  # (B, K)
            pred = logits.argmax(dim=1).numpy()
        return pred, np.full(len(x), model.num_exits - 1)

    return Variant("torch-eager", call, lambda exits: np.full(len(exits), macs), "fp32",
                   deep=lambda x: call(x)[0])


def pipeline_variant(name: str, bundle: Path, mode: str, reached: np.ndarray, **options: Any) -> Variant:
    from edgekd.core.manifest import load_manifest
    from edgekd.device.runtime.pipeline import Pipeline

    manifest = load_manifest(bundle)
    pipe = Pipeline(manifest, mode=mode, **options)
    deepest = None
    if mode == "full-vote":  # the full graph also computes the deepest exit; one extra call per block reads it
        from edgekd.device.runners import make_runner

        deepest = make_runner(manifest.runner_backend, manifest.full_graph()).activate()

    def call(x: np.ndarray) -> tuple:
        preds = pipe.infer(x) if len(x) == 1 else None
        preds = [preds] if preds is not None else pipe.predict_batch(x)
        return np.array([p.label for p in preds]), np.array([p.exit for p in preds])

    def deep(x: np.ndarray) -> np.ndarray:
        out = deepest.infer({"image": x}, [f"logits{manifest.num_exits - 1}"])
        return out[f"logits{manifest.num_exits - 1}"].argmax(axis=1)

    def close() -> None:
        pipe.close()
        if deepest is not None:
            deepest.deactivate()

    return Variant(name, call, lambda exits: reached[exits], manifest.precision, close,
                   deep=deep if deepest is not None else None)


# ------------------------------------------------------------------------------------------------------------ timing


def matmul_peaks(work: Path, sizes: tuple[int, ...] = PEAK_SIZES, reps: int = 10) -> dict[str, Any]:
    """This CPU's matrix-multiply peak, G(FL)OP/s: for each library and element type, the fastest of ``reps`` calls
    (after warm-up) at each size M = N = K in ``sizes``, and the best size. ONNX Runtime MatMul FP32 and
    MatMulInteger u8×s8→s32 (the kernel family of its QLinearConv / QGemm) run through edgekd's own runner (the same
    thread pool the variants use); torch.mm FP32 is torch's."""
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.device.runners import make_runner

    rng = np.random.default_rng(0)
    per_size: dict[str, dict[int, float]] = {"ort_fp32": {}, "ort_int8": {}, "torch_fp32": {}}
    for n in sizes:
        graphs = {
            "ort_fp32": ("MatMul", TensorProto.FLOAT, rng.standard_normal((n, n)).astype(np.float32),
                         rng.standard_normal((n, n)).astype(np.float32), TensorProto.FLOAT),
            "ort_int8": ("MatMulInteger", TensorProto.UINT8, rng.integers(-127, 128, (n, n)).astype(np.int8),
                         rng.integers(0, 256, (n, n)).astype(np.uint8), TensorProto.INT32),
        }
        for key, (op, in_type, weight, x, out_type) in graphs.items():
            node = helper.make_node(op, ["x", "w"], ["y"])
            graph = helper.make_graph([node], key, [helper.make_tensor_value_info("x", in_type, [n, n])],
                                      [helper.make_tensor_value_info("y", out_type, [n, n])],
                                      [numpy_helper.from_array(weight, "w")])
            path = work / f"peak-{key}-{n}.onnx"
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
            with make_runner("onnxruntime", path) as runner:
                per_size[key][n] = 2 * n ** 3 / _fastest_s(lambda: runner.infer({"x": x}, ["y"]), reps) / 1e9
        a, b = torch.randn(n, n), torch.randn(n, n)
        with torch.inference_mode():
            per_size["torch_fp32"][n] = 2 * n ** 3 / _fastest_s(lambda: torch.mm(a, b), reps) / 1e9
    out: dict[str, Any] = {key: max(rates.values()) for key, rates in per_size.items()}
    out["per_size"] = {key: {str(n): round(r, 1) for n, r in rates.items()} for key, rates in per_size.items()}
    return out


def _times_s(fn: Callable[[], Any], reps: int, warmup: int = 3) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _fastest_s(fn: Callable[[], Any], reps: int) -> float:
    return min(_times_s(fn, reps, warmup=2))


def _median_s(fn: Callable[[], Any], reps: int) -> float:
    return statistics.median(_times_s(fn, reps))


def measure(variants: list[Variant], x: np.ndarray, labels: np.ndarray, blocks: int, rounds: int,
            console, timed: int | None = None) -> dict[str, dict[str, Any]]:
    """Batch 1 (the first ``timed`` images, default all, interleaved by block) then batch ``BATCH`` (``rounds`` ≥ 1
    passes over every image, interleaved by round). Answers and exits come from the batch-1 pass for the timed
    images and from the first batch-``BATCH`` round for the rest, so top-1 always covers every image."""
    n = len(x)
    t_n = n if timed is None else min(timed, n)
    lat = {v.name: np.empty(t_n) for v in variants}
    pred = {v.name: np.empty(n, dtype=np.int64) for v in variants}
    exits = {v.name: np.empty(n, dtype=np.int64) for v in variants}
    deep = {v.name: np.full(n, -1, dtype=np.int64) for v in variants}
    edges = np.linspace(0, t_n, blocks + 1).astype(int)
    for v in variants:  # warm-up (first-call allocations, thread-pool start)
        for i in range(min(20, n)):
            v.call(x[i:i + 1])
    for b, (lo, hi) in enumerate(zip(edges, edges[1:])):
        order = variants[b % len(variants):] + variants[:b % len(variants)]
        for v in order:
            for i in range(lo, hi):
                t = time.perf_counter()
                p, e = v.call(x[i:i + 1])  # (1, C, H, W)
                lat[v.name][i] = time.perf_counter() - t
                pred[v.name][i], exits[v.name][i] = p[0], e[0]
        console.print(f"batch 1: block {b + 1}/{blocks} done")
    for v in variants:  # untimed
        if v.deep is not None:
            deep[v.name] = np.concatenate([v.deep(x[i:i + BATCH]) for i in range(0, n, BATCH)])
    through = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            t = time.perf_counter()
            for i in range(0, n, BATCH):
                p, e = v.call(x[i:i + BATCH])
                if r == 0 and i + BATCH > t_n:  # images the batch-1 pass did not answer
                    keep = slice(max(t_n - i, 0), None)
                    pred[v.name][max(i, t_n):i + BATCH], exits[v.name][max(i, t_n):i + BATCH] = p[keep], e[keep]
            through[v.name].append(n / (time.perf_counter() - t))
        console.print(f"batch {BATCH}: round {r + 1}/{rounds} done")
    rows = {}
    for v in variants:
        ms = lat[v.name] * 1e3
        macs = v.macs(exits[v.name]).astype(np.float64)  # (N,)
        ips = statistics.median(through[v.name])
        rows[v.name] = {
            "precision": v.precision,
            "top1": round(float(100 * np.mean(pred[v.name] == labels)), 2),
            "deepest_top1": (round(float(100 * np.mean(deep[v.name] == labels)), 2)
                             if (deep[v.name] >= 0).all() else None),
            "timed_images": t_n, "ms_mean": float(ms.mean()), "ms_median": float(np.median(ms)),
            "ms_p99": float(np.percentile(ms, 99)),
            "batch32_img_s": ips, "batch32_img_s_rounds": through[v.name],
            "exit_fraction": [round(float(np.mean(exits[v.name] == i)), 4)
                              for i in range(int(exits[v.name].max()) + 1)],
            "mean_macs": float(macs.mean()),
            "g_op_s": 2 * float(macs.mean()) * ips / 1e9,  # achieved at batch 32
            "predictions_agree_with_eager": None,
        }
    if "torch-eager" in pred:
        for v in variants:
            rows[v.name]["predictions_agree_with_eager"] = round(float(np.mean(pred[v.name] == pred["torch-eager"])), 4)
    return rows


def test_savings(bundles: dict[str, Path], images: np.ndarray, labels: np.ndarray,
                 reached: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per certified INT8 bundle, on the test images (untimed): the MAC saving of its thresholds, the oracle's (each
    image leaves at the first exit answering as its certificate's reference does) and their ratio (issue 23's
    target), with the drop against that reference. Exits decide on the chain's confidences, as ``run`` does."""
    from edgekd.core.certify import oracle_saving, reference_answer
    from edgekd.core.early_exit import simulate
    from edgekd.core.manifest import load_manifest
    from edgekd.device.chain import Chain, full_probs

    m = load_manifest(bundles["int8"])  # the certified copies share its graphs: one pass serves them all
    p_full = full_probs(m.runner_backend, m.full_graph(), images, m.spec, m.num_exits)  # (E, N, K)
    with Chain.from_manifest(m) as chain:
        p_chain = chain.probs(images, m.spec)  # (E, N, K)
    out = {}
    for name, key in CERTIFIED.items():
        mk = load_manifest(bundles[key])
        reference = (mk.certificate_record or {}).get("reference") or f"exit{m.num_exits - 1}"
        ref = reference_answer(p_full, reference, mk.vote_weights)  # (N,)
        sim = simulate(p_chain, mk.thresholds, reached, labels)
        saving = 1.0 - sim.mean_cost / float(reached[-1])
        oracle = oracle_saving(p_chain, ref, reached)
        out[name] = {"reference": reference, "saving": saving, "oracle_saving": oracle,
                     "share_of_oracle": saving / oracle if oracle > 0 else float("nan"),
                     "accuracy": sim.accuracy, "reference_accuracy": float(100 * np.mean(ref == labels)),
                     "drop": float(100 * np.mean(ref == labels)) - sim.accuracy, "exit_fraction": sim.exit_fraction}
    return out


def exit_latency(bundles: dict[str, Path], x: np.ndarray, reps: int) -> dict[str, list[float]]:
    """Batch-1 median latency (ms) of ``--mode exit`` at each exit, per bundle (the plot's x positions)."""
    from edgekd.core.manifest import load_manifest
    from edgekd.device.runtime.pipeline import Pipeline

    out = {}
    for key, bundle in bundles.items():
        manifest = load_manifest(bundle)
        out[key] = []
        for k in range(manifest.num_exits):
            with Pipeline(manifest, mode="exit", exit=k) as pipe:
                out[key].append(1e3 * _median_s(lambda: pipe.infer(x[:1]), reps))
    return out


# ------------------------------------------------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> None:
    from rich.console import Console

    from edgekd.core.certify import stored_certificate
    from edgekd.core.manifest import load_manifest
    from edgekd.device.chain import normalized_batches
    from edgekd.device.machine import cpu_features, cpu_model

    console = Console()
    if args.threads:  # before torch or ONNX Runtime makes its thread pool
        import torch

        torch.set_num_threads(args.threads)
        os.environ["EDGEKD_THREADS"] = str(args.threads)
    if args.run:
        checkpoint, why = study_checkpoint(args.run)
    elif args.checkpoint is None:
        checkpoint, why = best_tskd_checkpoint()
    else:
        checkpoint, why = args.checkpoint, "given with --checkpoint"
    console.print(f"student: {checkpoint} — {why}")
    args.work.mkdir(parents=True, exist_ok=True)
    bundles = prepare(checkpoint, args.work, args.certify, args.epsilon, console)
    images, labels = test_split(args.data)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    fp32 = load_manifest(bundles["exported"])
    x = np.concatenate(list(normalized_batches(images, fp32.spec, 256)))  # (N, C, H, W) float32
    reached, deepest_macs, full_macs = _exit_macs(fp32)
    variants = [torch_variant(checkpoint, deepest_macs),
                pipeline_variant("ort-fp32-vote", bundles["exported"], "full-vote", reached),
                pipeline_variant("int8-vote", bundles["int8"], "full-vote", reached),
                pipeline_variant("int8-ee-certified", bundles["int8"], "early-exit", reached),
                pipeline_variant("int8-ee-heldout", bundles["int8-heldout"], "early-exit", reached),
                pipeline_variant("int8-ee-heldout-path", bundles["int8-heldout-path"], "early-exit", reached),
                pipeline_variant("int8-ee-point", bundles["int8-point"], "early-exit", reached),
                pipeline_variant("int8-ee-chain", bundles["int8"], "early-exit", reached, early_exit_graph="chain"),
                pipeline_variant("int8-ee-one-call", bundles["int8"], "early-exit", reached,
                                 early_exit_graph="one-call"),
                pipeline_variant("int8-ee-all-last", bundles["int8"], "early-exit", reached,
                                 early_exit_graph="one-call", threshold=1.5),
                pipeline_variant("int8-ee-all-exit0", bundles["int8"], "early-exit", reached,
                                 early_exit_graph="one-call", threshold=0.0)]
    console.print("peak matrix-multiply rates …")
    peaks = matmul_peaks(args.work)
    try:
        rows = measure(variants, x, labels, args.blocks, args.rounds, console, timed=args.timed)
    finally:
        for v in variants:
            v.close()
    per_exit = exit_latency({"fp32": bundles["exported"], "int8": bundles["int8"]}, x, 200)
    savings = test_savings(bundles, images, labels, reached)
    peaks_after = matmul_peaks(args.work)
    eager = rows["torch-eager"]
    for name, row in rows.items():
        row["speedup_vs_eager_batch1"] = eager["ms_mean"] / row["ms_mean"]
        row["speedup_vs_eager_batch32"] = row["batch32_img_s"] / eager["batch32_img_s"]
        peak = peaks["ort_int8"] if row["precision"] == "int8" else (
            peaks["torch_fp32"] if name == "torch-eager" else peaks["ort_fp32"])
        row["peak_g_op_s"] = peak
        row["share_of_peak"] = row["g_op_s"] / peak
    thresholds = {}
    for key in ("int8", "int8-heldout", "int8-heldout-path", "int8-point"):
        m = load_manifest(bundles[key])
        record = m.certificate_record
        cert = stored_certificate(record, m.thresholds)
        thresholds[key] = {"thresholds": m.thresholds, "certificate": cert.to_dict() if cert else None}
    result = {
        "student": str(Path(checkpoint).resolve().relative_to(ROOT)) if Path(checkpoint).resolve().is_relative_to(ROOT)
        else str(checkpoint), "why": why, "images": int(len(x)),
        "machine": {"cpu": cpu_model(), "features": cpu_features(), "cores": os.cpu_count(),
                    "load_before": os.getloadavg()},
        "threads": args.threads or os.cpu_count(), "certify_images": args.certify,
        "peaks_g_op_s": peaks, "peaks_after_g_op_s": peaks_after,
        "int8_over_fp32_peak": peaks["ort_int8"] / peaks["ort_fp32"],
        "macs": {"per_exit_reached": reached.tolist(), "deepest_only": deepest_macs, "full_graph": full_macs},
        "variants": rows, "exit_latency_ms": per_exit, "thresholds": thresholds, "test_savings": savings,
        "epsilon": args.epsilon,
        "blocks": args.blocks, "rounds": args.rounds, "batch": BATCH, "timed_images": min(args.timed or len(x), len(x)),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "scripts/bench_e2e.py" + (f" --run {args.run}" if args.run else "")
        + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
        + (f" --certify {args.certify}" if args.certify != CERTIFY_IMAGES else "")
        + (f" --epsilon {args.epsilon:g}" if args.epsilon != EPSILON else "")
        + (f" --rounds {args.rounds}" if args.rounds != 3 else "")
        + (f" --timed {args.timed}" if args.timed else "")
        + (f" --limit {args.limit}" if args.limit else "") + (f" --threads {args.threads}" if args.threads else ""),
    }
    write_result(args.result, result)
    print(report(result))


def report(r: dict[str, Any]) -> str:
    """The Markdown table and the verdict on the two speed targets."""
    from edgekd.device.machine import SPEED_FEATURES

    rows = r["variants"]
    features = r["machine"].get("features")
    isa = "" if features is None else f" ({', '.join(features) or 'none of ' + ', '.join(SPEED_FEATURES)})"
    out = [f"Student: `{r['student']}` ({r['why']}); {r['images']:,} test images; {r['machine']['cpu']}{isa}, "
           f"{r['machine']['cores']} cores, {r.get('threads', r['machine']['cores'])} thread(s)"
           + (f"; batch 1 timed on the first {r['timed_images']:,} (top-1 on all)"
              if r.get("timed_images", r["images"]) < r["images"] else "") + ". "
           f"Matrix-multiply peaks: ONNX Runtime FP32 "
           f"{r['peaks_g_op_s']['ort_fp32']:.0f} GFLOP/s, INT8 {r['peaks_g_op_s']['ort_int8']:.0f} GOP/s "
           f"(×{r['int8_over_fp32_peak']:.2f}), torch FP32 {r['peaks_g_op_s']['torch_fp32']:.0f} GFLOP/s.", "",
           "| variant | top-1 | deepest exit top-1 | batch-1 mean ms | median | p99 | × eager (batch 1) | "
           "batch-32 img/s | × eager (batch 32) | exits reached | G(FL)OP/s | % of peak |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for name in VARIANTS:
        v = rows.get(name)
        if v is None:
            continue
        deep = f"{v['deepest_top1']:.2f}" if v["deepest_top1"] is not None else "–"
        frac = " / ".join(f"{100 * f:.0f}%" for f in v["exit_fraction"])
        out.append(f"| {name} | {v['top1']:.2f} | {deep} | {v['ms_mean']:.3f} | {v['ms_median']:.3f} | "
                   f"{v['ms_p99']:.3f} | {v['speedup_vs_eager_batch1']:.1f} | {v['batch32_img_s']:.0f} | "
                   f"{v['speedup_vs_eager_batch32']:.1f} | {frac} | {v['g_op_s']:.1f} | "
                   f"{100 * v['share_of_peak']:.1f} |")
    eager, vote = rows.get("torch-eager"), rows.get("int8-vote")
    for name, key in CERTIFIED.items():
        ee = rows.get(name)
        if not (ee and eager and vote):
            continue
        s1, s2 = eager["ms_mean"] / ee["ms_mean"], vote["ms_mean"] / ee["ms_mean"]
        cert = r["thresholds"][key]["certificate"] or {}
        ok1 = s1 >= TARGET_EAGER and ee["top1"] >= eager["top1"]
        ok2 = s2 >= TARGET_VOTE
        out += ["", f"`{name}` (certified on {cert.get('n', '?')} images: at most "
                f"{cert.get('epsilon', float('nan')):g} "
                f"points lost against {cert.get('reference', '?')} at δ {cert.get('delta', '?')}; "
                f"certified: {cert.get('certified')}):",
                f"- target 1 (≥ {TARGET_EAGER:g}× faster than PyTorch eager at equal or better top-1): {s1:.1f}×, "
                f"top-1 {ee['top1']:.2f} vs {eager['top1']:.2f} — **{'met' if ok1 else 'not met'}**;",
                f"- target 2 (≥ {TARGET_VOTE:g}× faster than INT8 full vote within the certified budget): {s2:.2f}×, "
                f"top-1 {ee['top1']:.2f} vs {vote['top1']:.2f} — **{'met' if ok2 else 'not met'}**;"]
        change = ee["top1"] - vote["top1"]
        ok3 = s2 >= TARGET_EE_VS_FULL and -change <= TARGET_EE_DROP and s1 >= TARGET_EAGER
        out.append(f"- issue 23 (≥ {TARGET_EE_VS_FULL:g}× the INT8 full graph at ≤ {TARGET_EE_DROP:g} point below it, "
                   f"and ≥ {TARGET_EAGER:g}× eager): {s2:.2f}×, top-1 {change:+.2f} against it, {s1:.1f}× eager — "
                   f"**{'met' if ok3 else 'not met'}**" + (";" if name in r.get("test_savings", {}) else "."))
        sv = r.get("test_savings", {}).get(name)
        if sv:
            ok4 = sv["share_of_oracle"] >= TARGET_ORACLE_SHARE
            out.append(f"- issue 23 (certified MAC saving on test ≥ {100 * TARGET_ORACLE_SHARE:.0f}% of the oracle's): "
                       f"{100 * sv['saving']:.1f}% of {100 * sv['oracle_saving']:.1f}% = "
                       f"{100 * sv['share_of_oracle']:.0f}% (top-1 against {sv['reference']} on test "
                       f"{-sv['drop']:+.2f}) — **{'met' if ok4 else 'not met'}**.")
    last, exit0 = rows.get("int8-ee-all-last"), rows.get("int8-ee-all-exit0")
    if vote and last and exit0:
        share = r["macs"]["per_exit_reached"][0] / r["macs"]["per_exit_reached"][-1]
        ratio_last, ratio0 = last["ms_median"] / vote["ms_median"], exit0["ms_median"] / vote["ms_median"]
        out += ["", "Early-exit machinery (issue 23, batch-1 medians against `int8-vote`, the INT8 full graph):",
                f"- every image at the last exit: {ratio_last:.3f}× (target ≤ {TARGET_ALL_LAST:g}×) — "
                f"**{'met' if ratio_last <= TARGET_ALL_LAST else 'not met'}**;",
                f"- every image at exit 0: {100 * ratio0:.0f}% of the full graph's latency against its "
                f"{100 * share:.0f}% share of the MACs (target: within {TARGET_EXIT0_POINTS:g} points) — "
                f"**{'met' if 100 * (ratio0 - share) <= TARGET_EXIT0_POINTS else 'not met'}**."]
    lat = r.get("exit_latency_ms", {}).get("int8")
    if lat and vote:
        out += ["", f"The most early exit could gain over the INT8 full vote on this machine, if every image left at "
                f"exit 0: {vote['ms_median']:.3f} / {lat[0]:.3f} ms = {vote['ms_median'] / lat[0]:.2f}× (batch-1 "
                f"medians; INT8 `--mode exit` latency per exit: {' / '.join(f'{t:.3f}' for t in lat)} ms)."]
    return "\n".join(out) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    """Accuracy vs batch-1 latency: the benchmark's variants (black markers), and every study variant's exits (mean
    test top-1 over its seeds, one line per variant) at the INT8 bundle's exit latency (``--mode exit``); the
    single-exit variants at the INT8 full graph's (the same backbone: the closest graph measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    markers = dict(zip(VARIANTS, ("s", "^", "D", "*", "X", "P", "p", "v", "<", ">", "h")))
    for name, v in r["variants"].items():
        ax.scatter(v["ms_mean"], v["top1"], s=90 if name in CERTIFIED else 55, marker=markers.get(name, "o"),
                   color="black", zorder=3, label=name)
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for s in (json.loads(p.read_text()) for p in STUDY.glob("n5k-*.json")):
        if s.get("test"):
            by_variant.setdefault(s["variant"], []).append(s)
    lat = r["exit_latency_ms"]["int8"]
    single = r["variants"]["int8-vote"]["ms_mean"] if "int8-vote" in r["variants"] else lat[-1]
    for variant, rs in sorted(by_variant.items()):
        n_exits = len(rs[0]["test"]["exits"])
        xs = lat if n_exits == len(lat) else [single]
        ys = [float(np.mean([s["test"]["exits"][i] for s in rs])) for i in range(n_exits)]
        ax.plot(xs, ys, marker="o", linewidth=1, alpha=0.8, label=f"study: {variant}, exits ({len(rs)} seed(s))")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("batch-1 latency per image, ms (log scale)")
    ax.set_ylabel("CIFAR-10 test top-1, %")
    features = r["machine"].get("features")
    ax.set_title(f"accuracy vs latency, {r['images']:,} test images — {r['machine']['cpu']}"
                 f"{'' if features is None else ' (' + (', '.join(features) or 'no listed ISA extension') + ')'}, "
                 f"{r['machine']['cores']} cores", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="the student (default: the study's best TSKD run by validation)")
    ap.add_argument("--run", help="the study run whose best.pt is the student (scripts/bench_accuracy.py --plan lists "
                    "them); the result goes to e2e/RUN.json and the bundles to runs/e2e/RUN unless said otherwise")
    ap.add_argument("--data", type=Path, help="an npz with x_test / y_test (default: the shared CIFAR-10 test split)")
    ap.add_argument("--work", type=Path, help="exported and built bundles (cached; default runs/e2e)")
    ap.add_argument("--result", type=Path)
    ap.add_argument("--threads", type=int, help="threads for torch and ONNX Runtime alike (default: every core); "
                    "the result goes to e2e-threads{N}.json unless --result says otherwise")
    ap.add_argument("--certify", type=int, default=CERTIFY_IMAGES,
                    help="held-out training images int8-ee-heldout's thresholds are certified on")
    ap.add_argument("--epsilon", type=float, default=EPSILON,
                    help="their budget: points of top-1 early exit may lose against the full answer")
    ap.add_argument("--limit", type=int, help="only the first N test images (a quick try, or a large model in a short "
                    "session: say so wherever its figures are quoted)")
    ap.add_argument("--blocks", type=int, default=10, help="interleaving blocks of the batch-1 pass")
    ap.add_argument("--rounds", type=int, default=3, help="batch-32 passes per variant (at least 1)")
    ap.add_argument("--timed", type=int, help="time batch 1 on the first N test images only (top-1 still covers "
                    "every image: the rest are answered in the first batch-32 round); for a large model")
    ap.add_argument("--report", action="store_true", help="print the Markdown table of --result and exit")
    ap.add_argument("--plot", type=Path, help="draw the accuracy-vs-latency plot from --result to this PNG and exit")
    args = ap.parse_args()
    if args.run and args.checkpoint:
        ap.error("--run and --checkpoint both name the student; give one")  # exit 2, one line
    if args.rounds < 1 or (args.timed is not None and args.timed < args.blocks):
        ap.error("--rounds must be at least 1 and --timed at least --blocks")
    if args.work is None:
        args.work = ROOT / "runs" / "e2e" / (args.run or "")
    if args.result is None:
        stem = args.run or "e2e"
        args.result = RESULT.with_name(f"{stem}-threads{args.threads}.json" if args.threads else f"{stem}.json")
    if args.report or args.plot:
        if not args.result.exists():
            fail(f"{args.result} does not exist yet (run the benchmark first)")
        r = json.loads(args.result.read_text())
        if args.plot:
            plot(r, args.plot)
        if args.report:
            print(report(r))
        return
    run(args)


if __name__ == "__main__":
    main()

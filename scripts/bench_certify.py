"""Benchmark (issue 11): certified early-exit thresholds vs the point fit (not certified), on CIFAR-10.

A multi-exit CIFAR ResNet-20 (BYOT, 10,000 training images, 10 epochs) is exported, and its built segment chain's
per-exit probabilities on the 10,000 CIFAR-10 test images become a pool. For each budget ε and each of ``--splits``
random calibration/test splits of the pool, thresholds are chosen on the calibration part and judged on the test
part against the reference (the bundle's best full answer, chosen on the calibration part):

* ``certified``: :func:`edgekd.core.certify.certify_thresholds` at confidence 1 − δ;
* ``point``: the point fit, the minimum-cost one (:func:`edgekd.core.early_exit.fit_thresholds`, within ε of the
  reference on the calibration part), what `build` did before.

Reported per (fit, ε, calibration size): the realized test drop (mean and 90th percentile), the violation rate (share
of splits whose test drop exceeds ε), and the mean MACs saved. Resumable: every step skips what exists (the subset,
the run — resumed if interrupted —, the bundle, the pool under ``--work``; each result file under ``--results``,
committed in ``docs/benchmarks/certify/``).

    .venv/bin/python scripts/bench_certify.py --work runs/certify            # ~10 min on 2 cores, most of it training
    .venv/bin/python scripts/bench_certify.py --work runs/certify --fixture tests/fixtures/cifar10-resnet20-chain.npz
    .venv/bin/python scripts/bench_certify.py --families tests/fixtures/cifar10-resnet20-chain.npz --epsilons 1,2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, cifar10_parts, write_result

EDGEKD = [sys.executable, "-m", "edgekd"]


def subset(work: Path) -> Path:
    """10,000 training images (a prefix of the shuffled shared copy: balanced) and the 10,000 test images."""
    out = work / "cifar10-10k.npz"
    if not out.exists():
        p0, p1 = (np.load(p) for p in cifar10_parts()[:2])
        np.savez(out, x_train=p0["x_train"][:10000], y_train=p0["y_train"][:10000], x_test=p1["x_test"],
                 y_test=p1["y_test"], classes=p0["classes"])
    return out


def student(work: Path, data: Path, epochs: int) -> Path:
    """Train (or resume) the BYOT ResNet-20; returns best.pt."""
    run = work / "student"
    metrics = run / "metrics.jsonl"
    if metrics.exists() and len(metrics.read_text().splitlines()) >= epochs and (run / "best.pt").exists():
        return run / "best.pt"  # finished
    resume = ["--resume"] if (run / "last.pt").exists() else ["--force"]
    subprocess.run([*EDGEKD, "train", "--data", str(data), "--model", "resnet20", "--method", "byot", "--epochs",
                    str(epochs), "--out", str(run), "--no-export", *resume], check=True)
    return run / "best.pt"


def pool(work: Path, checkpoint: Path, data: Path) -> Path:
    """The exported bundle's chain probabilities (E, N, K) on the test images, and the labels."""
    out = work / "pool-fp32.npz"
    if out.exists():
        return out
    bundle = work / "bundle"
    if not (bundle / "manifest.json").exists():
        subprocess.run([*EDGEKD, "export", str(checkpoint), "-o", str(bundle), "--force"], check=True)
    from edgekd.core.labelled import load_labelled
    from edgekd.core.manifest import load_manifest
    from edgekd.device.chain import Chain, full_probs

    m = load_manifest(bundle)
    images, labels, _ = load_labelled(data, m.spec)  # the x_test / y_test pair
    with Chain.from_manifest(m) as chain:
        p_chain = chain.probs(images, m.spec)  # (E, N, K)
    p_full = full_probs(m.runner_backend, m.full_graph(), images, m.spec, m.num_exits)
    np.savez_compressed(out, chain=p_chain.astype(np.float16), full=p_full.astype(np.float16), labels=labels,
                        macs=np.array([e.macs for e in m.exits], dtype=np.float64))
    return out


def one_split(chain, full, labels, macs, latency, cal, test, epsilon: float, delta: float) -> dict:
    """Certified and point fits on ``cal``, judged on ``test``: drop (points) against the reference, MACs saved."""
    from edgekd.core.certify import early_exit_thresholds, reference_answer
    from edgekd.core.early_exit import simulate

    # exactly what `edgekd build --fit certified|point` stores, fitted on the calibration part only
    fits = {fit: early_exit_thresholds(chain[:, cal], full[:, cal], labels[cal], macs, epsilon=epsilon, delta=delta,
                                       fit=fit) for fit in ("certified", "point")}
    cert = fits["certified"]
    ref_test = 100.0 * np.mean(reference_answer(full[:, test], cert.reference) == labels[test])
    out = {}
    for fit, record in fits.items():
        res = simulate(chain[:, test], record.thresholds, macs, labels[test])
        lat = float(np.asarray(latency)[res.exit_taken].mean() / latency[-1]) if latency is not None else None
        out[fit] = {"drop": float(ref_test - res.accuracy), "saving": float(1.0 - res.mean_cost / macs[-1]),
                    "latency_saving": None if lat is None else 1.0 - lat,
                    "certified": bool(cert.certified) if fit == "certified" else None}
    return out


def exit_latency(work: Path):
    """Median batch-1 latency of answering at each exit (ms), from a profile of the FP32 build when one exists
    (``edgekd profile runs/certify/bundle-fp32 … --out runs/certify/profile``); None otherwise."""
    report = work / "profile" / "report.json"
    if not report.exists():
        return None
    bundle = json.loads(report.read_text())["bundles"][0]
    return [bundle["latency"][f"exit{i}"]["latency"]["median"] for i in range(bundle["num_exits"])]


def study(pool_path: Path, work: Path, splits: int, sizes: list[int], epsilons: list[float], delta: float,
          results_dir: Path) -> dict:
    with np.load(pool_path) as f:
        chain, full, labels, macs = (f["chain"].astype(np.float32), f["full"].astype(np.float32), f["labels"],
                                     f["macs"])
    n = labels.size
    latency = exit_latency(work)
    results = {}
    for size in sizes:
        for eps in epsilons:
            key = f"n{size}-eps{eps:g}"
            path = results_dir / f"{key}.json"
            if path.exists():
                results[key] = json.loads(path.read_text())
                continue
            rng = np.random.default_rng(0)
            rows = []
            for _ in range(splits):
                perm = rng.permutation(n)
                cal, test = perm[:size], perm[size:]
                rows.append(one_split(chain, full, labels, macs, latency, cal, test, eps, delta))
            summary = {"n_cal": size, "n_test": n - size, "epsilon": eps, "delta": delta, "splits": splits}
            for fit in ("certified", "point"):
                drops = np.array([r[fit]["drop"] for r in rows])
                savings = np.array([r[fit]["saving"] for r in rows])
                lat = [r[fit]["latency_saving"] for r in rows]
                summary[fit] = {"violation_rate": float(np.mean(drops > eps)), "drop_mean": float(drops.mean()),
                                "drop_p90": float(np.quantile(drops, 0.9)), "saving_mean": float(savings.mean()),
                                "latency_saving_mean": None if lat[0] is None else float(np.mean(lat))}
            summary["certified"]["certified_share"] = float(np.mean([r["certified"]["certified"] for r in rows]))
            write_result(path, summary)
            results[key] = summary
            print(json.dumps(summary))
    return results


def table(results: dict) -> str:
    lines = ["| calibration images | ε (points) | fit | violation rate | test drop mean / p90 | MACs saved | "
             "latency saved | certified in |", "|---:|---:|:---|---:|---:|---:|---:|---:|"]
    for r in results.values():
        for fit in ("certified", "point"):
            s = r[fit]
            share = f"{100 * s['certified_share']:.0f}% of splits" if fit == "certified" else "-"
            lat = s.get("latency_saving_mean")
            lat = "-" if lat is None else f"{100 * lat:.1f}%"
            lines.append(f"| {r['n_cal']} | {r['epsilon']:g} | {fit} | {100 * s['violation_rate']:.0f}% | "
                         f"{s['drop_mean']:.2f} / {s['drop_p90']:.2f} | {100 * s['saving_mean']:.1f}% | {lat} | "
                         f"{share} |")
    return "\n".join(lines)


def families(pool_path: Path, splits: int, n_cal: int, epsilons: list[float], delta: float) -> str:
    """Issue 23: the certified families and losses side by side on one pool — one global threshold or a learned
    path of per-exit thresholds, with labels or label-free (disagreement with the deepest exit) — each judged on the
    held-out part of ``splits`` random splits: mean MAC saving, mean test drop against the deepest exit, violation
    rate (test drop above ε), and the oracle's saving. A Markdown table."""
    from edgekd.core.certify import early_exit_thresholds
    from edgekd.core.early_exit import simulate

    with np.load(pool_path) as f:
        chain, labels, macs = f["chain"].astype(np.float32), f["labels"].astype(np.int64), f["macs"].astype(float)
    rows = ["| ε | family | loss | saving | test drop | violations | oracle saving |", "|---:|---|---|---:|---:|---:|---:|"]
    for eps in epsilons:
        rng = np.random.default_rng(0)
        found: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for _ in range(splits):
            perm = rng.permutation(labels.size)
            cal, test = perm[:n_cal], perm[n_cal:]
            ref = 100 * np.mean(chain[-1, test].argmax(1) == labels[test])
            for family in ("global", "path"):
                for loss, lab in (("labelled", labels[cal]), ("disagreement", None)):
                    cert = early_exit_thresholds(chain[:, cal], chain[:, cal], lab, macs, epsilon=eps, delta=delta,
                                                 family=family, reference=f"exit{len(macs) - 1}")
                    res = simulate(chain[:, test], cert.thresholds, macs, labels[test])
                    found.setdefault((family, loss), []).append(
                        (1 - res.mean_cost / macs[-1], ref - res.accuracy, cert.oracle_saving))
        for (family, loss), v in found.items():
            a = np.asarray(v)
            rows.append(f"| {eps:g} | {family} | {loss} | {100 * a[:, 0].mean():.1f}% | {a[:, 1].mean():.2f} | "
                        f"{np.mean(a[:, 1] > eps):.2f} | {100 * a[:, 2].mean():.1f}% |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "certify")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--sizes", default="500,5000")
    ap.add_argument("--epsilons", default="0.5,1,2")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--results", type=Path, default=RESULTS / "certify",
                    help="one small JSON per (calibration size, ε), committed; a finished one is not rerun")
    ap.add_argument("--fixture", type=Path, help="also write a 4,000-image float16 sample of the pool here")
    ap.add_argument("--families", type=Path, metavar="POOL",
                    help="only compare the certified families and losses on this pool (e.g. the fixture) and exit")
    args = ap.parse_args()
    if args.families:
        print(families(args.families, min(args.splits, 20), 2000, [float(e) for e in args.epsilons.split(",")],
                       args.delta))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    data = subset(args.work)
    pool_path = pool(args.work, student(args.work, data, args.epochs), data)
    if args.fixture:
        with np.load(pool_path) as f:
            keep = np.sort(np.random.default_rng(1).choice(f["labels"].size, 4000, replace=False))
            np.savez_compressed(args.fixture, chain=f["chain"][:, keep], labels=f["labels"][keep], macs=f["macs"])
    results = study(pool_path, args.work, args.splits, [int(s) for s in args.sizes.split(",")],
                    [float(e) for e in args.epsilons.split(",")], args.delta, args.results)
    print(table(results))


if __name__ == "__main__":
    main()

"""``edgekd profile``: latency and accuracy per exit, the early-exit trade-off, for one or several bundles.

For each bundle: the environment; accuracy per exit and per vote rule on labelled data (the bundle's validation
sample by default); latency per stage, per exit (chained) and of the full graph; the early-exit sweep with the
manifest's operating point and the Pareto front; energy per inference where power rails exist. Everything goes to
``report.json`` in ``--out`` and to a terminal table. ``--write-thresholds`` refits the operating point and stores it
in the bundle's manifest (atomically; nothing else in the manifest changes).

Not yet here (issue 5 continues): report.md, the PNG plots, and the pre/network/post split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekd.build import evaluate as ev
from edgekd.core.atomic import atomic_write_json
from edgekd.core.early_exit import fit_thresholds
from edgekd.core.manifest import Manifest, load_manifest, write_manifest
from edgekd.core.vote import accuracy, vote
from edgekd.profile.energy import NOT_AVAILABLE, find_rails
from edgekd.profile.environment import describe_environment
from edgekd.profile.latency import stage_latencies
from edgekd.profile.sweep import accuracy_table, pareto_front, sweep

REPORT_VERSION = 1


def _backend(m: Manifest) -> str:
    return "onnxruntime" if m.backend == "onnx" else m.backend


def _val_sample(m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    with np.load(m.file("val_sample")) as f:
        return f["images"], f["labels"]


def _probs(m: Manifest, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, N, K) probabilities of the full graph and of the chained stages."""
    backend = _backend(m)
    full = ev.open_runners(backend, [m.full_graph()])
    try:
        p_full = ev.run_full(full[0], images, m.spec, m.num_exits)
    finally:
        ev.close_runners(full)
    stages = ev.open_runners(backend, [m.stage_graph(i) for i in range(m.num_exits)])
    try:
        p_chain = ev.run_chain(stages, images, m.spec)
    finally:
        ev.close_runners(stages)
    return p_full, p_chain


def profile_bundle(path: str | Path, *, iterations: int = 200, duration_s: float | None = None,
                   warmup_s: float = 0.2, batch: int = 8) -> dict[str, Any]:
    """Everything the report says about one bundle."""
    m = load_manifest(path)
    images, labels = _val_sample(m)
    p_full, p_chain = _probs(m, images)
    weights = m.vote_weights
    latency = stage_latencies(m, batch=batch, iterations=iterations, duration_s=duration_s, warmup_s=warmup_s)
    exit_ms = [latency[f"exit{i}"]["latency"]["median"] for i in range(m.num_exits)]
    macs = [float(e["macs"]) for e in m.exits]
    points = sweep(p_chain, labels, macs, exit_ms, fitted=m.thresholds)
    rails = find_rails()
    return {
        "name": Path(path).name, "path": str(path), "precision": m.precision,
        "backend": _backend(m), "environment": describe_environment(_backend(m)),
        "data": {"source": "val_sample", "n": int(labels.size)},
        "accuracy": accuracy_table(p_full, labels, weights),
        "latency": latency,
        "sweep": points, "pareto": pareto_front(points),
        "operating_point": next(p for p in points if p["operating_point"]),
        "energy": NOT_AVAILABLE if not rails else {"rails": [r.name for r in rails], "per_inference_j": "not measured yet"},
    }


def write_thresholds(path: str | Path, *, target_drop: float) -> list[float]:
    """Refit per-exit thresholds on the validation sample (within ``target_drop`` of the vote, lowest MACs) and
    store them in the manifest; every other field stays as it was."""
    m = load_manifest(path)
    images, labels = _val_sample(m)
    p_full, p_chain = _probs(m, images)
    w = np.asarray(m.vote_weights) if m.vote_weights else None
    ref = accuracy(vote(p_full, m.vote_rule, w), labels)
    fit = fit_thresholds(p_chain, labels, [e["macs"] for e in m.exits], reference_accuracy=ref,
                         target_drop=target_drop)
    data = dict(m.data)
    data["thresholds"] = fit.thresholds
    write_manifest(m.root, data)
    return fit.thresholds


def profile(bundles: list[str | Path], out: str | Path, *, console: Console | None = None,
            write: bool = False, target_drop: float = 0.5, **measure: Any) -> dict[str, Any]:
    """Profile every bundle, write ``out/report.json``, print the table; return the report."""
    console = console or Console()
    if write:
        for b in bundles:
            console.print(f"{b}: thresholds set to {write_thresholds(b, target_drop=target_drop)}")
    report = {"report_version": REPORT_VERSION, "bundles": [profile_bundle(b, **measure) for b in bundles]}
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    print_report(console, report)
    console.print(f"report: {out / 'report.json'}")
    return report


def print_report(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="edgekd profile: per exit (batch 1, median ms; top-1 on the validation sample)")
    for col in ("bundle", "exit", "stage ms", "cumulative ms", "p99 ms", "top-1", "top-5"):
        table.add_column(col, justify="right")
    for b in report["bundles"]:
        lat = b["latency"]
        for row in b["accuracy"]["exits"]:
            i = row["exit"]
            table.add_row(f"{b['name']} ({b['precision']})", str(i), f"{lat[f'stage{i}']['latency']['median']:.3f}",
                          f"{lat[f'exit{i}']['latency']['median']:.3f}", f"{lat[f'exit{i}']['latency']['p99']:.3f}",
                          f"{row['top1']:.2f}", f"{row['top5']:.2f}")
        op = b["operating_point"]
        table.add_row(f"{b['name']} ({b['precision']})", "early exit", "", f"{op['mean_latency_ms']:.3f}", "",
                      f"{op['accuracy']:.2f}", "", style="bold")
        table.add_row(f"{b['name']} ({b['precision']})", "full graph", "", f"{lat['full']['latency']['median']:.3f}",
                      f"{lat['full']['latency']['p99']:.3f}", f"{b['accuracy']['vote']['soft']:.2f}", "")
    console.print(table)
    for b in report["bundles"]:
        for key in ("full",):
            warning = b["latency"][key]["latency"].get("warning")
            if warning:
                console.print(f"[yellow]warning[/] {b['name']} {key}: {warning}")
        advice = b["environment"].get("advice")
        if advice:
            console.print(f"[yellow]note:[/] {advice}")

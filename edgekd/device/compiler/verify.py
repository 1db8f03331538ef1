"""Verification after a build: the built graphs against the FP32 reference on the bundle's validation sample."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekd.core.vote import accuracy, vote


def compare(built: np.ndarray, reference: np.ndarray, labels: np.ndarray, rule: str,
            weights: list[float] | None) -> dict[str, Any]:
    """Per exit and for the vote: top-1 of each, the drop (reference − built, points) and top-1 agreement (%)."""
    w = np.asarray(weights) if weights is not None else None
    rows = []
    for i in range(built.shape[0]):
        rows.append(_row(f"exit{i}", built[i].argmax(1), reference[i].argmax(1), labels))
    rows.append(_row(f"vote:{rule}", vote(built, rule, w), vote(reference, rule, w), labels))
    return {"rows": rows, "max_drop": max(r["drop"] for r in rows), "n": int(labels.size)}


def _row(name: str, built_pred: np.ndarray, ref_pred: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    built_acc, ref_acc = accuracy(built_pred, labels), accuracy(ref_pred, labels)
    return {"name": name, "reference_top1": ref_acc, "built_top1": built_acc, "drop": ref_acc - built_acc,
            "agreement": float(100.0 * np.mean(built_pred == ref_pred))}


def print_verification(console: Console, report: dict[str, Any], precision: str, max_drop: float) -> None:
    table = Table(title=f"verification: {precision} vs fp32 on {report['n']} validation images")
    for col in ("output", "fp32 top-1", f"{precision} top-1", "drop", "agreement"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        style = "red" if r["drop"] > max_drop else ""
        table.add_row(r["name"], f"{r['reference_top1']:.2f}", f"{r['built_top1']:.2f}", f"{r['drop']:+.2f}",
                      f"{r['agreement']:.1f}%", style=style)
    console.print(table)

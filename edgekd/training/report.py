"""Terminal tables shared by train, quickstart and (later) build/profile. Torch-free."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def print_exit_table(console: Console, exit_info: list[dict[str, Any]], val: dict[str, Any],
                     test: dict[str, Any] | None, *, title: str = "") -> None:
    """Per-exit and per-vote-rule top-1 (%), with each exit's stage and cumulative MACs."""
    table = Table(title=title or None)
    for col in ("exit", "stage", "MMACs", "val top-1", "test top-1"):
        table.add_column(col, justify="right")
    for info, acc in zip(exit_info, val["exits"]):
        i = info["index"]
        table.add_row(str(i), str(info["stage"]), f"{info['macs'] / 1e6:.2f}", _fmt(acc),
                      _fmt(test["exits"][i] if test else None))
    for rule, acc in val["vote"].items():
        table.add_row(f"vote:{rule}", "", "", _fmt(acc), _fmt(test["vote"][rule] if test else None))
    console.print(table)

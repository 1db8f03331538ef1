"""Verification after a build: the built graphs against the FP32 reference on the bundle's validation sample.

A drop measured on a few hundred images is mostly noise: on 500 images a 1.4-point drop with 97% agreement has a
paired standard error near one point. So every output (each exit and the vote) is judged by a paired comparison of
the images where built and reference disagree (:mod:`edgekd.core.stats`): the drop, its two-sided confidence interval
(:data:`edgekd.device.options.VERDICT_CONFIDENCE`) and the exact McNemar p-value of "no drop at all". Its verdict
against ``--max-drop``:

* ``within``: the whole interval is at or below the budget;
* ``over``: the whole interval is above it -- the drop is confidently too large (the build fails, or mixed
  precision steps in);
* ``undecided``: the interval holds the budget: this sample cannot tell the drop from the budget, and the report
  says about how many images would (:func:`edgekd.core.stats.images_to_decide`).

The report's verdict is the worst of its rows (over, then undecided, then within). The report is a frozen
:class:`Verification` of :class:`VerificationRow`; build keeps its JSON (:meth:`Verification.to_json`) under the
manifest's ``build.verification``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from edgekd.core.stats import drop_interval, images_to_decide, mcnemar_p
from edgekd.core.vote import accuracy, vote
from edgekd.device.options import VERDICT_CONFIDENCE

WITHIN, UNDECIDED, OVER = "within", "undecided", "over"
VERDICTS = (WITHIN, UNDECIDED, OVER)  # best to worst
METHOD = "paired: Tango score interval of the drop, exact McNemar p-value of no drop"


_ROW_KEYS = ("name", "reference_top1", "built_top1", "drop", "agreement", "lost", "gained", "interval", "p_value",
             "verdict", "images_to_decide")


@dataclass(frozen=True)
class VerificationRow:
    """One output (``exit{i}`` or ``vote:RULE``): top-1 of the reference and of the built graph (%), the drop
    (reference − built, points), top-1 agreement (%), the images lost and gained, the drop's interval, the McNemar
    p-value, the verdict against the budget, and for an undecided one about how many images would decide it."""

    name: str
    reference_top1: float
    built_top1: float
    drop: float
    agreement: float
    lost: int
    gained: int
    interval: Tuple[float, float]
    p_value: float
    verdict: str
    images_to_decide: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        out = {key: getattr(self, key) for key in _ROW_KEYS}
        out["interval"] = list(self.interval)
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> VerificationRow:
        lo, hi = data["interval"]
        return cls(**{**{key: data[key] for key in _ROW_KEYS if key != "interval"}, "interval": (lo, hi)})


@dataclass(frozen=True)
class Verification:
    """The paired comparison of a built graph with the FP32 reference: one row per exit and one for the vote, the
    largest drop, the images it rests on, the worst verdict, the intervals' confidence and the method's name."""

    rows: Tuple[VerificationRow, ...]
    max_drop: float
    n: int
    verdict: str
    confidence: float
    method: str = METHOD

    def to_json(self) -> Dict[str, Any]:
        """The JSON build keeps under ``build.verification`` (keys and values as before this was a dataclass)."""
        return {"rows": [r.to_json() for r in self.rows], "max_drop": self.max_drop, "n": self.n,
                "verdict": self.verdict, "confidence": self.confidence, "method": self.method}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Verification:
        """Inverse of :meth:`to_json` (extra keys, such as build's ``max_drop_allowed``, are not the report's)."""
        return cls(tuple(VerificationRow.from_json(r) for r in data["rows"]), data["max_drop"], data["n"],
                   data["verdict"], data["confidence"], data.get("method", METHOD))

    def over_rows(self) -> List[VerificationRow]:
        """The rows whose drop is confidently over the budget."""
        return [r for r in self.rows if r.verdict == OVER]

    @property
    def mean_drop(self) -> float:
        return float(np.mean([r.drop for r in self.rows]))


def compare(built: np.ndarray, reference: np.ndarray, labels: np.ndarray, rule: str,
            weights: list[float] | None, *, max_drop: float, confidence: float = VERDICT_CONFIDENCE) -> Verification:
    """Per exit and for the vote: top-1 of each, the drop (reference − built, points), top-1 agreement (%), the
    paired counts, the drop's interval, the McNemar p-value and the verdict against ``max_drop``.

    ``built`` and ``reference`` are (E, N, K) probabilities of the same N images, ``labels`` (N,)."""
    w = np.asarray(weights) if weights is not None else None
    rows = []
    for i in range(built.shape[0]):
        rows.append(_row(f"exit{i}", built[i].argmax(1), reference[i].argmax(1), labels, max_drop, confidence))
    rows.append(_row(f"vote:{rule}", vote(built, rule, w), vote(reference, rule, w), labels, max_drop, confidence))
    return Verification(tuple(rows), max(r.drop for r in rows), int(labels.size), worst(r.verdict for r in rows),
                        confidence)


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index)


def _row(name: str, built_pred: np.ndarray, ref_pred: np.ndarray, labels: np.ndarray, max_drop: float,
         confidence: float) -> VerificationRow:
    built_ok, ref_ok = built_pred == labels, ref_pred == labels
    n = int(labels.size)
    lost, gained = int(np.sum(ref_ok & ~built_ok)), int(np.sum(~ref_ok & built_ok))
    lo, hi = drop_interval(lost, gained, n, confidence)
    verdict = WITHIN if hi <= max_drop else OVER if lo > max_drop else UNDECIDED
    return VerificationRow(name=name, reference_top1=accuracy(ref_pred, labels),
                           built_top1=accuracy(built_pred, labels), drop=100.0 * (lost - gained) / n,
                           agreement=float(100.0 * np.mean(built_pred == ref_pred)), lost=lost, gained=gained,
                           interval=(lo, hi), p_value=mcnemar_p(lost, gained), verdict=verdict,
                           images_to_decide=images_to_decide(lost, gained, n, max_drop, confidence)
                           if verdict == UNDECIDED else None)


def verdict_line(report: Verification, precision: str, max_drop: float) -> str:
    """One sentence: what the sample says about the drop against ``max_drop``."""
    n, pct = report.n, f"{100 * report.confidence:g}%"
    worst_row = max(report.rows, key=lambda r: r.drop)
    if report.verdict == WITHIN:
        return (f"{precision} is within --max-drop {max_drop:g} on every output ({pct} intervals on {n} validation "
                f"images; largest drop {worst_row.drop:+.2f} on {worst_row.name})")
    if report.verdict == OVER:
        parts = ", ".join(f"{r.name} {r.drop:+.2f} [{r.interval[0]:+.2f}, {r.interval[1]:+.2f}]"
                          for r in report.over_rows())
        return f"{precision} loses more than --max-drop {max_drop:g} points, confidently ({pct}, {n} images): {parts}"
    undecided = [r for r in report.rows if r.verdict == UNDECIDED]
    need = [r.images_to_decide for r in undecided if r.images_to_decide is not None]
    hint = (f"about {max(need):,} images would tell" if need
            else "a drop equal to the budget cannot be told apart at any size")
    names = ", ".join(f"{r.name} {r.drop:+.2f} [{r.interval[0]:+.2f}, {r.interval[1]:+.2f}]" for r in undecided)
    return (f"{precision}'s drop cannot be told apart from --max-drop {max_drop:g} on these {n} validation images "
            f"({pct} intervals: {names}); {hint} (`edgekd export --val-size`); building it")


def print_verification(console: Console, report: Verification, precision: str, max_drop: float,
                       title: Optional[str] = None) -> None:
    pct = f"{100 * report.confidence:g}%"
    table = Table(title=title or f"verification: {precision} vs fp32 on {report.n} validation images",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("output", "fp32", precision, "drop", f"{pct} interval", "agree", "lost/won", "verdict"):
        table.add_column(col, justify="right", no_wrap=True)
    styles = {WITHIN: "", UNDECIDED: "yellow", OVER: "red"}
    for r in report.rows:
        table.add_row(r.name, f"{r.reference_top1:.2f}", f"{r.built_top1:.2f}", f"{r.drop:+.2f}",
                      f"[{r.interval[0]:+.2f}, {r.interval[1]:+.2f}]", f"{r.agreement:.1f}%", f"{r.lost}/{r.gained}",
                      r.verdict, style=styles[r.verdict])
    console.print(table)
    console.print(verdict_line(report, precision, max_drop), markup=False, highlight=False)

"""What the studies in ``scripts/`` share: where their data is, how they time, how they write results.

A study runs as ``.venv/bin/python scripts/bench_NAME.py`` in the environment ``make setup`` makes (edgekd installed
from this checkout), so it imports edgekd's public names like any user; this module lies beside the studies, where
Python looks first for a script's imports (``from common import …``). The reliability harnesses are apart, in
``scripts/harness/``; every study's result files go under ``docs/benchmarks/`` (:data:`RESULTS`).

* data: the shared CIFAR-10 copy (``../shared/data/cifar10.part*.npz`` beside the checkout);
* timing: :func:`interleaved_medians`, the profiler's own interleaved timer
  (:func:`edgekd.device.profile.latency.interleaved`): callables called round by round in a rotating order, so what
  drifts on a shared machine falls on all of them alike;
* results: :func:`write_result`, a JSON file written atomically (a killed study never leaves half a result, and a
  resumable study skips only whole ones).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgekd.core.atomic import atomic_write_json
from edgekd.device.profile.latency import interleaved

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # the shared CIFAR-10 copy: cifar10.part0.npz, cifar10.part1.npz, …
RESULTS = ROOT / "docs" / "benchmarks"  # one folder per study


def cifar10_parts(*, required: bool = True) -> list[Path]:
    """The shared CIFAR-10 copy's npz parts, in order; none (or, with ``required``, an exit naming the folder)."""
    parts = sorted(SHARED_DATA.glob("cifar10.part*.npz"))
    if required and not parts:
        raise SystemExit(f"error: no CIFAR-10 parts under {SHARED_DATA.resolve()}")
    return parts


def interleaved_medians(fns: Mapping[str, Callable[[], Any]], *, rounds: int, warmup_rounds: int = 1
                        ) -> dict[str, float]:
    """Median milliseconds per call of each callable, timed by the profiler's interleaved rounds."""
    return {name: statistics.median(ms) for name, ms in interleaved(fns, rounds=rounds,
                                                                    warmup_rounds=warmup_rounds).items()}


def write_result(path: Path, result: Any) -> Path:
    """``result`` as indented JSON at ``path`` (its folders made), written atomically; returns ``path``."""
    atomic_write_json(path, result)
    return path

"""Whether early exit pays on this device: early exit at the bundle's thresholds against the full graph, timed.

Early exit saves multiply-accumulates, but each exit it passes costs something (a call per segment on the chain, a
branch and a confidence in the one-call graph), so fewer MACs need not mean fewer milliseconds. Build and profile
measure it where it runs: :data:`~edgekd.device.options.PAYOFF_IMAGES` validation images, one frame at a time
through the runtime's own :class:`~edgekd.device.runtime.pipeline.Pipeline` (network and post-processing, as
``edgekd run`` spends them per frame) in every way this bundle can answer — early exit on the one-call graph where
the bundle has one, early exit on the chain, and ``--mode full-vote`` — interleaved round by round
(:func:`edgekd.device.profile.latency.interleaved`), compared by the medians of
:data:`~edgekd.device.options.PAYOFF_ROUNDS` rounds. The record (:func:`measure_payoff`) names the device it was
measured on (:func:`edgekd.device.profile.environment.device_name`); build keeps it in the manifest under
``build.early_exit``, where ``edgekd run`` reads which early-exit graph is faster here, and :func:`payoff_line`
says it in one line: "early exit saves X% of the latency here" or "costs Y% more here; use --mode full-vote".
Torch-free (device side).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from edgekd.core.manifest import Manifest
from edgekd.device.chain import normalized_batches
from edgekd.device.options import PAYOFF_IMAGES, PAYOFF_ROUNDS
from edgekd.device.profile.environment import device_name
from edgekd.device.profile.latency import interleaved
from edgekd.device.runtime.pipeline import Pipeline

FULL = "full-vote"  # the run mode early exit is compared with


def measure_payoff(manifest: Manifest, images: np.ndarray, *, runner_options: dict[str, Any] | None = None,
                   n_images: int = PAYOFF_IMAGES, rounds: int = PAYOFF_ROUNDS) -> dict[str, Any]:
    """Time early exit at ``manifest``'s thresholds against the full graph on the first ``n_images`` of ``images``
    ((N, H, W, C) uint8), batch 1; see the module docstring. Returns the record build stores as
    ``build.early_exit``: ``device``, ``batch``, ``images``, ``rounds``, ``thresholds``, ``ms`` (median
    milliseconds per frame of ``one-call`` (when the bundle has it), ``chain`` and ``full-vote``), ``exit_fraction``
    (where early exit answered those images), ``graph`` (the faster early exit) and ``saving`` (the share of the
    full graph's latency it saves; negative: it costs more)."""
    options = dict(runner_options or {})
    xs = list(normalized_batches(images[:n_images], manifest.spec, batch=1))  # (1, C, H, W) each
    if not xs:
        raise ValueError("measuring early exit needs at least one image")
    graphs = ["one-call", "chain"] if manifest.early_exit_graph() is not None else ["chain"]
    pipes: dict[str, Pipeline] = {}
    try:
        for graph in graphs:
            pipes[graph] = Pipeline(manifest, mode="early-exit", early_exit_graph=graph, backend_options=options)
        pipes[FULL] = Pipeline(manifest, mode=FULL, backend_options=options)
        exits = np.array([pipes[graphs[0]].infer(x).exit for x in xs])
        samples = interleaved({name: (lambda p=p: [p.infer(x) for x in xs]) for name, p in pipes.items()},
                              rounds=rounds)
    finally:
        for p in pipes.values():
            p.close()
    ms = {name: statistics.median(times) / len(xs) for name, times in samples.items()}
    best = min(graphs, key=lambda g: ms[g])
    return {"device": device_name(manifest.runner_backend, options.get("threads")), "batch": 1, "images": len(xs),
            "rounds": rounds, "thresholds": list(manifest.thresholds), "ms": ms,
            "exit_fraction": [float(f) for f in np.bincount(exits, minlength=manifest.num_exits) / len(xs)],
            "graph": best, "saving": float(1.0 - ms[best] / ms[FULL]) if ms[FULL] > 0 else 0.0}


def payoff_line(record: dict[str, Any]) -> str:
    """The verdict in one line: "early exit saves X% of the latency here (…)" or "early exit costs Y% more here
    (…); use --mode full-vote"."""
    ms, graph, saving = record["ms"], record["graph"], record["saving"]
    detail = (f"{ms[graph]:.3f} ms per frame on the {graph} graph against {ms[FULL]:.3f} ms for the full graph, "
              f"batch 1, at the manifest's thresholds")
    if saving > 0:
        return f"early exit saves {100 * saving:.0f}% of the latency here ({detail})"
    return f"early exit costs {-100 * saving:.0f}% more here ({detail}); use --mode full-vote"


def stored_payoff_line(manifest: Manifest, threads: int | None = None) -> str:
    """What ``edgekd run`` says about the manifest's measurement (``build.early_exit``): its verdict, and whether it
    was measured on this device and at the thresholds the manifest now holds."""
    record = manifest.build.early_exit if manifest.build else None
    try:
        line = payoff_line(record)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        return "early exit not measured against the full graph on this bundle (edgekd profile measures it)"
    here = device_name(manifest.runner_backend, threads)
    if record.get("device") != here:
        line += f"; measured on {record.get('device')}, not this device (edgekd profile measures here)"
    if record.get("thresholds") != list(manifest.thresholds):
        line += "; measured at earlier thresholds"
    return line

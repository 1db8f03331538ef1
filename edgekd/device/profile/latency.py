"""Latency measurement: time a callable (warm-up by time, then N iterations or a duration) and summarise it.

:func:`segment_latencies` times a built bundle's graphs with its own backend runners, fed with zeros of the right
shapes: every segment graph alone, the segment chain up to every exit, and the full graph, at batch 1 and at a larger
batch. Segments run through :class:`~edgekd.device.chain.Chain`, the chain ``edgekd run`` uses, so they are asked
for exactly the outputs ``edgekd run`` asks for. Torch-free (device side).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekd.core.manifest import Manifest, segment_input_name
from edgekd.device.chain import Chain, within_range
from edgekd.device.profile.energy import NOT_AVAILABLE, PowerSampler, Rail, energy_per_inference
from edgekd.device.runners import Runner, make_runner

MIN_POWER_SAMPLES = 10  # fewer power readings than this during a timed run: the energy figure gets a warning


@dataclass
class LatencyStats:
    """Summary of latency samples, all in milliseconds (``cv`` = std / mean, unitless)."""

    n: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float
    unstable: bool
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ms: list[float], *, cv_limit: float = 0.1) -> LatencyStats:
    """Percentiles (numpy's linear interpolation), mean, population std and coefficient of variation.

    Like trtexec, flags the measurement as unstable when the coefficient of variation exceeds ``cv_limit``.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("summarize needs a non-empty list of latency samples")
    mean = float(x.mean())
    std = float(x.std())
    cv = std / mean if mean > 0 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, [50, 90, 95, 99]))
    unstable = cv > cv_limit
    warning = (f"the coefficient of variation ({cv:.1%}) is larger than {cv_limit:.1%}; results may be unreliable "
               "(other load on the device, clock scaling, thermal throttling?)") if unstable else None
    return LatencyStats(n=int(x.size), min=float(x.min()), mean=mean, median=p50, p90=p90, p95=p95, p99=p99,
                        max=float(x.max()), std=std, cv=cv, unstable=unstable, warning=warning)


def measure(fn: Callable[[], Any], *, warmup_s: float = 0.2, iterations: int | None = 200,
            duration_s: float | None = None, cv_limit: float = 0.1,
            around: AbstractContextManager | None = None) -> LatencyStats:
    """Call ``fn`` for ``warmup_s`` seconds untimed, then time ``iterations`` calls (or, when ``iterations`` is
    None, as many calls as fit in ``duration_s`` seconds, at least one); ``iterations`` wins if both are given.

    ``around`` (e.g. a :class:`~edgekd.device.profile.energy.PowerSampler`) is entered just before the first timed call
    and left just after the last, so whatever it records covers the timed calls only.
    """
    if iterations is None and duration_s is None:
        raise ValueError("measure needs iterations or duration_s")
    if iterations is not None and iterations < 1:
        raise ValueError("iterations must be at least 1")
    clock = time.perf_counter
    end = clock() + max(warmup_s, 0.0)
    while clock() < end:
        fn()
    samples: list[float] = []
    with around if around is not None else nullcontext():
        _timed_loop(fn, samples, iterations, duration_s, clock)
    return summarize(samples, cv_limit=cv_limit)


def _timed_loop(fn: Callable[[], Any], samples: list[float], iterations: int | None, duration_s: float | None,
                clock: Callable[[], float]) -> None:
    if iterations is not None:
        for _ in range(iterations):
            t0 = clock()
            fn()
            samples.append((clock() - t0) * 1e3)
    else:
        end = clock() + float(duration_s)  # type: ignore[arg-type]
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            samples.append((t1 - t0) * 1e3)
            if t1 >= end:
                break


def interleaved(fns: Mapping[str, Callable[[], Any]], *, rounds: int, warmup_rounds: int = 1) -> dict[str, list[float]]:
    """Milliseconds of every callable in each of ``rounds`` timed rounds (after ``warmup_rounds`` untimed ones); each
    round calls every callable once, in an order rotated from round to round, so what drifts on a shared machine
    (other load, clocks, heat) falls on all of them alike. Compare them by their medians."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup_rounds + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            if r >= warmup_rounds:
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def energy_entry(sampler: PowerSampler | None, stats: LatencyStats, batch: int = 1) -> dict[str, Any] | str:
    """Joules per item per rail during the timed calls (mean power x call time), or :data:`NOT_AVAILABLE`
    without power rails."""
    busy_s = stats.mean * stats.n / 1e3
    per_item = energy_per_inference(sampler, stats.n * batch, busy_s) if sampler is not None else None
    if per_item is None:
        return NOT_AVAILABLE
    rounds = sampler.samples
    return {"per_inference_j": per_item, "mean_power_mw": sampler.mean_mw(), "samples": rounds,
            "warning": None if rounds >= MIN_POWER_SAMPLES else
            f"only {rounds} power samples: time longer (--duration) for a trustworthy energy figure"}


def _entry(fn_for_batch: Callable[[int], Callable[[], Any]], batches: list[int], rails: list[Rail] | None = None,
           **measure_kw) -> dict[str, Any]:
    """Measure at each batch size: {"latency": stats at batch 1, "throughput": items/s, "energy", "batched": {...}
    | None}; with ``rails`` the power is sampled during the timed calls."""
    out: dict[str, Any] = {}
    for b in batches:
        sampler = PowerSampler(rails) if rails else None
        stats = measure(fn_for_batch(b), around=sampler, **measure_kw)
        rec = {"batch": b, "latency": stats.to_dict(),
               "throughput": b / (stats.median / 1e3) if stats.median > 0 else float("inf"),
               "energy": energy_entry(sampler, stats, b)}
        if b == 1:
            out.update(rec)
        else:
            out["batched"] = rec
    out.setdefault("batched", None)
    return out


def segment_latencies(manifest: Manifest, *, batch: int = 1, runner_options: dict[str, Any] | None = None,
                    rails: list[Rail] | None = None, **measure_kw) -> dict[str, Any]:
    """Time a bundle's graphs with its backend's runners on zero inputs.

    Returns ``{"backend", "batch", "segment{i}", "exit{i}", "full"}``; every timed entry holds ``latency`` (a
    :class:`LatencyStats` dict at batch 1), ``throughput`` (items/s = 1 / median seconds) and ``batched`` (the
    same at ``batch`` items, None when ``batch`` is 1). ``exit{i}`` is the chained run of segments 0..i (each fed
    the previous one's feature map) and also holds ``segment_median_sum_ms``, the sum of those segments' medians.
    ``energy`` is joules per item per rail measured during the timed calls when ``rails`` are given (Jetson
    INA3221), else ``"not available"``. ``measure_kw`` go to :func:`measure`.

    Each segment is asked for what ``edgekd run`` asks it for (:meth:`Chain.outputs
    <edgekd.device.chain.Chain.outputs>`): in ``exit{i}`` segment j < i returns only the ``feat{j}`` the next
    segment needs and segment i its ``logits{i}`` and ``conf{i}``, exactly as ``edgekd run --mode exit --exit i``
    does (in ``early-exit`` mode a frame answered at an exit i before the last has also produced ``feat{i}``; on
    ONNX Runtime that is one feature-map copy more, on TensorRT it stays on the GPU and costs nothing);
    ``segment{i}`` returns what segment i returns in a chained early exit (``feat{i}`` unless it is the last,
    ``logits{i}`` and ``conf{i}``; on TensorRT the feature map stays on the GPU, as in ``edgekd run``). ``full``
    returns every output of the full graph.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    backend = manifest.runner_backend
    opts = runner_options or {}
    with Chain.from_manifest(manifest, **opts) as chain, make_runner(backend, manifest.full_graph(), **opts) as full:
        return _time_graphs(manifest, chain, full, within_range(batch, [*chain.runners, full]), batch, rails,
                            **measure_kw)


def _time_graphs(manifest: Manifest, chain: Chain, full: Runner, batch: int, asked: int,
                 rails: list[Rail] | None, **measure_kw) -> dict[str, Any]:
    """:func:`segment_latencies` on open runners; ``batch`` is ``asked`` within what every runner accepts."""
    n = manifest.num_exits
    batches = [1] if batch == 1 else [1, batch]
    zeros = {b: [np.zeros((b, *manifest.segment_input_shape(i)), dtype=np.float32) for i in range(n)]
             for b in batches}
    result: dict[str, Any] = {"backend": manifest.runner_backend, "batch": batch}
    if batch != asked:
        result["batch_note"] = f"--batch {asked} exceeds what these graphs accept; throughput measured at {batch}"
    for i in range(n):
        def one_segment(b: int, i: int = i) -> Callable[[], Any]:
            feed = {segment_input_name(i): zeros[b][i]}
            return lambda: chain.segment(i, feed)

        result[f"segment{i}"] = _entry(one_segment, batches, rails, **measure_kw)
    for i in range(n):
        def up_to_exit(b: int, last: int = i) -> Callable[[], Any]:
            x = zeros[b][0]
            return lambda: chain.run(x, last=last, every_exit=False)

        entry = _entry(up_to_exit, batches, rails, **measure_kw)
        entry["segment_median_sum_ms"] = float(sum(result[f"segment{j}"]["latency"]["median"]
                                                 for j in range(i + 1)))
        result[f"exit{i}"] = entry

    def whole(b: int) -> Callable[[], Any]:
        feed = {"image": zeros[b][0]}
        return lambda: full.infer(feed)

    result["full"] = _entry(whole, batches, rails, **measure_kw)
    return result

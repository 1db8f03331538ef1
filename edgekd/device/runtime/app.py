"""``edgekd run``: frames from a camera, stream, video or images through a built bundle.

The loop is deliberately short — source, preprocess + infer (the pipeline), render, log — in the spirit of
jetson-inference's ``imagenet.py``. Ctrl-C, the end of the stream and ``max_frames`` all stop it cleanly, and every
output is flushed and closed.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgekd.core.writable import check_writable
from edgekd.core.certify import describe_thresholds, stored_certificate
from edgekd.core.early_exit import RUN_MODES
from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.core.manifest import MANIFEST_NAME, Manifest
from edgekd.device.options import DISPLAYS, env_threads_problem, options_problem
from edgekd.device.runtime.outputs import (WINDOW, JsonlOutput, RunStats, VideoOutput, display_available, end_outputs,
                                          render)
from edgekd.device.runtime.pipeline import Pipeline
from edgekd.device.runtime.drift import DriftMonitor
from edgekd.device.runtime.record import FrameRecorder
from edgekd.device.runtime.serve import LiveServer, NetworkVideoOutput, is_network_output, parse_address
from edgekd.device.runtime.sources import open_source, prefetched

EARLY_EXIT = RUN_MODES[0]  # the one mode that decides on thresholds


@dataclass
class RunOptions:
    mode: str = "early-exit"
    threshold: float | None = None
    early_exit_graph: str | None = None  # auto | one-call | chain (:data:`edgekd.device.options.EARLY_EXIT_GRAPHS`)
    exit: int | None = None
    vote: str | None = None
    smoothing: float | None = None
    loop: bool = False
    reconnect: bool | None = None
    display: str = DISPLAYS[0]  # auto | on | off
    output: str | None = None
    jsonl: str | None = None
    max_frames: int | None = None
    threads: int | None = None  # ONNX Runtime thread pool size (default: every core)
    record_frames: str | None = None  # folder to keep every record_every-th frame in (label-free certification)
    record_every: int = 1
    serve: str | None = None  # [HOST:]PORT of the live view (serve.py); None: no server
    serve_token: str | None = None  # token clients other than the device itself must present (else EDGEKD_SERVE_TOKEN)
    reconnect_backoff: float = 0.5  # seconds before the first reopen of a live source that dropped (doubled each try)

    def check(self) -> None:
        """The options' own values (the shared rules of :mod:`edgekd.device.options`) and that --output and --jsonl
        can be written: before the bundle loads, so a run never ends unable to write what it recorded."""
        problem = options_problem(max_frames=self.max_frames, threads=self.threads) or env_threads_problem()
        if problem:
            raise ConfigError(problem)
        if self.display not in DISPLAYS:
            raise ConfigError(f"--display must be one of {', '.join(DISPLAYS)}, got {self.display!r}")
        if not is_network_output(self.output):
            check_writable(self.output, "--output")
        check_writable(self.jsonl, "--jsonl")
        if self.serve is not None:
            parse_address(self.serve)


def _want_window(display: str) -> bool:
    if display == "off":
        return False
    available = display_available()
    if display == "on" and not available:
        raise EdgekdError("--display on, but no display is available (no $DISPLAY, or OpenCV without a GUI: "
                          "pip's opencv-python-headless has none)")
    return available


def _backend_options(opts: RunOptions) -> dict[str, Any]:
    return {"threads": opts.threads} if opts.threads else {}


def _finite(x: float) -> float | None:
    """``x`` rounded to 6 places, or None (JSON null) when it is not a finite number: JSON has no NaN."""
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def record(frame: Any, pred: Any, e2e_ms: float, drift: bool | None = None) -> dict[str, Any]:
    """One JSONL line: what was seen, what answered, how long each part took, and the last drift verdict (None:
    not checked, or no window complete yet)."""
    return {"index": frame.index, "timestamp": frame.timestamp, "label": pred.label, "class_name": pred.class_name,
            "confidence": _finite(pred.confidence), "exit": pred.exit,
            "pre_ms": round(pred.timings["pre"], 4), "network_ms": round(pred.timings["network"], 4),
            "post_ms": round(pred.timings["post"], 4), "end_to_end_ms": round(e2e_ms, 4), "drift": drift}


def drift_monitor(pipeline: Pipeline) -> DriftMonitor | None:
    """A drift check against the certificate of the thresholds in use (early exit only), or None: no certificate,
    an uncertified one, or thresholds other than those it covers (``--threshold``)."""
    if pipeline.mode != EARLY_EXIT:
        return None
    cert = stored_certificate(pipeline.manifest.certificate_record, pipeline.thresholds)
    return DriftMonitor(cert.exit_fraction) if cert is not None and cert.certified else None


def _status(stats: RunStats, pred: Any, frames: Any, pipeline: Pipeline, drift: DriftMonitor | None,
            certificate: dict[str, Any] | None) -> dict[str, Any]:
    """What ``/stats`` shows: the newest answer, the running statistics, the certificate and the drift check."""
    return {**stats.summary(), "mode": pipeline.mode, "source": dict(frames.stats),
            "prediction": None if pred is None else {"label": pred.label, "class_name": pred.class_name,
                                                     "exit": pred.exit, "confidence": _finite(pred.confidence)},
            "thresholds": _thresholds_line(pipeline), "certificate": certificate,
            "drift": None if drift is None else drift.state}


def _same_path(a: str | Path, b: str | Path) -> bool:
    """``a`` and ``b`` name one file: the same inode when both exist (links included), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _check_not_a_frame(outputs: list, frames: Any) -> None:
    """No output is one of the image files a folder or glob source reads (compared by inode: an output that does
    not exist yet is no frame, and a folder of 100,000 frames costs one stat each)."""
    existing = {}
    for flag, value in outputs:
        try:
            st = os.stat(value)
        except OSError:
            continue
        existing[(st.st_dev, st.st_ino)] = (flag, value)
    if not existing:
        return
    for frame in frames:
        try:
            st = os.stat(frame)
        except OSError:
            continue
        hit = existing.get((st.st_dev, st.st_ino))
        if hit:
            raise EdgekdError(f"{hit[0]} {hit[1]} is a frame of the --source ({frame}); refusing to overwrite it "
                              "(write it elsewhere)")


def check_outputs(opts: RunOptions, manifest: Manifest, source: str | int, frames: Any = None) -> None:
    """--output and --jsonl may not overwrite what the run reads (the bundle's manifest.json or any file it lists,
    the --source file, every image a folder or glob ``frames`` source lists) or each other: each would be destroyed
    before or while it is read."""
    read = [(manifest.root / MANIFEST_NAME, "the bundle's manifest")]
    read += [(p, f"{p.name} of the bundle") for p in manifest.paths()[1:]]
    if isinstance(source, str) and os.path.isfile(source):
        read.append((Path(source), "the --source"))
    outputs = [(flag, value) for flag, value in (("--output", opts.output), ("--jsonl", opts.jsonl)) if value]
    _check_not_a_frame(outputs, getattr(frames, "paths", ()))
    for flag, value in outputs:
        for path, what in read:
            if _same_path(value, path):
                raise EdgekdError(f"{flag} {value} is {what}; refusing to overwrite it (write it elsewhere)")
    if len(outputs) == 2 and _same_path(opts.output, opts.jsonl):
        raise EdgekdError(f"--output and --jsonl are the same file ({opts.jsonl}); give each its own")


def run_stream(bundle: str | Path, source: str | int, opts: RunOptions, console: Console | None = None) -> dict:
    """Run the loop; return the summary (frames, FPS, exit histogram, latency percentiles, source statistics)."""
    console = console or Console()
    opts.check()
    window = _want_window(opts.display)
    with ExitStack() as stack:
        pipeline = stack.enter_context(Pipeline.from_bundle(bundle, mode=opts.mode, threshold=opts.threshold,
                                                            exit=opts.exit, vote=opts.vote,
                                                            smoothing=opts.smoothing,
                                                            backend_options=_backend_options(opts),
                                                            early_exit_graph=opts.early_exit_graph))
        check_outputs(opts, pipeline.manifest, source)
        frames = stack.enter_context(open_source(source, loop=opts.loop, reconnect=opts.reconnect,
                                                 backoff=opts.reconnect_backoff))
        check_outputs(opts, pipeline.manifest, source, frames)  # the images a folder or glob lists, now known
        network = is_network_output(opts.output)
        video = VideoOutput(opts.output) if opts.output and not network else None
        log = JsonlOutput(opts.jsonl) if opts.jsonl else None
        outputs = [out for out in (video, log) if out is not None]
        # committed together only when the run ends well; any error (a write's own included) discards them all
        stack.push(lambda kind, _exc, _tb: end_outputs(outputs, ok=kind is None))
        if network:  # a stream, not a file: nothing to commit, only to close
            video = NetworkVideoOutput(opts.output)
            stack.callback(video.close)
        drift = drift_monitor(pipeline)
        cert = stored_certificate(pipeline.manifest.certificate_record)
        certificate = None if cert is None else {"epsilon": cert.epsilon, "delta": cert.delta, "n": cert.n,
                                                 "certified": cert.certified, "loss": cert.loss}
        server = None
        if opts.serve is not None:
            server = stack.enter_context(LiveServer(opts.serve, pipeline.num_exits, token=opts.serve_token,
                                                    title=pipeline.manifest.name))
            console.print(f"live view: {server.url}  (stats: {server.url}stats, metrics: {server.url}metrics)")
            if server.warning:
                console.print(f"[yellow]warning:[/] {server.warning}")
        recorder = FrameRecorder(opts.record_frames, opts.record_every) if opts.record_frames else None
        if window:
            stack.callback(cv2.destroyAllWindows)
        stats = RunStats(pipeline.manifest.num_exits)
        live = stack.enter_context(Live(stats.line(), console=console, refresh_per_second=1, transient=True))
        next_status = time.perf_counter() + 1.0
        try:
            # live sources: the capture thread already reads ahead; files: decode + preprocess on a reader thread
            stream = ((f, None) for f in frames) if frames.live else prefetched(frames, prepare=pipeline.prepare)
            # stop the reader thread before the source and the pipeline close (ExitStack unwinds last-in first):
            # a capture released while the reader is inside read() crashes OpenCV
            stack.callback(stream.close)
            for frame, prepared in stream:
                t0 = time.perf_counter()
                pred = pipeline(frame.image) if prepared is None else pipeline.infer(*prepared)
                e2e = (time.perf_counter() - t0) * 1e3 + (prepared[1] if prepared is not None else 0.0)
                stats.add(pred, e2e)
                if drift is not None:
                    drift.add(pred.exit)
                if recorder is not None:
                    recorder.add(frame.image)
                if log is not None:
                    log.write(record(frame, pred, e2e, None if drift is None else drift.state["flagged"]))
                if server is not None:
                    server.observe(pred.exit, e2e)
                if video is not None or window or (server is not None and server.watching):
                    annotated = render(frame.image, pred, stats.fps)
                    if video is not None:
                        video.write(annotated)
                    if server is not None:
                        server.offer(annotated)
                    if window:
                        cv2.imshow(WINDOW, annotated)
                        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                            break
                if time.perf_counter() >= next_status:  # the status line is refreshed about once a second
                    flagged = drift is not None and drift.state["flagged"]
                    live.update(stats.line() + ("  DRIFT: certify again" if flagged else ""))
                    if server is not None:
                        server.update(_status(stats, pred, frames, pipeline, drift, certificate))
                    if log is not None:
                        log.flush()
                    next_status = time.perf_counter() + 1.0
                if opts.max_frames is not None and stats.frames >= opts.max_frames:
                    break
        except KeyboardInterrupt:
            console.print("interrupted: stopping cleanly")
        summary = {**stats.summary(), "source": dict(frames.stats), "mode": pipeline.mode,
                   "thresholds": _thresholds_line(pipeline), "early_exit": _payoff_line(pipeline, opts)}
        if recorder is not None:
            summary["recorded"] = recorder.summary()
        if drift is not None:
            summary["drift"] = drift.state
    print_summary(console, summary, pipeline.manifest.name)
    return summary


def _thresholds_line(pipeline: Pipeline) -> str | None:
    """What backs the thresholds this run decided on: the manifest's certificate line (``build.thresholds``), or
    "thresholds not certified" (no certificate, or ``--threshold`` in place of the manifest's); None in the modes
    that decide on no thresholds (full-vote, exit)."""
    if pipeline.mode != EARLY_EXIT:
        return None
    record = pipeline.manifest.certificate_record
    return describe_thresholds(record, pipeline.thresholds)


def _payoff_line(pipeline: Pipeline, opts: RunOptions) -> str | None:
    """Whether early exit pays on this device (build's measurement, ``build.early_exit``) and which graph ran one
    frame; None in the modes that do not exit early."""
    if pipeline.mode != EARLY_EXIT:
        return None
    from edgekd.device.profile.payoff import stored_payoff_line

    return f"{pipeline.early_exit_graph} graph; {stored_payoff_line(pipeline.manifest, opts.threads)}"


def print_summary(console: Console, summary: dict, name: str) -> None:
    table = Table(title=f"edgekd run · {name} · {summary['mode']}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("frames", str(summary["frames"]))
    table.add_row("FPS", f"{summary['fps']:.1f}")
    for i, n in enumerate(summary["exit_histogram"]):
        share = 100 * n / max(summary["frames"], 1)
        table.add_row(f"answered at exit {i}", f"{n} ({share:.0f}%)")
    for key in ("network_ms", "end_to_end_ms"):
        table.add_row(f"{key[:-3].replace('_', '-')} p50 / p99 (ms)",
                      f"{summary[key]['p50']:.2f} / {summary[key]['p99']:.2f}")
    src = summary["source"]
    if src.get("dropped") or src.get("reopened") or src.get("failed_reads"):
        table.add_row("source: dropped / reopened / failed reads",
                      f"{src.get('dropped', 0)} / {src.get('reopened', 0)} / {src.get('failed_reads', 0)}")
    if summary.get("thresholds"):
        table.add_row("thresholds", Text(summary["thresholds"], justify="left"))
    if summary.get("early_exit"):
        table.add_row("early exit", Text(summary["early_exit"], justify="left"))
    if summary.get("recorded"):
        table.add_row("recorded", Text(summary["recorded"], justify="left"))
    drift = summary.get("drift")
    if drift:
        verdict = ("window not complete" if drift["flagged"] is None else
                   drift["message"] or f"none ({drift['windows']} windows of {drift['window']} frames, level "
                                       f"{drift['level']:g})")
        table.add_row("drift", Text(verdict, justify="left"))
    console.print(table)

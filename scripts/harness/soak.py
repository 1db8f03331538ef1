"""Soak test of ``edgekd run``: tens of thousands of frames from a looping video, in early-exit mode, watched from
outside the process.

The real command runs in a child process (``edgekd run BUNDLE --source clip.avi --loop --max-frames N --headless
--jsonl …``); this script samples the child's resident memory (VmRSS), open file descriptors and threads from
``/proc`` every quarter second, and afterwards maps each sample to the frame the run had reached (the JSONL's
per-frame timestamps share the clock, CLOCK_MONOTONIC). The video loops the bundle's own validation images, so
frames exit at every exit (``--threshold``), as a camera's would. Verdicts:

* memory flat after warm-up: the largest RSS from frame ``--warmup`` to the end at most ``--max-growth`` (5%)
  above the RSS at frame ``--warmup``;
* no descriptor or thread growth after warm-up (while frames flow: the shutdown's own files are not a leak);
* steady speed: the CPU time the process spends per frame (``/proc/PID/stat``) over the last third of the run at
  most ``--max-slowdown`` (10%) above the first third's. The FPS of each window of ``--window`` frames is reported
  too; wall-clock FPS on a shared machine mostly measures the neighbours, CPU time per frame does not.

    .venv/bin/python scripts/harness/soak.py                 # 50,000 frames (the figures in docs/RELIABILITY.md)
    .venv/bin/python scripts/harness/soak.py --frames 3000 --warmup 1000 --window 500 --json out.json

Exit status 0 when every verdict holds, 1 otherwise. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def write_video(bundle: Path, path: Path, frames: int = 200, size: tuple = (160, 120)) -> Path:
    """A looping MJPG video of the bundle's validation images (gray, upscaled to ``size``), ``frames`` long."""
    with np.load(bundle / "val_sample.npz") as f:
        images = f["images"]  # (N, H, W, C) uint8
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    if not writer.isOpened():
        raise SystemExit(f"cannot write {path}")
    for i in range(frames):
        image = images[i % len(images)]
        image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else
                     (cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[2] == 3 else
                      cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)))
    writer.release()
    return path


def _proc(pid: int) -> dict | None:
    """VmRSS (KiB), open descriptors and threads of ``pid`` now; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie: it has exited and not yet been reaped (its memory is gone)
        return None
    ticks = stat.rsplit(")", 1)[1].split()  # after the command name: state is field 3, utime 14, stime 15
    cpu = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
    return {"t": time.monotonic(), "rss_kib": int(fields["VmRSS"].split()[0]), "fds": fds,
            "threads": int(fields["Threads"].strip()), "cpu_s": cpu}


def soak(bundle: Path, frames: int, warmup: int, window: int, threads: int | None, workdir: Path,
         threshold: float | None = None) -> dict:
    """Run ``edgekd run`` for ``frames`` frames and return the samples and verdict figures."""
    video = write_video(bundle, workdir / "clip.avi")
    log = workdir / "frames.jsonl"
    cmd = [sys.executable, "-m", "edgekd", "run", str(bundle), "--source", str(video), "--loop", "--mode",
           "early-exit", "--max-frames", str(frames), "--headless", "--jsonl", str(log)]
    if threads:
        cmd += ["--threads", str(threads)]
    if threshold is not None:
        cmd += ["--threshold", str(threshold)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    child = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    while child.poll() is None:
        sample = _proc(child.pid)
        if sample is not None:
            samples.append(sample)
        time.sleep(0.25)
    out, err = child.communicate()
    elapsed = time.monotonic() - t0
    if child.returncode != 0:
        raise SystemExit(f"edgekd run failed ({child.returncode}): {err[-2000:]}")
    stamps = np.array([json.loads(line)["timestamp"] for line in log.read_text().splitlines()])
    exits = np.bincount([json.loads(line)["exit"] for line in log.read_text().splitlines()])
    for s in samples:
        s["frame"] = int(np.searchsorted(stamps, s["t"], side="right"))
    after = [s for s in samples if warmup <= s["frame"] < len(stamps)]  # the loop running, not its shutdown
    if not after:
        raise SystemExit("no sample after the warm-up: run more frames")
    base = after[0]
    peak = max(after, key=lambda s: s["rss_kib"])
    windows = [window / (stamps[i + window - 1] - stamps[i]) for i in range(0, len(stamps) - window + 1, window)
               if stamps[i + window - 1] > stamps[i]]
    median = statistics.median(windows)
    third = max(1, len(after) // 3)  # CPU time per frame, first and last third of the run: neighbours do not count

    def cpu_ms(part: list) -> float:
        frames_run = part[-1]["frame"] - part[0]["frame"]
        return 1e3 * (part[-1]["cpu_s"] - part[0]["cpu_s"]) / frames_run if frames_run else float("nan")

    cpu_first, cpu_last = cpu_ms(after[:third + 1]), cpu_ms(after[-third - 1:])
    return {
        "frames": int(len(stamps)), "seconds": round(elapsed, 1),
        "fps": round(float(len(stamps) / (stamps[-1] - stamps[0])), 1),
        "exit_histogram": [int(n) for n in exits],
        "warmup_frame": warmup, "rss_at_warmup_mib": round(base["rss_kib"] / 1024, 1),
        "rss_peak_after_warmup_mib": round(peak["rss_kib"] / 1024, 1), "rss_peak_frame": peak["frame"],
        "rss_end_mib": round(after[-1]["rss_kib"] / 1024, 1),
        "rss_growth_pct": round(100.0 * (peak["rss_kib"] - base["rss_kib"]) / base["rss_kib"], 2),
        "fds_at_warmup": base["fds"], "fds_max_after_warmup": max(s["fds"] for s in after),
        "threads_at_warmup": base["threads"], "threads_max_after_warmup": max(s["threads"] for s in after),
        "fps_windows": [round(float(w), 1) for w in windows], "fps_window": window,
        "fps_spread_pct": round(float(100.0 * max(abs(w - median) for w in windows) / median), 1),
        "cpu_ms_per_frame_first_third": round(cpu_first, 3), "cpu_ms_per_frame_last_third": round(cpu_last, 3),
        "cpu_per_frame_change_pct": round(100.0 * (cpu_last - cpu_first) / cpu_first, 1),
        "samples": len(samples),
        "rss_trace_mib": [[s["frame"], round(s["rss_kib"] / 1024, 2)] for s in samples[:: max(1, len(samples) // 40)]],
    }


def verdicts(result: dict, max_growth: float, max_slowdown: float) -> dict:
    return {
        "memory flat": bool(result["rss_growth_pct"] < max_growth),
        "no descriptor growth": bool(result["fds_max_after_warmup"] <= result["fds_at_warmup"]),
        "no thread growth": bool(result["threads_max_after_warmup"] <= result["threads_at_warmup"]),
        "steady speed": bool(result["cpu_per_frame_change_pct"] <= max_slowdown),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=5_000, help="frames per FPS window")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=0.14,
                        help="one early-exit threshold for every exit: the default fixture is a barely trained model "
                             "(exit confidences 0.12-0.2), whose own 0.9 would send every frame to the last exit; "
                             "0.14 makes frames leave at every exit, as a trained model's would")
    parser.add_argument("--max-growth", type=float, default=5.0, help="percent of RSS growth allowed after warm-up")
    parser.add_argument("--max-slowdown", type=float, default=10.0,
                        help="percent the CPU time per frame of the run's last third may exceed its first third's")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(args.bundle.resolve(), args.frames, args.warmup, args.window, args.threads, Path(tmp),
                      args.threshold)
    result["verdicts"] = verdicts(result, args.max_growth, args.max_slowdown)
    shown = {k: v for k, v in result.items() if k not in ("fps_windows", "rss_trace_mib")}
    print(json.dumps(shown, indent=1))
    print("FPS per window:", result["fps_windows"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if all(result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

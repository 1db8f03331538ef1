"""Benchmark: network-only vs end-to-end throughput of `edgekd run` on a 640x480 video.

Network-only: frames decoded and preprocessed beforehand, then the pipeline's network (+ post-processing) called
frame by frame at batch 1. End-to-end: `run_stream` over the video file — decode, preprocess, infer, JSONL log —
exactly what `edgekd run --source video.mp4 --headless --jsonl …` does. Both for early-exit and full-vote,
alternated for ``--rounds`` rounds in one process; medians reported.

    .venv/bin/python scripts/bench_run.py --bundle /tmp/edgekd-bench/bundle-int8 --frames 300 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import cifar10_parts, write_result

from edgekd.core.manifest import load_manifest
from edgekd.device.runtime.app import RunOptions, run_stream
from edgekd.device.runtime.pipeline import Pipeline
from edgekd.device.runtime.preprocess import Preprocessor


def write_video(path: Path, n: int) -> list[np.ndarray]:
    """n 640x480 BGR frames (CIFAR-10 test images upscaled when the shared copy exists, else noise) as mp4."""
    parts = cifar10_parts(required=False)
    if parts:
        with np.load(parts[-1]) as f:
            small = f["x_test"][:n]
    else:
        small = np.random.default_rng(0).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    frames = [cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), (640, 480), interpolation=cv2.INTER_LINEAR)
              for img in small]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for f in frames:
        writer.write(f)
    writer.release()
    return frames


def network_only_fps(bundle: Path, mode: str, inputs: list[np.ndarray]) -> float:
    with Pipeline.from_bundle(bundle, mode=mode) as pipe:
        for x in inputs[:10]:
            pipe.predict_batch(x)
        t0 = time.perf_counter()
        for x in inputs:
            pipe.predict_batch(x)
        return len(inputs) / (time.perf_counter() - t0)


def end_to_end_fps(bundle: Path, mode: str, video: Path, work: Path) -> float:
    opts = RunOptions(mode=mode, display="off", jsonl=str(work / f"{mode}.jsonl"))
    t0 = time.perf_counter()
    summary = run_stream(bundle, str(video), opts)
    return summary["frames"] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="a built bundle")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-bench-run-"))
    video = work / "video.mp4"
    frames = write_video(video, args.frames)
    spec = load_manifest(args.bundle).spec
    pre = Preprocessor(spec)
    inputs = [pre(f).copy() for f in frames]  # (1, C, H, W) each
    result = {"bundle": str(args.bundle), "frames": args.frames, "rounds": args.rounds, "fps": {}}
    for mode in ("early-exit", "full-vote"):
        net, e2e = [], []
        for _ in range(args.rounds):
            net.append(network_only_fps(args.bundle, mode, inputs))
            e2e.append(end_to_end_fps(args.bundle, mode, video, work))
        result["fps"][mode] = {"network_only": statistics.median(net), "end_to_end": statistics.median(e2e),
                               "ratio": statistics.median(e2e) / statistics.median(net)}
    for mode, r in result["fps"].items():
        print(f"{mode:10s} network-only {r['network_only']:8.1f} FPS  end-to-end {r['end_to_end']:8.1f} FPS  "
              f"ratio {r['ratio']:.3f} (target ≥ 0.9)")
    if args.json:
        write_result(args.json, result)


if __name__ == "__main__":
    main()

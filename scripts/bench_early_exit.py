"""The early-exit machinery's cost on one built bundle (issue 23), in a minute on any bundle, the tiny test one too.

Batch 1, one frame at a time through the runtime ``Pipeline`` (network and post-processing, as ``edgekd run``
spends them), the bundle's validation images, every variant timed in each round in a rotating order
(:func:`edgekd.device.profile.latency.interleaved`); medians of the rounds, per frame:

* ``full-vote``: the full graph (what early exit has to beat);
* ``one-call`` / ``chain`` at ``last``: every image sent to the last exit (``--threshold 1.5``): the machinery's
  cost (issue 23's target: at most 1.05× the full graph);
* ``one-call`` / ``chain`` at ``exit0``: every image answered at exit 0 (``--threshold 0``): against exit 0's share
  of the full graph's MACs (target: within 10 points);
* ``one-call`` / ``chain`` at ``manifest``: the bundle's own thresholds.

    .venv/bin/python scripts/bench_early_exit.py BUNDLE [--images 64] [--rounds 15] [--threads N]

The one-call rows need an ONNX Runtime FP32 or INT8 build (``graphs.early_exit``); other bundles get the chain only.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--images", type=int, default=64, help="validation images per round")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds (after one untimed)")
    ap.add_argument("--threads", type=int, help="ONNX Runtime threads (default: every core)")
    args = ap.parse_args()
    if args.threads:
        os.environ["EDGEKD_THREADS"] = str(args.threads)

    from edgekd.core.manifest import load_manifest
    from edgekd.device.chain import normalized_batches
    from edgekd.device.profile.environment import device_name
    from edgekd.device.profile.latency import interleaved
    from edgekd.device.runtime.pipeline import Pipeline

    m = load_manifest(args.bundle)
    images, _ = m.val_sample()
    xs = list(normalized_batches(images[:args.images], m.spec, batch=1))
    exits = m.exits
    heads = np.cumsum([e.head_macs or 0 for e in exits]) - np.array([e.head_macs or 0 for e in exits])
    reached = np.array([e.macs for e in exits], dtype=np.float64) + heads  # MACs of an answer at each exit
    graphs = ["one-call", "chain"] if m.early_exit_graph() is not None else ["chain"]
    pipes = {"full-vote": Pipeline(m, mode="full-vote")}
    for graph in graphs:
        for at, threshold in (("last", 1.5), ("exit0", 0.0), ("manifest", None)):
            pipes[f"{graph} {at}"] = Pipeline(m, early_exit_graph=graph, threshold=threshold)
    try:
        samples = interleaved({k: (lambda p=p: [p.infer(x) for x in xs]) for k, p in pipes.items()},
                              rounds=args.rounds)
        shares = {k: np.bincount([p.infer(x).exit for x in xs], minlength=m.num_exits) / len(xs)
                  for k, p in pipes.items()}
    finally:
        for p in pipes.values():
            p.close()
    ms = {k: statistics.median(v) / len(xs) for k, v in samples.items()}
    full = ms["full-vote"]
    macs_share = float(reached[0] / reached[-1])
    print(f"{args.bundle} ({m.precision}, {m.runner_backend}, {reached[-1] / 1e6:.1f} MMACs): "
          f"{device_name(m.runner_backend)}; {len(xs)} images x {args.rounds} rounds, batch 1, medians per frame\n")
    print("| variant | ms per frame | × full graph | answered at each exit |")
    print("|---|---:|---:|---|")
    for k, v in ms.items():
        print(f"| {k} | {v:.3f} | {v / full:.3f} | {' / '.join(f'{100 * f:.0f}%' for f in shares[k])} |")
    print(f"\nexit 0's share of the full graph's MACs: {100 * macs_share:.0f}%")
    for graph in graphs:
        last, exit0 = ms[f"{graph} last"] / full, ms[f"{graph} exit0"] / full
        print(f"{graph}: every image at the last exit {last:.3f}× the full graph (target ≤ 1.05: "
              f"{'met' if last <= 1.05 else 'not met'}); at exit 0 {100 * exit0:.0f}% of its latency, "
              f"{100 * (exit0 - macs_share):+.0f} points from the MAC share (target ≤ +10: "
              f"{'met' if 100 * (exit0 - macs_share) <= 10 else 'not met'})")


if __name__ == "__main__":
    main()

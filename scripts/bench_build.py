"""Benchmark: ONNX Runtime FP32 full graph vs INT8 full graph vs chained stages (and FP16), batch 1 and 32.

One run does everything side by side: (optionally) train a multi-exit CIFAR ResNet-18 on the shared CIFAR-10 copy,
export it, build FP32 and INT8 bundles, then time every graph with one shared ONNX Runtime thread pool — median
over ``--runs`` (≥ 200) after warm-up, interleaving the variants so they see the same machine state — and report
top-1 of the FP32 and INT8 full graphs on the CIFAR-10 test split.

    .venv/bin/python scripts/bench_build.py --work /tmp/edgekd-bench --train-images 5000 --epochs 2
    .venv/bin/python scripts/bench_build.py --checkpoint runs/r18/best.pt     # reuse a trained checkpoint
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np
from common import cifar10_parts, interleaved_medians, write_result


def subset_npz(work: Path, n_train: int, n_test: int) -> Path:
    """A CIFAR-10 subset in the npz-part format (first images of the shuffled shared copy)."""
    parts = cifar10_parts()
    keys = ("x_train", "y_train", "x_test", "y_test")
    arrays = {k: [] for k in keys}
    for p in parts:
        with np.load(p) as f:
            for k in keys:
                arrays[k].append(f[k])
            classes = f["classes"]
    out = work / f"cifar10-subset-{n_train}-{n_test}.npz"
    if out.exists():  # a checkpoint trained on it records this path: never rewrite it
        return out
    x_train, y_train = np.concatenate(arrays["x_train"])[:n_train], np.concatenate(arrays["y_train"])[:n_train]
    x_test, y_test = np.concatenate(arrays["x_test"])[:n_test], np.concatenate(arrays["y_test"])[:n_test]
    np.savez(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=classes)
    return out


def train_checkpoint(work: Path, data: Path, epochs: int, model: str) -> Path:
    from edgekd.training.config import TrainConfig
    from edgekd.training.loop import train

    cfg = TrainConfig(data=str(data), model=model, method="byot", epochs=epochs, batch_size=128, lr=0.1,
                      out=str(work / "run"), force=True)
    return train(cfg).best


def test_top1(manifest, data_npz: Path) -> float:
    from edgekd.core.preprocess import resize_to_spec, to_spec_channels
    from edgekd.device.chain import full_probs

    with np.load(data_npz) as f:
        x, y = f["x_test"], f["y_test"].astype(np.int64)
    images = np.stack([resize_to_spec(to_spec_channels(img, manifest.spec.channels), manifest.spec) for img in x])
    probs = full_probs("onnxruntime", manifest.full_graph(), images, manifest.spec, manifest.num_exits)  # (E, N, K)
    return float(100 * np.mean(probs[-1].argmax(1) == y)), float(100 * np.mean(probs.mean(0).argmax(1) == y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekd-bench"))
    ap.add_argument("--checkpoint", type=Path, help="skip training, use this checkpoint")
    ap.add_argument("--model", default="cifar_resnet18")
    ap.add_argument("--train-images", type=int, default=5000)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = subset_npz(args.work, args.train_images, args.test_images)
    ckpt = args.checkpoint or train_checkpoint(args.work, data, args.epochs, args.model)

    from edgekd.device.chain import Chain
    from edgekd.device.compiler import build_bundle
    from edgekd.device.runners import make_runner
    from edgekd.training.export import export_bundle

    bundle = args.work / "bundle"
    export_bundle(ckpt, bundle, force=True)
    built = {p: build_bundle(bundle, precision=p, backend="onnxruntime", out=args.work / f"bundle-{p}", force=True,
                             cache_dir=str(args.work / "calibration")) for p in ("fp32", "int8", "fp16")}
    result = {"model": args.model, "runs": args.runs, "checkpoint": str(ckpt), "median_ms": {}, "top1": {}}
    for p, m in built.items():
        result["top1"][p] = dict(zip(("last_exit", "soft_vote"), test_top1(m, data)))
    for batch in (1, 32):
        x = np.random.default_rng(0).standard_normal((batch, *built["fp32"].spec.shape)).astype(np.float32)
        with contextlib.ExitStack() as opened:
            variants = {}
            for p, m in built.items():
                full = opened.enter_context(make_runner("onnxruntime", m.full_graph()))
                variants[f"{p} full"] = (lambda r=full, x=x: r.infer({"image": x}))
                if p != "fp16":  # fp16 is only there to show it is slower on a CPU
                    chain = opened.enter_context(Chain.from_manifest(m))  # fetches what `edgekd run` fetches
                    variants[f"{p} chained stages"] = (lambda c=chain, x=x: c.run(x))
            result["median_ms"][f"batch{batch}"] = interleaved_medians(variants, rounds=args.runs,
                                                                          warmup_rounds=args.warmup)
    for batch, med in result["median_ms"].items():
        print(f"{batch}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items()))
        print(f"  int8 speed-up {med['fp32 full'] / med['int8 full']:.2f}x; fp16/fp32 "
              f"{med['fp16 full'] / med['fp32 full']:.2f}x; chained/full fp32 "
              f"{med['fp32 chained stages'] / med['fp32 full']:.3f}, int8 "
              f"{med['int8 chained stages'] / med['int8 full']:.3f}")
    print("top-1 on the CIFAR-10 test subset:", result["top1"])
    if args.json:
        write_result(args.json, result)


if __name__ == "__main__":
    main()

"""Fuzz the loaders of what users hand edgekd: the bundle manifest, npz archives, image files and ONNX graphs.

Mutation fuzzing from real seeds (the committed fixture bundle's manifest.json, val_sample.npz, calib.npz and
graphs; small PNG/JPEG/BMP/TIFF/PGM/WebP images written here): each case flips bits, overwrites, inserts or deletes
bytes, truncates, or splices two seeds, then hands the result to the loader the commands use. A case passes when
the loader returns or raises edgekd's one-line :class:`EdgekdError`; anything else (another exception, a message
of several lines, more than ``--case-timeout`` seconds) is a crash, saved under ``--out`` to replay. Deterministic
for a given ``--seed``.

    .venv/bin/python scripts/harness/fuzz_loaders.py --cases 5000   # per target; the figures in docs/RELIABILITY.md
    .venv/bin/python scripts/harness/fuzz_loaders.py --cases 200 --target manifest

Exit status 0 when no case crashed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from edgekd.core.errors import EdgekdError
from edgekd.core.images import read_image
from edgekd.core.labelled import decode_image, load_images, load_labelled
from edgekd.core.manifest import load_manifest, read_bundle_npz
from edgekd.core.onnx_graph import external_data_locations, graph_io
from edgekd.core.preprocess import resize_to_spec

FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"
TARGETS = ("manifest", "npz", "image", "onnx")


class Hang(Exception):
    """A case ran past its time limit."""


def mutate(data: bytes, rnd: random.Random, other: bytes = b"") -> bytes:
    """One to four random edits of ``data``: bit flips, byte overwrites (often with 0x00/0xFF/0x7F/0x80), inserted
    or deleted runs, a truncation, or a splice with ``other``."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.randrange(7)
        pos = rnd.randrange(len(buf)) if buf else 0
        if kind == 0 and buf:
            buf[pos] ^= 1 << rnd.randrange(8)
        elif kind == 1 and buf:
            buf[pos] = rnd.choice([0, 0xFF, 0x7F, 0x80, rnd.randrange(256)])
        elif kind == 2:
            buf[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif kind == 3 and buf:
            del buf[pos:pos + rnd.randint(1, 64)]
        elif kind == 4 and buf:
            buf = buf[:pos]
        elif kind == 5 and other:
            cut = rnd.randrange(len(other))
            buf = buf[:pos] + bytearray(other[cut:cut + rnd.randint(1, 256)]) + buf[pos:]
        elif buf:  # repeat a run: lengths and counts that no longer agree
            run = buf[pos:pos + rnd.randint(1, 32)]
            buf[pos:pos] = run * rnd.randint(2, 8)
    return bytes(buf)


def mutate_json(text: str, rnd: random.Random) -> str:
    """A structural edit of the manifest JSON: one value anywhere replaced by something odd (deep nesting, huge
    numbers, wrong types, NaN tokens), or a key removed."""
    data = json.loads(text)
    nodes = []

    def walk(v, parent, key):
        nodes.append((parent, key))
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, v, k)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, v, i)

    walk(data, None, None)
    parent, key = rnd.choice(nodes[1:])
    odd = rnd.choice(["NaN", "Infinity", "1e999", "-1", "0", "10" * 200, '"x"', "[]", "{}", "null", "true",
                      "[" * 200 + "]" * 200, "[1e308, 1e308, 1e308]", '"../../etc/passwd"', "-0.0", "2.5"])
    if isinstance(parent, dict) and rnd.random() < 0.2:
        del parent[key]
        return json.dumps(data)
    marker = "__FUZZ__"
    parent[key] = marker
    return json.dumps(data).replace(json.dumps(marker), odd, 1)


def _seed_images(folder: Path) -> Dict[str, bytes]:
    rng = np.random.default_rng(0)
    seeds = {}
    for ext, shape in ((".png", (9, 7, 3)), (".png", (5, 5)), (".jpg", (16, 12, 3)), (".bmp", (6, 6, 3)),
                       (".tif", (5, 4, 4)), (".pgm", (7, 7)), (".webp", (8, 8, 3)), (".png", (3, 3, 4))):
        path = folder / f"seed{len(seeds)}{ext}"
        image = rng.integers(0, 255, shape, dtype=np.uint8)
        if cv2.imwrite(str(path), image):
            seeds[path.name] = path.read_bytes()
    path = folder / "seed16.png"
    cv2.imwrite(str(path), rng.integers(0, 65535, (6, 6), dtype=np.uint16))
    seeds[path.name] = path.read_bytes()
    return seeds


def run_target(target: str, cases: int, seed: int, work: Path, out: Path, case_timeout: float) -> Dict:
    """Fuzz one target; returns {cases, crashes, signatures, seconds}."""
    rnd = random.Random(f"{seed}-{target}")
    bundle = work / "bundle"
    if bundle.exists():
        shutil.rmtree(str(bundle))
    shutil.copytree(str(FIXTURE), str(bundle))
    pristine = {p.name: p.read_bytes() for p in bundle.iterdir()}
    manifest = load_manifest(bundle)
    spec = manifest.spec
    images = _seed_images(work) if target == "image" else {}
    crashes: List[Dict] = []
    signatures: Dict[str, int] = {}
    t0 = time.perf_counter()

    def case(i: int) -> Callable[[], object]:
        if target == "manifest":
            text = str(pristine["manifest.json"], "utf-8")
            data = (mutate_json(text, rnd).encode() if rnd.random() < 0.5
                    else mutate(pristine["manifest.json"], rnd, pristine["manifest.json"]))
            (bundle / "manifest.json").write_bytes(data)
            return lambda: load_manifest(bundle)
        if target == "npz":
            name = rnd.choice(["val_sample.npz", "calib.npz"])
            other = pristine["calib.npz" if name == "val_sample.npz" else "val_sample.npz"]
            path = work / f"fuzz{i % 2}.npz"
            path.write_bytes(mutate(pristine[name], rnd, other))
            labelled = name == "val_sample.npz"
            which = rnd.randrange(3)
            if which == 0:
                return lambda: read_bundle_npz(path, spec, labelled=labelled)
            if which == 1:
                return lambda: load_images(path, spec, max_images=64)
            return lambda: load_labelled(path, spec)
        if target == "image":
            name = rnd.choice(sorted(images))
            path = work / ("fuzz" + Path(name).suffix)
            path.write_bytes(mutate(images[name], rnd, images[rnd.choice(sorted(images))]))
            return lambda: resize_to_spec(decode_image(path, spec.channels), spec) if rnd.random() < 0.5 \
                else read_image(path)
        name = rnd.choice(["full.onnx", "stage0.onnx", "stage2.onnx"])
        path = work / "fuzz.onnx"
        path.write_bytes(mutate(pristine[name], rnd, pristine["stage1.onnx"]))
        return lambda: (graph_io(path), external_data_locations(path))

    def on_alarm(*_):
        raise Hang(f"ran past {case_timeout:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for i in range(cases):
            fn = case(i)
            signal.setitimer(signal.ITIMER_REAL, case_timeout)
            try:
                fn()
                problem = None
            except EdgekdError as exc:
                problem = "several lines" if "\n" in str(exc) else None
                if problem:
                    problem = f"EdgekdError of several lines: {str(exc)[:200]!r}"
            except BaseException as exc:  # noqa: BLE001 - a crash is anything else
                if isinstance(exc, KeyboardInterrupt):
                    raise
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                problem = f"{type(exc).__name__} at {Path(tb.filename).name}:{tb.lineno}: {str(exc)[:160]}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if problem:
                key = problem.split(":")[0] if " at " not in problem else problem.split(": ")[0]
                signatures[key] = signatures.get(key, 0) + 1
                if signatures[key] <= 3:
                    saved = out / f"{target}-{i}"
                    saved.mkdir(parents=True, exist_ok=True)
                    for p in [bundle / "manifest.json"] if target == "manifest" else list(work.glob("fuzz*")):
                        shutil.copy(str(p), str(saved / p.name))
                    (saved / "problem.txt").write_text(problem + "\n")
                crashes.append({"case": i, "problem": problem})
    finally:
        signal.signal(signal.SIGALRM, previous)
    return {"cases": cases, "crashes": len(crashes), "signatures": signatures,
            "seconds": round(time.perf_counter() - t0, 1)}


def fuzz(cases: int, seed: int = 0, targets=TARGETS, out: Path = None, case_timeout: float = 20.0) -> Dict:
    """Run every target for ``cases`` cases; returns {target: result}."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = out or Path(tmp) / "crashes"
        for target in targets:
            work = Path(tmp) / target
            work.mkdir()
            results[target] = run_target(target, cases, seed, work, out, case_timeout)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", choices=TARGETS, action="append", help="fuzz only these (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"), help="where crashing inputs are saved")
    parser.add_argument("--case-timeout", type=float, default=20.0)
    args = parser.parse_args()
    cv2.utils.logging.setLogLevel(0)  # OpenCV's own log lines (libjpeg's warnings still reach stderr)
    results = fuzz(args.cases, args.seed, tuple(args.target or TARGETS), args.out, args.case_timeout)
    for target, r in results.items():
        print(f"{target:9s} {r['cases']:6d} cases  {r['crashes']:4d} crashes  {r['seconds']:7.1f} s  "
              f"{json.dumps(r['signatures']) if r['signatures'] else ''}")
    total = sum(r["crashes"] for r in results.values())
    print(f"total: {sum(r['cases'] for r in results.values())} cases, {total} crashes (seed {args.seed})")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

"""Running a bundle's graphs over an image array: full-graph outputs and chained stage outputs.

Used by build (verification, threshold fitting, calibration feeds for stage graphs) and later by profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edgekd.core.preprocess import normalize
from edgekd.core.spec import InputSpec
from edgekd.core.vote import softmax
from edgekd.device.runners import Runner, make_runner


def normalized_batches(images: np.ndarray, spec: InputSpec, batch: int = 64) -> Iterator[np.ndarray]:
    """(N, H, W, C) uint8 at spec size → (B, C, H, W) float32 batches, normalised as the runtime does."""
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        out = np.empty((len(chunk), *spec.shape), dtype=np.float32)  # (B, C, H, W)
        for j, img in enumerate(chunk):
            normalize(img, spec, out=out[j])
        yield out


def run_full(runner: Runner, images: np.ndarray, spec: InputSpec, n_exits: int, batch: int = 64) -> np.ndarray:
    """(E, N, K) per-exit probabilities from the full graph."""
    chunks = []
    for x in normalized_batches(images, spec, batch):
        out = runner.infer({"image": x}, [f"logits{i}" for i in range(n_exits)])
        chunks.append(np.stack([softmax(out[f"logits{i}"].astype(np.float32)) for i in range(n_exits)]))
    return np.concatenate(chunks, axis=1)


def run_chain(runners: list[Runner], images: np.ndarray, spec: InputSpec, batch: int = 64,
              on_segment_input: Callable[[int, dict[str, np.ndarray]], None] | None = None) -> np.ndarray:
    """(E, N, K) per-exit probabilities from chaining the stage graphs; ``on_segment_input(i, feed)`` sees every
    stage's input (to collect calibration feeds for stage graphs)."""
    n_exits = len(runners)
    chunks = []
    for x in normalized_batches(images, spec, batch):
        feed = {"image": x}
        per_exit = []
        for i, runner in enumerate(runners):
            if on_segment_input is not None:
                on_segment_input(i, feed)
            out = runner.infer(feed)
            per_exit.append(softmax(out[f"logits{i}"].astype(np.float32)))
            if i < n_exits - 1:
                feed = {f"feat{i}": out[f"feat{i}"]}
        chunks.append(np.stack(per_exit))
    return np.concatenate(chunks, axis=1)


def open_runners(backend: str, paths: list[Path], **options) -> list[Runner]:
    return [make_runner(backend, p, **options).activate() for p in paths]


def close_runners(runners: list[Runner]) -> None:
    for r in runners:
        r.deactivate()

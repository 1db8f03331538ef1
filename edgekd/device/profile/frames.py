"""Per-frame timing of the runtime pipeline, split into preprocessing, network and postprocessing.

What ``edgekd run`` does to every camera frame is timed here with the same :class:`~edgekd.device.runtime.pipeline.Pipeline`:
``pre`` (colour conversion, resize from the camera size, normalise), ``network`` (the runner calls; in early exit
only the segments a frame needs), ``post`` (softmax, threshold checks, vote) and ``total`` (the whole call). The
frames are the labelled images scaled up to a camera-sized BGR frame (640×480 by default), so preprocessing costs
what it costs on a camera and early exit sees real images. Torch-free (device side).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgekd.device.options import FRAME_SIZE
from edgekd.device.profile.energy import PowerSampler, Rail
from edgekd.device.profile.latency import energy_entry, measure, summarize
from edgekd.device.runtime.pipeline import Pipeline

PARTS = ("pre", "network", "post")


def camera_frames(images: np.ndarray, frame_size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """(N, H, W, C) RGB or gray uint8 images → N BGR (or gray) frames of ``frame_size`` (width, height)."""
    frames = []
    for img in images:
        if img.shape[-1] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        frames.append(cv2.resize(img, frame_size, interpolation=cv2.INTER_LINEAR))
    return frames


class _Recorder:
    """Keeps the predictions made while it is entered (the timed calls of :func:`measure`, not the warm-up) and
    runs a power sampler over the same span."""

    def __init__(self, sampler: PowerSampler | None):
        self.sampler = sampler
        self.predictions: list = []
        self.recording = False

    def __enter__(self) -> _Recorder:
        self.predictions.clear()
        self.recording = True
        if self.sampler is not None:
            self.sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.recording = False
        if self.sampler is not None:
            self.sampler.__exit__(*exc)


def time_mode(path: str | Path, frames: list[np.ndarray], mode: str, *, rails: list[Rail] | None = None,
              runner_options: dict[str, Any] | None = None, **measure_kw) -> dict[str, Any]:
    """Run ``frames`` (cycled) through a ``mode`` pipeline; statistics of pre/network/post/total in ms."""
    recorder = _Recorder(PowerSampler(rails) if rails else None)
    with Pipeline.from_bundle(path, mode=mode, backend_options=runner_options) as pipe:
        state = {"k": 0}

        def one_frame() -> None:
            pred = pipe(frames[state["k"] % len(frames)])
            state["k"] += 1
            if recorder.recording:
                recorder.predictions.append(pred)

        total = measure(one_frame, around=recorder, **measure_kw)
        n_exits = pipe.num_exits
    preds = recorder.predictions
    exits = np.bincount([p.exit for p in preds], minlength=n_exits)
    out: dict[str, Any] = {part: summarize([p.timings[part] for p in preds]).to_dict() for part in PARTS}
    out["total"] = total.to_dict()
    out["fps"] = 1e3 / total.mean if total.mean > 0 else float("inf")
    out["exit_fraction"] = (exits / exits.sum()).tolist()
    out["energy"] = energy_entry(recorder.sampler, total)
    return out


def frame_timings(path: str | Path, images: np.ndarray, *, modes: tuple[str, ...] = ("early-exit", "full-vote"),
                  frame_size: tuple[int, int] = FRAME_SIZE, **kw) -> dict[str, Any]:
    """``{"frame_size": [w, h], "modes": {mode: time_mode(...)}}`` for a bundle, on camera-sized frames."""
    frames = camera_frames(images, frame_size)
    return {"frame_size": list(frame_size), "modes": {mode: time_mode(path, frames, mode, **kw) for mode in modes}}

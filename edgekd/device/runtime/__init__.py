"""The runtime (device side, no torch): frame sources, preprocessing, the inference pipeline and `edgekd run`.

Embedding edgekd in an application::

    from edgekd.device.runtime import Pipeline
    with Pipeline.from_bundle("bundles/student-int8", mode="early-exit") as pipeline:
        pred = pipeline(frame_bgr)  # Prediction(label, class_name, confidence, exit, probs, timings, mode)
"""

from edgekd.device.runtime.pipeline import Pipeline, Prediction
from edgekd.device.runtime.sources import Frame, open_source

__all__ = ["Frame", "Pipeline", "Prediction", "open_source"]

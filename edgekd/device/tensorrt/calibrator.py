"""The entropy calibrator for implicit int8 quantization: int8 on a DLA core with TensorRT 8.5-10.x, the one case
edgekd calibrates inside TensorRT (:func:`~edgekd.device.tensorrt.versions.use_implicit_calibrator`).

It feeds float32 NCHW batches of the calibration profile's shape through edgekd's CUDA layer and keeps TensorRT's
calibration cache in a file, written atomically. The class is made inside :func:`make_calibrator`, because it
subclasses ``trt.IInt8EntropyCalibrator2`` and ``tensorrt`` is never imported at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.atomic import atomic_write
from edgekd.device import cuda


def make_calibrator(trt: Any, batches: Iterable[np.ndarray], shape: tuple[int, ...], cache: Path | None,
                     log: Callable[[str], Any]) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` feeding ``batches`` of exactly ``shape`` (others are skipped, with a note)
    and reading / writing TensorRT's calibration cache at ``cache``; its ``fed`` counts the batches given, and
    ``close()`` frees its device buffer once the build is done."""
    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds float32 NCHW batches of exactly ``shape`` (the calibration profile); others are skipped."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind trampolines must be initialised explicitly
            self._batches = iter(batches)
            self._cuda: cuda.Stream | None = None  # created with the first batch
            self._ptr = 0
            self.fed = 0

        def get_batch_size(self) -> int:
            return 1  # explicit-batch network: the batch is part of the shape (as Polygraphy does)

        def get_batch(self, names: list[str]) -> list[int] | None:
            for batch in self._batches:
                x = np.ascontiguousarray(batch, dtype=np.float32)
                if x.shape != shape:
                    log(f"calibration: skipping a batch of shape {x.shape} (the calibration profile is {shape})")
                    continue
                if self._cuda is None:
                    self._cuda = cuda.Stream()
                    self._ptr = self._cuda.runtime.malloc(x.nbytes)
                self._cuda.htod(self._ptr, x)
                self._cuda.synchronize()
                self.fed += 1
                return [self._ptr] * len(names)
            return None

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.is_file() and cache.stat().st_size:
                log(f"calibration: using cache {cache}")
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                atomic_write(cache, lambda f: f.write(bytes(data)))

        def close(self) -> None:
            if self._cuda is not None:
                self._cuda.synchronize()
                self._cuda.runtime.free(self._ptr)
                self._cuda.release()
                self._cuda = None

    return _EntropyCalibrator()


__all__ = ["make_calibrator"]

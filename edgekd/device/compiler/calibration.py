"""INT8 calibration: activation ranges from ONNX Runtime's calibrators, computed once, cached (device side, no torch).

The ranges are backend-neutral (the raw low/high of every activation the quantizer will touch); each backend's Q/DQ
form is derived from them by :func:`edgekd.device.compiler.quantize.quantize_qdq`. The cache is a directory of JSON files (the
repository's ``calibration/``) keyed by the model's hash, the method and the calibration data's hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.atomic import atomic_write_json
from edgekd.core.errors import EdgekdError
from edgekd.core.manifest import sha256_file
from edgekd.core.onnx_graph import read_graph
from edgekd.device.compiler.quantize import (
    Ranges,
    check_ranges,
    graph_io,
    one_line,
    ort_session,
    prepared_model,
    quant_op_types,
    require_model,
)
from edgekd.device.options import CALIB_METHODS

DEFAULT_PERCENTILE = 99.99

#: Histogram bins of the entropy (KL) search. ORT's default (128, as many as the quantized bins) leaves a single
#: candidate threshold, i.e. min/max; TensorRT's calibrator uses 2048, whose O(bins^2) pure-Python search in ORT takes
#: ~0.6 s per tensor. 512 costs ~0.1 s per tensor (thresholds within ~15% of 2048's on a test CNN).
ENTROPY_BINS = 512
#: Bump when the calibration settings above (or the op types calibrated) change: older entries then miss.
CACHE_VERSION = 1
#: Batches handed to ORT's calibrator at a time: bounds the activations it holds in memory (the histogram
#: calibrators keep every calibrated tensor of every batch of a call until the call ends).
_CHUNK = 4
_KEY_PART = re.compile(r"^[A-Za-z0-9._+-]+$")


def _check_method(method: str) -> None:
    if method not in CALIB_METHODS:
        raise EdgekdError(f"unknown calibration method {method!r} (choose from {', '.join(CALIB_METHODS)})")


def _check_batches(batches: Any) -> list[dict[str, np.ndarray]]:
    if isinstance(batches, Mapping) or not isinstance(batches, Sequence) or len(batches) == 0:
        raise EdgekdError("no calibration data: give at least one batch of feeds ({input name: array})")
    out = []
    for i, batch in enumerate(batches):
        if not isinstance(batch, Mapping) or not batch:
            raise EdgekdError(f"calibration batch {i} is not a non-empty {{input name: array}} mapping")
        arrays = {str(k): np.ascontiguousarray(v) for k, v in batch.items()}
        if any(a.ndim == 0 or a.shape[0] == 0 for a in arrays.values()):
            raise EdgekdError(f"calibration batch {i} holds an empty array")
        out.append(arrays)
    return out


def data_sha256(batches: list[dict[str, np.ndarray]]) -> str:
    """Hash of calibration feeds: order, input names, dtypes, shapes and bytes of every batch."""
    h = hashlib.sha256()
    for batch in _check_batches(batches):
        h.update(b"batch")
        for name in sorted(batch):
            a = batch[name]
            h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
            h.update(a.tobytes())
    return h.hexdigest()


class _Reader:
    """ORT ``CalibrationDataReader`` over a list of feeds (duck-typed: only ``get_next`` is called)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _feeds(model, batches: list[dict[str, np.ndarray]], path: Path) -> list[dict[str, np.ndarray]]:
    """Batches restricted to and checked against the graph's inputs (names, float dtype of the graph)."""
    from onnx import helper

    inputs = dict(graph_io(model)[0])
    feeds = []
    for i, batch in enumerate(batches):
        missing = sorted(set(inputs) - set(batch))
        extra = sorted(set(batch) - set(inputs))
        if missing or extra:
            raise EdgekdError(f"calibration batch {i} does not match the inputs of {path}: "
                              f"missing {missing}, unknown {extra} (graph inputs: {sorted(inputs)})")
        feed = {}
        for name, elem in inputs.items():
            dtype = helper.tensor_dtype_to_np_dtype(elem) if elem else batch[name].dtype
            feed[name] = np.ascontiguousarray(batch[name], dtype=dtype)
        feeds.append(feed)
    return feeds


def _as_pair(value) -> tuple[float, float]:
    lo, hi = value.range_value if hasattr(value, "range_value") else value[:2]
    return float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])


def _calibrator(model_path: Path, method: str, percentile: float):
    """ORT's calibrator for ``method`` -- what ``create_calibrator`` builds, with its session made by
    :func:`edgekd.device.runners.onnxruntime.create_session` (``create_calibrator``'s own fails once a global thread pool exists)."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import EntropyCalibrater, MinMaxCalibrater, PercentileCalibrater

    cls, options = {
        "minmax": (MinMaxCalibrater, {"symmetric": False, "moving_average": False}),
        "entropy": (EntropyCalibrater, {"symmetric": False, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128}),
        # |x| histogram, threshold clipped to the observed min/max (create_calibrator's defaults, our percentile)
        "percentile": (PercentileCalibrater, {"symmetric": True, "num_bins": 2048, "percentile": percentile}),
    }[method]
    accepted = inspect.signature(cls.__init__).parameters
    calibrator = cls(model_path, quant_op_types(), augmented_model_path=str(model_path.with_name("augmented.onnx")),
                     **{k: v for k, v in options.items() if k in accepted})
    calibrator.augment_graph()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as create_inference_session does
    calibrator.infer_session = ort_session(calibrator.augmented_model_path, so)
    return calibrator


def compute_ranges(onnx_path: str | Path, batches: list[dict[str, np.ndarray]], method: str, *,
                   percentile: float = DEFAULT_PERCENTILE) -> Ranges:
    """Activation ranges of ``onnx_path`` over ``batches`` with ORT's calibrators (as ``create_calibrator`` makes them).

    ``minmax``: global min/max. ``entropy``: KL-divergence thresholds (:data:`ENTROPY_BINS` bins). ``percentile``:
    ``percentile`` of |x| over a 2048-bin histogram, clipped to the observed min/max. The model is calibrated in its
    pre-processed form (pre-processed here if it was not), so the tensor names are those
    :func:`edgekd.device.compiler.quantize.quantize_qdq` sees. Returns {tensor name: (low, high)} as Python floats.
    """
    _check_method(method)
    require_model(onnx_path)
    data = _check_batches(batches)
    if method == "percentile" and not 0.0 < float(percentile) <= 100.0:
        raise EdgekdError(f"calibration percentile must be in (0, 100], got {percentile}")
    with prepared_model(onnx_path) as prepared:
        feeds = _feeds(read_graph(prepared), data, Path(onnx_path))
        try:
            calibrator = _calibrator(prepared, method, float(percentile))
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
                for start in range(0, len(feeds), _CHUNK):
                    calibrator.collect_data(_Reader(feeds[start:start + _CHUNK]))
                tensors = calibrator.compute_data()
            del calibrator  # its session holds the augmented model, which lives in the temporary directory
        except EdgekdError:
            raise
        except Exception as e:  # ORT raises its own types, e.g. for a feed of the wrong shape or rank
            raise EdgekdError(f"calibrating {onnx_path} failed: {one_line(e)}") from e
    ranges = {name: _as_pair(value) for name, value in tensors.items()}
    if not ranges:
        raise EdgekdError(f"{onnx_path} has no activation that INT8 quantization could calibrate")
    try:
        return check_ranges(ranges)
    except EdgekdError as e:
        raise EdgekdError(f"calibration of {onnx_path} gave {e} (non-finite calibration data?)") from e


def ranges_digest(ranges: Ranges) -> str:
    """sha256 of ``ranges`` as the cache stores them (names sorted, floats as JSON writes them): an entry whose
    ranges no longer match the digest written with them was edited or damaged, and is recalibrated."""
    canonical = json.dumps({str(k): [float(lo), float(hi)] for k, (lo, hi) in ranges.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class CalibrationCache:
    """A directory of ``<key>.json`` files, each holding the ranges of one (model, method, data) triple and their
    digest (:func:`ranges_digest`): an entry is reused only when its ranges match it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, model_sha: str, method: str, data_sha: str) -> str:
        for part, what in ((model_sha, "model hash"), (method, "method"), (data_sha, "data hash")):
            if not isinstance(part, str) or not _KEY_PART.match(part):
                raise EdgekdError(f"invalid calibration cache {what}: {part!r}")
        return f"{model_sha[:16]}-{method}-{data_sha[:16]}"

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY_PART.match(key):
            raise EdgekdError(f"invalid calibration cache key: {key!r}")
        return self.root / f"{key}.json"

    def load(self, key: str) -> Ranges | None:
        """The cached ranges, or None when absent, unreadable or of another cache version (a miss, never an error)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != CACHE_VERSION or doc.get("key") != key:
                return None
            ranges = check_ranges({str(k): tuple(v) for k, v in doc["ranges"].items()})
        except (OSError, ValueError, TypeError, AttributeError, KeyError, RecursionError, EdgekdError) as e:
            warnings.warn(f"ignoring unreadable calibration cache entry {path}: {e}", RuntimeWarning, stacklevel=2)
            return None
        if doc.get("ranges_sha256") != ranges_digest(ranges):
            warnings.warn(f"calibration cache entry {path} does not match its digest (edited, damaged or written "
                          "before digests): recalibrating", RuntimeWarning, stacklevel=2)
            return None
        return ranges

    def save(self, key: str, ranges: Ranges, meta: dict) -> Path | None:
        """Write the entry atomically (a reader never sees half a file); returns its path. The cache only saves
        time: a folder that cannot be written (read-only, full, a file in the way) is a warning and None, never a
        failed build (an explicit ``--cache-dir`` is checked before the build starts)."""
        path = self.path(key)
        valid = check_ranges(ranges)
        doc = {"version": CACHE_VERSION, "key": key, "meta": dict(meta),
               "ranges": {name: [lo, hi] for name, (lo, hi) in valid.items()}, "ranges_sha256": ranges_digest(valid)}
        try:
            atomic_write_json(path, doc)
        except (OSError, EdgekdError) as e:
            warnings.warn(f"calibration cache entry not written ({' '.join(str(e).split())})", RuntimeWarning,
                          stacklevel=2)
            return None
        return path


def _method_tag(method: str, percentile: float) -> str:
    return f"percentile{float(percentile):g}" if method == "percentile" else method


def calibrate(onnx_path: str | Path, batches: list[dict[str, np.ndarray]], method: str,
              cache: CalibrationCache | None, *, percentile: float = DEFAULT_PERCENTILE) -> tuple[Ranges, bool]:
    """Ranges of ``onnx_path`` over ``batches``, from ``cache`` when it holds them: ``(ranges, reused_from_cache)``.

    The key hashes the model file as given (pass the pre-processed model, whose bytes are deterministic), the method
    (with its percentile) and the feeds; a miss computes the ranges with :func:`compute_ranges` and stores them.
    """
    _check_method(method)
    path = require_model(onnx_path)
    data = _check_batches(batches)
    if cache is None:
        return compute_ranges(path, data, method, percentile=percentile), False
    model_sha, data_sha = sha256_file(path), data_sha256(data)
    key = cache.key(model_sha, _method_tag(method, percentile), data_sha)
    cached = cache.load(key)
    if cached is not None:
        return cached, True
    ranges = compute_ranges(path, data, method, percentile=percentile)
    import onnxruntime

    meta = {
        "model_sha256": model_sha, "model": path.name, "method": method, "data_sha256": data_sha,
        "batches": len(data), "samples": int(sum(next(iter(b.values())).shape[0] for b in data)),
        "inputs": sorted(data[0]), "tensors": len(ranges), "onnxruntime": onnxruntime.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if method == "percentile":
        meta["percentile"] = float(percentile)
    cache.save(key, ranges, meta)
    return ranges, False

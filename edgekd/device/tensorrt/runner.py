"""TensorRT backend: runs a serialized engine (from :mod:`edgekd.device.tensorrt.build`) on the GPU or a DLA core.

Needs a TensorRT the build's version gate admits (8.5 to 11.x, :func:`~edgekd.device.tensorrt.loader.import_tensorrt`
applies it here too; 8.5 brought the name-based tensor API: ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``) and a CUDA runtime for device memory, through :mod:`edgekd.device.cuda` (the system's
libcudart by ctypes). A DLA engine on a device without that DLA core is refused in one line, by the rule the build
applies (:func:`edgekd.device.options.dla_core_problem`). TensorRT is imported when a runner is activated, never
when this module is imported, so it loads on any machine.

In a chain (:class:`edgekd.device.chain.Chain`) the segment runners share one CUDA stream (``activate(follows=)``),
and a ``feat{i}`` output asked for with ``keep_on_device`` comes back as a :class:`~edgekd.device.cuda.DeviceArray`
that the next segment's runner binds directly as its input: the feature map never leaves the GPU unless someone
reads it (a partial batch exiting early, a calibration hook). Only what the caller decides on (``logits{i}``) is
copied to the host, with one stream synchronisation per call; host copies go through page-locked buffers, one per
tensor allocated at activation (:class:`~edgekd.device.cuda.PinnedBuffer`), where the runtime can give them.

Rules of TensorRT's runtime API this module follows (NVIDIA/TensorRT ``include/NvInferRuntime.h``, the Python
docstrings in ``python/docstrings/infer/pyCoreDoc.h`` and ``samples/python/common_runtime.py``; each is checked
by a CPU test in ``tests/device/trt/test_runner.py`` against a fake engine):

* every input shape is set with ``set_input_shape`` (False when outside the optimization profile) before output
  shapes are read from the context;
* ``get_tensor_profile_shape(name, profile)`` answers for inputs only (min, opt, max), so output buffers are sized
  from the context's output shapes once the inputs are set to the profile's max, as the sample's
  ``allocate_buffers`` does;
* before ``execute_async_v3`` every input and every output tensor has an address, and each address is at least
  256-byte aligned (``cudaMalloc`` returns 256-byte-aligned memory; edgekd binds only whole buffers, never an
  offset into one);
* ``execute_async_v3`` runs on a non-default stream (the default stream costs extra device synchronisations),
  and memory bound to its tensors is neither changed nor freed before the stream is synchronised.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekd.core.errors import EdgekdError
from edgekd.device import cuda
from edgekd.device.options import dla_core_problem
from edgekd.device.runners.base import Runner
from edgekd.device.tensorrt.loader import create_runtime, import_tensorrt, tensorrt_logger


def _sidecar_dla_core(path: Any) -> int | None:
    """The DLA core recorded next to the engine by the builder (``<engine>.json``), if any."""
    try:
        return json.loads(path.with_name(path.name + ".json").read_text()).get("dla_core")
    except (OSError, ValueError, AttributeError):
        return None


class TensorRTRunner(Runner):
    """Options: ``dla_core`` (DLA core to run a DLA engine on; default: the one recorded when it was built).

    :attr:`batch_range` is the engine's optimization profile (min, max) batch. A batch smaller than min (DLA
    engines built for a fixed batch) is padded up to min here and the padded rows are dropped from the outputs.
    """

    backend = "tensorrt"
    pads_short_batches = True

    @property
    def batch_range(self) -> tuple[int, int | None]:
        return getattr(self, "_batch_range", (1, None))

    # lifecycle -------------------------------------------------------------------------------------------------
    def _activate(self) -> None:
        trt = import_tensorrt()
        self._buffers: dict[str, int] = {}  # tensor name → device pointer, sized for the profile's max shapes
        self._capacity: dict[str, int] = {}  # tensor name → bytes behind that pointer
        self._lent: dict[str, weakref.ref] = {}  # output name → the DeviceArray last returned for it
        self._staged: list[np.ndarray] = []  # host inputs kept alive until the stream is synchronised
        self._pinned: dict[str, cuda.PinnedBuffer] = {}  # tensor name → page-locked host staging buffer
        self._stream: cuda.Stream | None = None
        try:
            self._stream = self._shared_stream()
            self._load(trt)
        except BaseException:
            self._deactivate()
            raise

    def _shared_stream(self) -> cuda.Stream:
        """The stream of the runner this one follows in a chain, when it is an active TensorRT runner on the same
        CUDA runtime (one stream per chain: no synchronisation between segments), else a new one."""
        rt = cuda.runtime()
        peer = self.follows
        stream = getattr(peer, "_stream", None) if isinstance(peer, TensorRTRunner) and peer.is_active else None
        if stream is not None and not stream.closed and stream.runtime is rt:
            return stream.retain()
        return cuda.Stream(rt)

    def _load(self, trt: Any) -> None:
        self._logger = tensorrt_logger(trt)  # the process's one logger, shared with the builder
        self._runtime = create_runtime(trt, self._logger)
        dla_core = self.options.get("dla_core", _sidecar_dla_core(self.path))
        if dla_core is not None:
            problem = dla_core_problem(int(dla_core), "tensorrt", int(self._runtime.num_DLA_cores), "this device")
            if problem:
                raise EdgekdError(f"{self.path.name}: {problem}")
            self._runtime.DLA_core = int(dla_core)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EdgekdError(f"tensorrt {trt.__version__} cannot load {self.path.name}: engines only load on the "
                              "TensorRT version and GPU that built them; rebuild it here")
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise EdgekdError(f"tensorrt cannot create an execution context for {self.path.name} (out of memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        # Allocate once for the largest shapes the optimization profile allows; smaller batches reuse the buffers.
        self._max_shapes: dict[str, tuple[int, ...]] = {}
        batches = []  # (min, max) batch of each input
        for name in self.input_names:
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                low, _opt, high = (tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
                batches.append((int(low[0]), int(high[0])))
                shape = high
            else:  # built for one batch (a fixed-batch ONNX input)
                batches.append((int(shape[0]), int(shape[0])))
            self._max_shapes[name] = shape
            if not self._context.set_input_shape(name, shape):
                raise EdgekdError(f"{self.path.name}: TensorRT refuses input {name} at its profile's max {shape}")
        self._batch_range = (max(b[0] for b in batches), min(b[1] for b in batches)) if batches else (1, None)
        for name in self.output_names:  # output shapes follow from the inputs just set (profile max)
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EdgekdError(f"{self.path.name}: output {name} has a data-dependent shape {shape}; unsupported")
            self._max_shapes[name] = shape
        assert self._stream is not None
        for name in names:
            self._capacity[name] = max(1, math.prod(self._max_shapes[name]) * self._dtypes[name].itemsize)
            self._buffers[name] = self._stream.runtime.malloc(self._capacity[name])
        self._pinned = self._pin(names)

    def _pin(self, names: list[str]) -> dict[str, cuda.PinnedBuffer]:
        """A page-locked host buffer per tensor, as large as its device buffer, through which every host copy
        goes (:class:`~edgekd.device.cuda.PinnedBuffer`: one asynchronous DMA instead of CUDA's chunked staging).
        Page-locked memory is a speed matter only: where the runtime cannot give it, copies go through ordinary
        memory as before."""
        assert self._stream is not None
        pinned: dict[str, cuda.PinnedBuffer] = {}
        try:
            for name in names:
                pinned[name] = cuda.PinnedBuffer(self._stream.runtime, self._capacity[name])
        except cuda.CudaError:
            for buffer in pinned.values():
                buffer.free()
            return {}
        return pinned

    def _deactivate(self) -> None:
        stream = getattr(self, "_stream", None)
        try:
            if stream is not None:
                stream.synchronize()  # nothing bound to the engine may be freed while work on it is in flight
                self._release_lent()
        finally:
            for attr in ("_context", "_engine", "_runtime"):  # context before engine before runtime
                if hasattr(self, attr):
                    delattr(self, attr)
            if stream is not None:
                try:
                    for ptr in self._buffers.values():
                        stream.runtime.free(ptr)
                finally:
                    for buffer in self._pinned.values():
                        buffer.free()
                    self._buffers, self._staged, self._pinned, self._stream = {}, [], {}, None
                    stream.release()

    def _release_lent(self) -> None:
        """Detach the DeviceArrays this runner returned that are still referenced: their buffers are about to be
        overwritten (the next run) or freed (deactivation), so their data move to the host first. Arrays nobody
        holds any more (the chain's, once a frame is decided) cost nothing."""
        lent, self._lent = self._lent, {}
        for ref in lent.values():
            array = ref()
            if array is not None and array.on_device:
                try:
                    array.detach()
                except EdgekdError:
                    array.ptr = None  # unreadable now; reading it raises rather than return stale data

    # inference -------------------------------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self._run(feed, outputs, ())

    def _run(self, feed: dict[str, Any], outputs: list[str], keep_on_device: Sequence[str]) -> dict[str, Any]:
        unknown = [n for n in outputs if n not in self.output_names]
        if unknown:
            raise EdgekdError(f"{self.path.name}: unknown outputs {unknown}; it has {self.output_names}")
        ctx, stream = self._context, self._stream
        assert stream is not None
        self._release_lent()  # execute_async_v3 below overwrites every output buffer
        n = len(feed[self.input_names[0]])
        m = max(n, self._batch_range[0])  # the batch the engine runs: n padded up to the profile's min
        for name in self.input_names:
            value = feed[name]
            shape = (m, *tuple(value.shape)[1:])
            limit = self._max_shapes[name]
            fits = len(shape) == len(limit) and all(d <= top for d, top in zip(shape, limit))
            if not fits or not ctx.set_input_shape(name, shape):
                raise EdgekdError(f"{self.path.name}: input {name} has shape {tuple(value.shape)}, outside the "
                                  f"engine's optimisation profile (at most {limit}); rebuild with a larger batch")
            ctx.set_tensor_address(name, self._stage_input(name, value, n, m))
        for name in self.output_names:  # every output needs an address, asked for or not
            ctx.set_tensor_address(name, self._buffers[name])
        if not ctx.execute_async_v3(stream.handle):
            raise EdgekdError(f"TensorRT failed to run {self.path.name} (see the TensorRT log above)")
        results: dict[str, Any] = {}
        on_host = []
        for name in outputs:
            shape = tuple(ctx.get_tensor_shape(name))  # (m, ...) at the padded batch
            rows = n if shape and shape[0] == m else None  # drop padded rows
            if name in keep_on_device:
                kept = (n, *shape[1:]) if rows is not None else shape
                array = cuda.DeviceArray(self._buffers[name], kept, self._dtypes[name], stream,
                                         capacity=self._capacity[name])
                self._lent[name] = weakref.ref(array)
                results[name] = array
            else:
                pinned = self._pinned.get(name)
                host = np.empty(shape, self._dtypes[name]) if pinned is None else pinned.view(shape, self._dtypes[name])
                stream.dtoh(host, self._buffers[name])
                results[name] = host if rows is None or rows == m else host[:rows]
                on_host.append(name)
        if on_host or self._staged:
            stream.synchronize()
            self._staged = []
        for name in on_host:
            # a page-locked buffer is overwritten by the next call: what is returned is a copy of it
            results[name] = results[name].astype(np.float32, copy=name in self._pinned)
        return results

    def _stage_input(self, name: str, value: Any, n: int, m: int) -> int:
        """The device address to bind for input ``name`` holding ``value`` (n rows, run as m rows).

        A :class:`~edgekd.device.cuda.DeviceArray` of the right dtype is bound where it lies when its buffer holds
        m rows (the previous segment's ``feat``: no copy); one written on another stream is first copied to this
        runner's buffer and waited for, so its producer may overwrite it afterwards. Anything else is a host
        array: copied to this runner's buffer, padded with zero rows up to m, through the page-locked staging
        buffer where there is one (kept unchanged until the stream is synchronised, at the end of the call).
        """
        stream, own, dtype = self._stream, self._buffers[name], self._dtypes[name]
        assert stream is not None
        if isinstance(value, cuda.DeviceArray) and value.on_device and value.dtype == dtype:
            assert value.ptr is not None
            if value.stream is stream:  # work on one stream runs in order: no synchronisation needed
                if value.capacity >= value.nbytes // max(n, 1) * m:
                    return value.ptr
                stream.dtod(own, value.ptr, value.nbytes)  # too small to pad in place: rows n..m-1 are unused
                return own
            value.stream.dtod(own, value.ptr, value.nbytes)
            value.stream.synchronize()  # streams do not order each other: finish the copy before anyone moves on
            return own
        x = np.asarray(value)  # (n, ...); np.asarray reads a detached DeviceArray's host copy
        pinned = self._pinned.get(name)
        if pinned is not None or m > n:  # (m, ...): rows n.. are zeros, dropped from the outputs
            staged = np.empty((m, *x.shape[1:]), dtype) if pinned is None else pinned.view((m, *x.shape[1:]), dtype)
            staged[:n] = x
            staged[n:] = 0
            x = staged
        else:
            x = np.ascontiguousarray(x, dtype=dtype)
        stream.htod(own, x)
        self._staged.append(x)
        return own

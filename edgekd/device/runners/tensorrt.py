"""TensorRT backend: runs a serialized engine (built by :mod:`edgekd.device.compiler.tensorrt`) on the GPU or a DLA core.

Needs TensorRT >= 8.5 (the name-based tensor API: ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``) and CUDA Python bindings for device memory: ``cuda-python`` (``cuda.bindings.runtime``, or
``cuda.cudart`` in releases before 12.6) or else ``pycuda``. All of them are imported when a runner is activated,
never when this module is imported, so it loads on any machine.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from edgekd.core.errors import EdgekdError
from edgekd.device.runners.base import Runner


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgekdError("tensorrt is not installed (it ships with JetPack; on x86 `pip install tensorrt`)") from None
    return trt


class CudaMemory:
    """Device buffers, host<->device copies and one stream, through cuda-python or (failing that) pycuda."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            try:
                from cuda import cudart as rt
            except ImportError:
                rt = None
        self._rt, self._allocs = rt, {}
        if rt is not None:
            self._stream = self._call("cudaStreamCreate")
            self.stream_handle = int(self._stream)
            return
        try:
            import pycuda.autoinit  # noqa: F401  (creates a context and makes it current)
            import pycuda.driver as drv
        except ImportError:
            raise EdgekdError("the TensorRT backend needs CUDA Python bindings: pip install cuda-python "
                              "(or pycuda)") from None
        self._drv, self._stream = drv, drv.Stream()
        self.stream_handle = int(self._stream.handle)

    def _call(self, fn: str, *args: Any) -> Any:
        err, *rest = getattr(self._rt, fn)(*args)
        if int(err) != 0:
            raise EdgekdError(f"CUDA {fn} failed: {getattr(err, 'name', err)}")
        return rest[0] if rest else None

    def malloc(self, nbytes: int) -> int:
        if self._rt is not None:
            return int(self._call("cudaMalloc", max(1, nbytes)))
        alloc = self._drv.mem_alloc(max(1, nbytes))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def htod(self, ptr: int, host: np.ndarray) -> None:
        if self._rt is not None:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._call("cudaMemcpyAsync", ptr, host.ctypes.data, host.nbytes, kind, self._stream)
        else:
            self._drv.memcpy_htod_async(ptr, host, self._stream)

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        if self._rt is not None:
            kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._call("cudaMemcpyAsync", host.ctypes.data, ptr, host.nbytes, kind, self._stream)
        else:
            self._drv.memcpy_dtoh_async(host, ptr, self._stream)

    def synchronize(self) -> None:
        if self._rt is not None:
            self._call("cudaStreamSynchronize", self._stream)
        else:
            self._stream.synchronize()

    def free(self, ptr: int) -> None:
        if self._rt is not None:
            self._call("cudaFree", ptr)
        else:
            self._allocs.pop(ptr).free()

    def close(self) -> None:
        self.synchronize()
        if self._rt is not None:
            self._call("cudaStreamDestroy", self._stream)
        self._stream = None


def _sidecar_dla_core(path: Any) -> int | None:
    """The DLA core recorded next to the engine by the builder (``<engine>.json``), if any."""
    try:
        return json.loads(path.with_name(path.name + ".json").read_text()).get("dla_core")
    except (OSError, ValueError, AttributeError):
        return None


class TensorRTRunner(Runner):
    """Options: ``dla_core`` (DLA core to run a DLA engine on; default: the one recorded when it was built)."""

    backend = "tensorrt"

    def _activate(self) -> None:
        trt = import_tensorrt()
        self._cuda = CudaMemory()
        self._buffers: dict[str, int] = {}
        try:
            self._load(trt)
        except BaseException:
            self._deactivate()
            raise

    def _load(self, trt: Any) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        dla_core = self.options.get("dla_core", _sidecar_dla_core(self.path))
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EdgekdError(f"tensorrt {trt.__version__} cannot load {self.path.name}: engines only load on the "
                              "TensorRT version and GPU that built them; rebuild it here")
        if not hasattr(engine, "num_io_tensors"):
            raise EdgekdError(f"TensorRT {trt.__version__} is too old: edgekd's runner needs TensorRT >= 8.5")
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise EdgekdError(f"tensorrt cannot create an execution context for {self.path.name} (out of memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        # Allocate once for the largest shapes the optimisation profile allows; smaller batches reuse the buffers.
        self._max_shapes: dict[str, tuple[int, ...]] = {}
        for name in self.input_names:
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = tuple(engine.get_tensor_profile_shape(name, 0)[2])
            self._max_shapes[name] = shape
            self._context.set_input_shape(name, shape)
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EdgekdError(f"{self.path.name}: output {name} has a data-dependent shape {shape}; unsupported")
            self._max_shapes[name] = shape
        for name in names:
            self._buffers[name] = self._cuda.malloc(math.prod(self._max_shapes[name]) * self._dtypes[name].itemsize)

    def _deactivate(self) -> None:
        cuda = getattr(self, "_cuda", None)
        for attr in ("_context", "_engine", "_runtime"):  # context before engine before runtime
            if hasattr(self, attr):
                delattr(self, attr)
        if cuda is not None:
            try:
                for ptr in self._buffers.values():
                    cuda.free(ptr)
                cuda.close()
            finally:
                self._buffers, self._cuda = {}, None

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        unknown = [n for n in outputs if n not in self.output_names]
        if unknown:
            raise EdgekdError(f"{self.path.name}: unknown outputs {unknown}; it has {self.output_names}")
        ctx, cuda = self._context, self._cuda
        staged = []  # keep the host inputs alive until the stream is synchronised
        for name in self.input_names:
            x = np.ascontiguousarray(feed[name], dtype=self._dtypes[name])
            limit = self._max_shapes[name]
            fits = x.ndim == len(limit) and all(d <= m for d, m in zip(x.shape, limit))
            if not fits or not ctx.set_input_shape(name, x.shape):
                raise EdgekdError(f"{self.path.name}: input {name} has shape {x.shape}, outside the engine's "
                                  f"optimisation profile (at most {limit}); rebuild with a larger batch")
            cuda.htod(self._buffers[name], x)
            staged.append(x)
        for name, ptr in self._buffers.items():
            ctx.set_tensor_address(name, ptr)
        if not ctx.execute_async_v3(cuda.stream_handle):
            raise EdgekdError(f"TensorRT failed to run {self.path.name} (see the TensorRT log above)")
        results = {}
        for name in outputs:
            results[name] = np.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name])
            cuda.dtoh(results[name], self._buffers[name])
        cuda.synchronize()
        return {name: value.astype(np.float32, copy=False) for name, value in results.items()}

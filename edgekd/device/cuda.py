"""The one thin CUDA layer of the TensorRT path: device facts, device memory, copies and streams.

Why a layer of our own, on ctypes only: pip resolves ``cuda-python`` to the newest release, and cuda-python 13
needs a CUDA 13 driver (>= 580), while JetPack 6.x ships CUDA 12 drivers and JetPack 5.1 CUDA 11.4; every call then
fails with ``cudaErrorInsufficientDriver``. The CUDA runtime library installed with the system (``libcudart.so``,
next to the driver it was released with) always matches, so this module talks to it through :mod:`ctypes` only, as
NVIDIA's Polygraphy does (``tools/Polygraphy/polygraphy/cuda/cuda.py`` in NVIDIA/TensorRT). Every supported JetPack
installs it with its CUDA toolkit (JetPack 5.1: CUDA 11.4, 6.0: 12.2, 6.1/6.2: 12.6, under
``/usr/local/cuda-X.Y/targets/aarch64-linux/lib``; NVIDIA's "Simplifying CUDA Upgrades for NVIDIA Jetson Users":
installing JetPack installs the BSP with the CUDA driver and the CUDA toolkit by default), and a desktop has it from
the CUDA toolkit or NVIDIA's ``nvidia-cuda-runtime`` wheels, so no Python binding (cuda-python, pycuda) is used.
The first libcudart that loads *and* sees a GPU wins; when none does, the error of the first one is raised as
:class:`CudaError`, with the real CUDA error name and message and the driver and runtime versions::

    cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version (driver 11.4,
    runtime 12.6; cudaGetDeviceCount through ctypes (/usr/local/cuda/lib64/libcudart.so.12))

What edgekd needs, and nothing more: :func:`runtime` (device count, driver and runtime versions, device name and
compute capability, ``malloc``/``free``, page-locked host
memory (:class:`PinnedBuffer`), asynchronous host↔device and device→device copies), :class:`Stream` (a
stream shared by reference count: the TensorRT runners of one chain enqueue on one stream), :class:`DeviceArray`
(an array left in device memory, copied to the host only when someone asks) and :func:`status` (what
:func:`~edgekd.device.tensorrt.loader.tensorrt_available` and ``edgekd doctor`` report).

Importing this module loads nothing: ctypes is the standard library, and libcudart is loaded on the first
:func:`runtime`. On a machine without CUDA, :func:`status` says "no CUDA runtime found (looked in …)"; nothing
crashes. Python 3.8 syntax (JetPack 5.1).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Tuple

import numpy as np

from edgekd.core.errors import EdgekdError

# cudaMemcpyKind (driver_types.h): the values Polygraphy's MemcpyKind uses too.
MEMCPY_HOST_TO_DEVICE = 1
MEMCPY_DEVICE_TO_HOST = 2
MEMCPY_DEVICE_TO_DEVICE = 3
# cudaDeviceAttr (driver_types.h)
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76
# cudaDeviceProp starts with ``char name[256]`` in every CUDA release; the struct is about 1 KiB (CUDA 12), so a
# 4 KiB buffer holds any release's layout and only the name is read from it.
_PROP_BUFFER = 4096

# cudaError_t names for the few codes edgekd explains itself, used when the library cannot name a code itself.
_ERROR_NAMES = {
    1: ("cudaErrorInvalidValue", "invalid argument"),
    2: ("cudaErrorMemoryAllocation", "out of memory"),
    3: ("cudaErrorInitializationError", "initialization error"),
    34: ("cudaErrorStubLibrary", "CUDA driver is a stub library"),
    35: ("cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"),
    100: ("cudaErrorNoDevice", "no CUDA-capable device is detected"),
    803: ("cudaErrorSystemDriverMismatch", "system has unsupported display driver / cuda driver combination"),
}
_INSUFFICIENT_DRIVER = 35


def format_version(version: int | None) -> str:
    """A CUDA version number as ``major.minor``: 12060 → ``"12.6"``, 11040 → ``"11.4"``; 0 (what
    ``cudaDriverGetVersion`` reports when no driver is installed) → ``"none"``; None → ``"unknown"``."""
    if version is None:
        return "unknown"
    if version <= 0:
        return "none"
    return f"{version // 1000}.{(version % 1000) // 10}"


class CudaError(EdgekdError):
    """A CUDA call failed, or no CUDA runtime could be loaded; the message names the real CUDA error.

    ``call`` (the CUDA function), ``code`` (the ``cudaError_t`` value, None when no call was made), ``name`` and
    ``message`` (``cudaGetErrorName`` / ``cudaGetErrorString``), ``driver`` and ``runtime`` (the version numbers
    ``cudaDriverGetVersion`` / ``cudaRuntimeGetVersion`` gave, None when unknown) and ``binding`` (``ctypes`` with
    the library path).
    """

    def __init__(self, message: str, *, call: str = "", code: int | None = None, name: str = "",
                 driver: int | None = None, runtime: int | None = None, binding: str = "",
                 hint: str = "") -> None:
        self.call, self.code, self.name, self.message = call, code, name, message
        self.driver, self.runtime, self.binding, self.hint = driver, runtime, binding, hint
        super().__init__(self.describe())

    def describe(self) -> str:
        """``name: message (driver X, runtime Y; call through binding)`` plus the hint, on one line."""
        where = []
        if self.code is not None:  # a CUDA call answered: the versions explain most first-contact failures
            where.append(f"driver {format_version(self.driver)}, runtime {format_version(self.runtime)}")
        site = " through ".join(p for p in (self.call, self.binding) if p)
        if site:
            where.append(site)
        text = f"{self.name}: {self.message}" if self.name else self.message
        if where:
            text += f" ({'; '.join(where)})"
        return f"{text}. {self.hint[:1].upper()}{self.hint[1:]}" if self.hint else text


def _insufficient_driver_hint(binding: str, driver: int | None, runtime_version: int | None) -> str:
    """What to do when a libcudart is newer than the driver (the usual first-contact failure), or when there is no
    driver at all (``cudaDriverGetVersion`` reports 0)."""
    if driver == 0:
        return "no NVIDIA driver is loaded on this machine (cudaDriverGetVersion reports none)"
    if runtime_version:
        return (f"this libcudart is CUDA {format_version(runtime_version)}, newer than the driver: put the CUDA "
                "that came with the driver (JetPack's /usr/local/cuda) first on LD_LIBRARY_PATH")
    return ""


# -- finding libcudart --------------------------------------------------------------------------------------------
def cudart_search_dirs(environ: Mapping[str, str] | None = None, root: str = "") -> list[str]:
    """The folders searched for ``libcudart.so*``, in order (existing or not; ``root`` re-roots the fixed system
    paths, for tests): ``LD_LIBRARY_PATH``, ``$CUDA_HOME``/``$CUDA_PATH``, ``/usr/local/cuda`` (JetPack's
    alternatives link to the installed CUDA), every ``/usr/local/cuda-X.Y`` newest first (JetPack keeps the
    libraries under ``targets/aarch64-linux/lib``), the distribution's library folders, and last the folders
    NVIDIA's pip wheels install it in (``nvidia/cuda_runtime/lib`` for CUDA 12, ``nvidia/cu13/lib`` for 13)."""
    env = os.environ if environ is None else environ
    dirs: list[str] = [d for d in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    homes = [env[k] for k in ("CUDA_HOME", "CUDA_PATH") if env.get(k)]
    homes.append(root + "/usr/local/cuda")
    versioned = glob.glob(root + "/usr/local/cuda-*")
    homes += sorted(versioned, key=lambda p: _version_key(os.path.basename(p)), reverse=True)
    for home in homes:
        dirs += [os.path.join(home, "lib64"), os.path.join(home, "targets", "aarch64-linux", "lib"),
                 os.path.join(home, "targets", "x86_64-linux", "lib"), os.path.join(home, "lib")]
    dirs += [root + d for d in ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
                                "/usr/lib", "/lib")]
    if not root:
        for p in sys.path:
            if p and os.path.isdir(os.path.join(p, "nvidia")):
                dirs.append(os.path.join(p, "nvidia", "cuda_runtime", "lib"))
                dirs += sorted(glob.glob(os.path.join(p, "nvidia", "cu[0-9]*", "lib")), reverse=True)
    return list(dict.fromkeys(dirs))  # each folder once, first place kept


def _version_key(name: str) -> tuple[int, ...]:
    """The numbers in a file or folder name, for newest-first sorting: ``libcudart.so.12.6.68`` → (12, 6, 68)."""
    return tuple(int(n) for n in re.findall(r"\d+", name))


def find_cudart(dirs: Sequence[str] | None = None, *, use_loader: bool = True) -> list[str]:
    """Loadable ``libcudart`` candidates in search order: every ``libcudart.so*`` in each of ``dirs`` (default:
    :func:`cudart_search_dirs`), the highest version first within a folder, one path per real file; then the
    name ``ctypes.util.find_library("cudart")`` gives (the loader's own search), when ``use_loader``."""
    found: list[str] = []
    real: set = set()
    for d in cudart_search_dirs() if dirs is None else dirs:
        names = [p for p in glob.glob(os.path.join(d, "libcudart.so*")) if os.path.isfile(p)]
        for path in sorted(names, key=lambda p: _version_key(os.path.basename(p)), reverse=True):
            key = os.path.realpath(path)
            if key not in real:
                real.add(key)
                found.append(path)
    if use_loader:
        name = ctypes.util.find_library("cudart")
        if name and name not in {os.path.basename(p) for p in found}:
            found.append(name)
    return found


# -- the runtime --------------------------------------------------------------------------------------------------
class CudaRuntime:
    """What edgekd asks of CUDA (:class:`CtypesRuntime` answers; tests put stand-ins in its place). Pointers are
    ints; streams are the runtime's own handles (:class:`Stream` wraps them). Every failure raises
    :class:`CudaError`."""

    binding = ""
    source = ""  # the library path or module that answers

    def device_count(self) -> int:
        raise NotImplementedError

    def driver_version(self) -> int:
        raise NotImplementedError

    def runtime_version(self) -> int:
        raise NotImplementedError

    def device_name(self, device: int = 0) -> str:
        raise NotImplementedError

    def compute_capability(self, device: int = 0) -> tuple[int, int]:
        raise NotImplementedError

    def malloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def host_alloc(self, nbytes: int) -> int:
        """Page-locked host memory (``cudaMallocHost``): the address of ``nbytes`` bytes. A runtime that has none
        to give raises :class:`CudaError` (callers then copy through ordinary memory)."""
        raise CudaError("page-locked host memory is not available here", call="cudaMallocHost",
                        binding=self.describe())

    def host_free(self, ptr: int) -> None:
        raise NotImplementedError

    def htod_async(self, dst: int, host: np.ndarray, stream: Any) -> None:
        """Copy the C-contiguous ``host`` array to device address ``dst``, enqueued on ``stream``."""
        raise NotImplementedError

    def dtoh_async(self, host: np.ndarray, src: int, stream: Any) -> None:
        """Copy ``host.nbytes`` bytes from device address ``src`` into the C-contiguous ``host`` array."""
        raise NotImplementedError

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        raise NotImplementedError

    def stream_create(self) -> Any:
        raise NotImplementedError

    def stream_handle(self, stream: Any) -> int:
        """The ``cudaStream_t`` as an int (what TensorRT's ``execute_async_v3`` takes)."""
        raise NotImplementedError

    def stream_synchronize(self, stream: Any) -> None:
        raise NotImplementedError

    def stream_destroy(self, stream: Any) -> None:
        raise NotImplementedError

    def versions(self) -> tuple[int | None, int | None]:
        """(driver, runtime) version numbers, None where asking fails (used inside error messages)."""
        out: list[int | None] = []
        for ask in (self.driver_version, self.runtime_version):
            try:
                out.append(int(ask()))
            except Exception:  # an error message must not fail while it is being written
                out.append(None)
        return out[0], out[1]

    def describe(self) -> str:
        return f"{self.binding} ({self.source})" if self.source else self.binding


def _signatures() -> dict[str, tuple[Any, ...]]:
    """argtypes of the CUDA runtime functions the ctypes binding calls (cuda_runtime_api.h); every one returns a
    ``cudaError_t`` (int) except the two error-text functions, which return ``const char*``."""
    c_int_p, c_void_pp = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_void_p)
    return {
        "cudaGetDeviceCount": (c_int_p,),
        "cudaDriverGetVersion": (c_int_p,),
        "cudaRuntimeGetVersion": (c_int_p,),
        "cudaDeviceGetAttribute": (c_int_p, ctypes.c_int, ctypes.c_int),
        "cudaGetDeviceProperties_v2": (ctypes.c_void_p, ctypes.c_int),  # CUDA >= 12.0
        "cudaGetDeviceProperties": (ctypes.c_void_p, ctypes.c_int),
        "cudaMalloc": (c_void_pp, ctypes.c_size_t),
        "cudaFree": (ctypes.c_void_p,),
        "cudaMallocHost": (c_void_pp, ctypes.c_size_t),
        "cudaFreeHost": (ctypes.c_void_p,),
        "cudaMemcpyAsync": (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p),
        "cudaStreamCreate": (c_void_pp,),
        "cudaStreamSynchronize": (ctypes.c_void_p,),
        "cudaStreamDestroy": (ctypes.c_void_p,),
        "cudaGetErrorName": (ctypes.c_int,),
        "cudaGetErrorString": (ctypes.c_int,),
    }


class CtypesRuntime(CudaRuntime):
    """The system's ``libcudart`` through ctypes (no Python binding needed). Unlike Polygraphy, every function
    gets its argtypes, so pointers and sizes are passed at full width (``size_t`` for byte counts, ``void*`` for
    addresses and streams) and ``cudaGetErrorName`` / ``cudaGetErrorString`` return text."""

    binding = "ctypes"

    def __init__(self, path: str) -> None:
        self.source = path
        self._lib = ctypes.CDLL(path)  # OSError when it cannot be loaded: the selection tries the next candidate
        self._fns: dict[str, Any] = {}

    def _fn(self, name: str) -> Any:
        fn = self._fns.get(name)
        if fn is None:
            try:
                fn = getattr(self._lib, name)
            except AttributeError:
                raise CudaError(f"{self.source} does not export {name}", call=name, binding=self.describe()) from None
            fn.argtypes = list(_signatures()[name])
            fn.restype = ctypes.c_char_p if name in ("cudaGetErrorName", "cudaGetErrorString") else ctypes.c_int
            self._fns[name] = fn
        return fn

    def _check(self, call: str, status: int) -> None:
        if status != 0:
            raise self.error(call, status)

    def error(self, call: str, code: int) -> CudaError:
        """The :class:`CudaError` of ``code`` returned by ``call``, named by the library itself."""
        known = _ERROR_NAMES.get(code, (f"cudaError {code}", "unknown CUDA error"))
        texts = []
        for fn, fallback in (("cudaGetErrorName", known[0]), ("cudaGetErrorString", known[1])):
            try:
                raw = self._fn(fn)(code)
                texts.append(raw.decode(errors="replace") if raw else fallback)
            except CudaError:
                texts.append(fallback)
        driver, runtime = self.versions()
        hint = _insufficient_driver_hint(self.binding, driver, runtime) if code == _INSUFFICIENT_DRIVER else ""
        return CudaError(texts[1], call=call, code=code, name=texts[0], driver=driver, runtime=runtime,
                         binding=self.describe(), hint=hint)

    def _int_out(self, call: str, *args: Any) -> int:
        value = ctypes.c_int(0)
        self._check(call, self._fn(call)(ctypes.byref(value), *args))
        return int(value.value)

    def device_count(self) -> int:
        return self._int_out("cudaGetDeviceCount")

    def driver_version(self) -> int:
        return self._int_out("cudaDriverGetVersion")

    def runtime_version(self) -> int:
        return self._int_out("cudaRuntimeGetVersion")

    def compute_capability(self, device: int = 0) -> tuple[int, int]:
        return (self._int_out("cudaDeviceGetAttribute", _ATTR_CC_MAJOR, device),
                self._int_out("cudaDeviceGetAttribute", _ATTR_CC_MINOR, device))

    def device_name(self, device: int = 0) -> str:
        buf = ctypes.create_string_buffer(_PROP_BUFFER)
        for call in ("cudaGetDeviceProperties_v2", "cudaGetDeviceProperties"):
            try:
                fn = self._fn(call)
            except CudaError:
                continue
            self._check(call, fn(buf, device))
            return buf.raw[:256].split(b"\0")[0].decode(errors="replace")
        raise CudaError(f"{self.source} exports no cudaGetDeviceProperties", binding=self.describe())

    def _alloc(self, call: str, nbytes: int) -> int:
        """The address ``call`` (``cudaMalloc`` or ``cudaMallocHost``) returns for ``nbytes`` (at least 1)."""
        ptr = ctypes.c_void_p()
        self._check(call, self._fn(call)(ctypes.byref(ptr), max(1, int(nbytes))))
        return int(ptr.value or 0)

    def malloc(self, nbytes: int) -> int:
        return self._alloc("cudaMalloc", nbytes)

    def free(self, ptr: int) -> None:
        self._check("cudaFree", self._fn("cudaFree")(ptr))

    def host_alloc(self, nbytes: int) -> int:
        return self._alloc("cudaMallocHost", nbytes)

    def host_free(self, ptr: int) -> None:
        self._check("cudaFreeHost", self._fn("cudaFreeHost")(ptr))

    def _memcpy(self, dst: int, src: int, nbytes: int, kind: int, stream: Any) -> None:
        self._check("cudaMemcpyAsync", self._fn("cudaMemcpyAsync")(dst, src, int(nbytes), kind, stream))

    def htod_async(self, dst: int, host: np.ndarray, stream: Any) -> None:
        self._memcpy(dst, host.ctypes.data, host.nbytes, MEMCPY_HOST_TO_DEVICE, stream)

    def dtoh_async(self, host: np.ndarray, src: int, stream: Any) -> None:
        self._memcpy(host.ctypes.data, src, host.nbytes, MEMCPY_DEVICE_TO_HOST, stream)

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._memcpy(dst, src, nbytes, MEMCPY_DEVICE_TO_DEVICE, stream)

    def stream_create(self) -> Any:
        stream = ctypes.c_void_p()
        self._check("cudaStreamCreate", self._fn("cudaStreamCreate")(ctypes.byref(stream)))
        return stream.value

    def stream_handle(self, stream: Any) -> int:
        return int(stream or 0)

    def stream_synchronize(self, stream: Any) -> None:
        self._check("cudaStreamSynchronize", self._fn("cudaStreamSynchronize")(stream))

    def stream_destroy(self, stream: Any) -> None:
        self._check("cudaStreamDestroy", self._fn("cudaStreamDestroy")(stream))


# -- selection ----------------------------------------------------------------------------------------------------
Loader = Tuple[str, Callable[[], CudaRuntime]]  # (binding name, loader); a loader raises ImportError/OSError if absent


def default_loaders(environ: Mapping[str, str] | None = None) -> tuple[list[Loader], list[str]]:
    """The loaders to try, in order (every libcudart candidate, through ctypes), and the folders searched."""
    env = os.environ if environ is None else environ
    dirs = cudart_search_dirs(env)
    loaders: list[Loader] = [("ctypes", (lambda p=path: CtypesRuntime(p))) for path in find_cudart(dirs)]
    return loaders, dirs


def select_runtime(loaders: Sequence[Loader], searched: Sequence[str] = ()) -> CudaRuntime:
    """The first of ``loaders`` that loads and sees at least one GPU.

    A loader that raises ImportError or OSError is skipped (that library does not load). When none works, raises
    the :class:`CudaError` of the first one that loaded, naming what else was tried; when nothing loaded at all,
    "no CUDA runtime found (looked in …)".
    """
    errors: list[CudaError] = []
    absent: list[str] = []
    for name, load in loaders:
        try:
            rt = load()
        except (ImportError, OSError) as exc:
            absent.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        except CudaError as exc:
            errors.append(exc)
            continue
        try:
            count = rt.device_count()
        except CudaError as exc:
            errors.append(exc)
            continue
        if count > 0:
            return rt
        driver, runtime_version = rt.versions()
        errors.append(CudaError("cudaGetDeviceCount reports 0 devices", call="cudaGetDeviceCount", code=0,
                                name="no CUDA GPU visible", driver=driver, runtime=runtime_version,
                                binding=rt.describe()))
    if errors:
        first = errors[0]
        also = [f"{e.binding}: {e.name or e.message}" for e in errors[1:]]
        if not also:
            raise first
        raise CudaError(first.message, call=first.call, code=first.code, name=first.name, driver=first.driver,
                        runtime=first.runtime, binding=first.binding,
                        hint=". ".join(p for p in (first.hint, "Also tried " + "; ".join(also)) if p))
    looked = ", ".join(d for d in searched if os.path.isdir(d)) or ", ".join(list(searched)[:6]) or "nowhere"
    tried = "; ".join(absent) or "no binding to try"
    raise CudaError(f"no CUDA runtime found (looked in {looked} for libcudart.so*; {tried})")


_LOCK = threading.Lock()
_SELECTED: dict[str, Any] = {}  # "runtime": CudaRuntime, or "error": CudaError, once selected


def runtime() -> CudaRuntime:
    """The CUDA runtime edgekd uses in this process (selected once, see :func:`select_runtime`); raises the
    :class:`CudaError` that explains why there is none."""
    with _LOCK:
        if not _SELECTED:
            try:
                loaders, dirs = default_loaders()
                _SELECTED["runtime"] = select_runtime(loaders, dirs)
            except CudaError as exc:
                _SELECTED["error"] = exc
        if "error" in _SELECTED:
            raise _SELECTED["error"]
        return _SELECTED["runtime"]


def reset() -> None:
    """Forget the selected runtime (tests; a process normally selects once)."""
    with _LOCK:
        _SELECTED.clear()


@dataclass
class CudaStatus:
    """What :func:`status` found. ``ok``: a libcudart sees a GPU. ``found``: some CUDA runtime loaded (False: none
    on this machine, the plain "no CUDA" case). ``detail``: one line for people (the error when not ok)."""

    ok: bool
    found: bool
    detail: str
    binding: str = ""
    source: str = ""
    devices: int = 0
    driver: int | None = None
    runtime: int | None = None
    device_name: str = ""
    compute_capability: tuple[int, int] | None = None
    error: CudaError | None = field(default=None, repr=False)


def status() -> CudaStatus:
    """This machine's CUDA as one :class:`CudaStatus`; never raises."""
    try:
        rt = runtime()
    except CudaError as exc:
        return CudaStatus(False, bool(exc.binding), str(exc), binding=exc.binding, driver=exc.driver,
                          runtime=exc.runtime, error=exc)
    driver, runtime_version = rt.versions()
    out = CudaStatus(True, True, "", binding=rt.binding, source=rt.source, driver=driver, runtime=runtime_version)
    try:
        out.devices = rt.device_count()
        out.device_name = rt.device_name(0)
        out.compute_capability = rt.compute_capability(0)
    except CudaError as exc:
        out.error = exc
    out.detail = (f"{out.devices} GPU(s), {out.device_name or 'unnamed'}"
                  + (" (sm {}.{})".format(*out.compute_capability) if out.compute_capability else "")
                  + f"; CUDA driver {format_version(driver)}, runtime {format_version(runtime_version)} through "
                  + rt.describe())
    return out


# -- streams and device arrays ------------------------------------------------------------------------------------
class Stream:
    """One CUDA stream, shared by reference count: :meth:`retain` for every extra user, :meth:`release` by each;
    the last release synchronises and destroys it. Copies are enqueued on it; nothing waits until
    :meth:`synchronize`."""

    def __init__(self, rt: CudaRuntime | None = None) -> None:
        self.runtime = rt if rt is not None else runtime()
        self._stream = self.runtime.stream_create()
        self.handle = self.runtime.stream_handle(self._stream)  # cudaStream_t as an int, for TensorRT
        self._refs = 1

    @property
    def closed(self) -> bool:
        return self._refs <= 0

    def retain(self) -> Stream:
        if self.closed:
            raise EdgekdError("a released CUDA stream cannot be shared")
        self._refs += 1
        return self

    def release(self) -> None:
        if self._refs <= 0:
            return
        self._refs -= 1
        if self._refs == 0:
            try:
                self.runtime.stream_synchronize(self._stream)
            finally:
                self.runtime.stream_destroy(self._stream)
                self._stream = None

    def synchronize(self) -> None:
        self.runtime.stream_synchronize(self._stream)

    def htod(self, dst: int, host: np.ndarray) -> None:
        """Enqueue a copy of the C-contiguous ``host`` array to ``dst``; keep ``host`` alive until synchronised."""
        self.runtime.htod_async(dst, host, self._stream)

    def dtoh(self, host: np.ndarray, src: int) -> None:
        """Enqueue a copy into the C-contiguous ``host`` array; it holds the data after :meth:`synchronize`."""
        self.runtime.dtoh_async(host, src, self._stream)

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self.runtime.dtod_async(dst, src, nbytes, self._stream)


class PinnedBuffer:
    """``nbytes`` of page-locked host memory (:meth:`CudaRuntime.host_alloc`), viewed as numpy arrays.

    Why: CUDA copies pageable host memory through a page-locked staging buffer of its own, one chunk at a time and
    synchronously for the host thread; from page-locked memory ``cudaMemcpyAsync`` is a single DMA that really runs
    asynchronously on its stream (NVIDIA's CUDA C++ Best Practices Guide, "Pinned Memory"; TensorRT's
    ``samples/python/common_runtime.py`` allocates its host buffers with ``cudaMallocHost`` for the same reason).
    A view is valid only until :meth:`free`: whoever reads from one copies what it keeps.
    """

    def __init__(self, rt: CudaRuntime, nbytes: int) -> None:
        self.runtime, self.nbytes = rt, max(1, int(nbytes))
        self.ptr: int | None = rt.host_alloc(self.nbytes)
        self._bytes: np.ndarray | None = np.ctypeslib.as_array((ctypes.c_ubyte * self.nbytes).from_address(self.ptr))

    def view(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A C-contiguous ``shape`` array of ``dtype`` over the start of the buffer (no copy)."""
        if self._bytes is None:
            raise EdgekdError("page-locked buffer used after it was freed")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if count > self.nbytes:
            raise EdgekdError(f"{tuple(shape)} {dtype} needs {count} bytes; the page-locked buffer holds {self.nbytes}")
        return self._bytes[:count].view(dtype).reshape(tuple(shape))

    def free(self) -> None:
        """Give the memory back (idempotent); views taken before must not be read any more."""
        ptr, self.ptr, self._bytes = self.ptr, None, None
        if ptr is not None:
            self.runtime.host_free(ptr)


class DeviceArray:
    """An array left in device memory: ``shape``, ``dtype``, device pointer ``ptr`` and the :class:`Stream` whose
    work writes it; ``capacity`` is the size in bytes of the buffer behind ``ptr`` (at least ``nbytes``).

    A TensorRT runner binds ``ptr`` directly as the input of the next engine (no host copy). Anyone else reads it
    with ``np.asarray(a)`` or :meth:`numpy`: one device→host copy, made at most once. It is a view of its
    producer's output buffer, so the producer calls :meth:`detach` (copy to the host now, drop the pointer)
    before overwriting or freeing that buffer while the array is still referenced.
    """

    def __init__(self, ptr: int, shape: Sequence[int], dtype: Any, stream: Stream,
                 capacity: int | None = None) -> None:
        self.ptr: int | None = int(ptr)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.stream = stream
        self.capacity = self.nbytes if capacity is None else int(capacity)
        self._host: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def on_device(self) -> bool:
        """True while ``ptr`` is valid (False once detached: the data then live on the host only)."""
        return self.ptr is not None

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def numpy(self) -> np.ndarray:
        """The data on the host (shape ``shape``), copied from the device on the first call and kept."""
        if self._host is None:
            if self.ptr is None:
                raise EdgekdError("this device array was released without being read (its runner was closed)")
            host = np.empty(self.shape, dtype=self.dtype)
            self.stream.dtoh(host, self.ptr)
            self.stream.synchronize()
            self._host = host
        return self._host

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)

    def detach(self) -> None:
        """Read the data to the host now and forget the device pointer (its buffer is about to change)."""
        if self.ptr is not None:
            try:
                self.numpy()
            finally:
                self.ptr = None

    def __repr__(self) -> str:
        where = f"ptr=0x{self.ptr:x}" if self.ptr is not None else "on the host"
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, {where})"


__all__ = ["CtypesRuntime", "CudaError", "CudaRuntime", "CudaStatus", "DeviceArray", "Stream", "cudart_search_dirs",
           "default_loaders", "find_cudart",
           "format_version", "reset", "runtime", "select_runtime", "status"]

"""edgekd.device.cuda, the CUDA layer of the TensorRT path, on a machine without a GPU.

What runs here: the libcudart search on a fake directory tree, the error text, the selection order among libcudart
candidates (with fake loaders), that importing the layer loads nothing heavy, that the ``trt`` extra installs no
Python CUDA binding (the layer is ctypes only), and real ctypes calls into a STAND-IN shared library compiled here
with ``cc``. The stand-in exports five CUDA runtime function names and answers like a CUDA 12.6 runtime on a CUDA
11.4 driver; it is not CUDA, and nothing here shows that a real GPU works. Where this machine has a real libcudart (it may, without a driver or
GPU), one test checks that the layer reports its real error instead of crashing.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.errors import EdgekdError
from edgekd.device import cuda
from edgekd.device.cuda import CudaError, CudaRuntime, select_runtime
from tests.helpers import assert_no_heavy_imports

ROOT = Path(__file__).resolve().parents[2]


# -- finding libcudart --------------------------------------------------------------------------------------------
def _lib(path: Path, target: str | None = None) -> Path:
    """A fake library file (or, with ``target``, a symlink to one) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if target is None:
        path.write_bytes(b"\x7fELF fake")
    else:
        path.symlink_to(target)
    return path


@pytest.fixture
def jetpack_tree(tmp_path: Path) -> Path:
    """A JetPack-like layout: /usr/local/cuda -> cuda-12.6, whose libraries live in targets/aarch64-linux/lib,
    an older cuda-11.4 beside it, a distribution copy in /usr/lib/aarch64-linux-gnu and a static archive."""
    root = tmp_path / "root"
    lib126 = root / "usr/local/cuda-12.6/targets/aarch64-linux/lib"
    _lib(lib126 / "libcudart.so.12.6.68")
    _lib(lib126 / "libcudart.so.12", "libcudart.so.12.6.68")
    _lib(lib126 / "libcudart.so", "libcudart.so.12")
    (root / "usr/local/cuda-12.6/lib64").symlink_to("targets/aarch64-linux/lib")
    _lib(root / "usr/local/cuda-12.6/targets/aarch64-linux/lib/libcudart_static.a")
    _lib(root / "usr/local/cuda-11.4/targets/aarch64-linux/lib/libcudart.so.11.4.298")
    (root / "usr/local/cuda").symlink_to("cuda-12.6")
    _lib(root / "usr/lib/aarch64-linux-gnu/libcudart.so.11.0")
    return root


def test_search_dirs_cover_jetpack_and_desktop_layouts(jetpack_tree):
    root = str(jetpack_tree)
    dirs = cuda.cudart_search_dirs({"LD_LIBRARY_PATH": "/opt/a:/opt/b", "CUDA_HOME": "/opt/cuda"}, root=root)
    assert dirs[:2] == ["/opt/a", "/opt/b"]  # the loader's own path first
    assert dirs.index("/opt/cuda/lib64") < dirs.index(root + "/usr/local/cuda/lib64")
    for d in (root + "/usr/local/cuda/targets/aarch64-linux/lib", root + "/usr/local/cuda-12.6/lib64",
              root + "/usr/local/cuda-11.4/targets/aarch64-linux/lib", root + "/usr/lib/aarch64-linux-gnu",
              root + "/usr/lib/x86_64-linux-gnu"):
        assert d in dirs
    # versioned installs newest first, numerically (12.10 is newer than 12.6)
    (jetpack_tree / "usr/local/cuda-12.10").mkdir()
    dirs = cuda.cudart_search_dirs({}, root=root)
    order = [dirs.index(root + f"/usr/local/cuda-{v}/lib64") for v in ("12.10", "12.6", "11.4")]
    assert order == sorted(order)
    assert len(dirs) == len(set(dirs))


def test_find_cudart_on_a_fake_tree(jetpack_tree):
    root = str(jetpack_tree)
    found = cuda.find_cudart(cuda.cudart_search_dirs({}, root=root), use_loader=False)
    names = [os.path.relpath(p, root) for p in found]
    # one path per real file: /usr/local/cuda's three names for libcudart.so.12.6.68 count once, by the highest
    # version name, and the same file seen again through cuda-12.6 is not repeated; the static archive is no match
    assert names == ["usr/local/cuda/lib64/libcudart.so.12.6.68",
                     "usr/local/cuda-11.4/targets/aarch64-linux/lib/libcudart.so.11.4.298",
                     "usr/lib/aarch64-linux-gnu/libcudart.so.11.0"]
    assert cuda.find_cudart([str(jetpack_tree / "nowhere")], use_loader=False) == []


def test_ld_library_path_comes_first(jetpack_tree, tmp_path):
    mine = _lib(tmp_path / "mine" / "libcudart.so.12")
    dirs = cuda.cudart_search_dirs({"LD_LIBRARY_PATH": str(mine.parent)}, root=str(jetpack_tree))
    assert cuda.find_cudart(dirs, use_loader=False)[0] == str(mine)


# -- the error text -----------------------------------------------------------------------------------------------
def test_versions_are_written_major_dot_minor():
    assert cuda.format_version(12060) == "12.6"
    assert cuda.format_version(11040) == "11.4"
    assert cuda.format_version(12020) == "12.2"
    assert cuda.format_version(13000) == "13.0"
    assert cuda.format_version(0) == "none"  # cudaDriverGetVersion's answer when no driver is installed
    assert cuda.format_version(None) == "unknown"


def test_cuda_error_names_the_real_error_and_the_versions():
    err = CudaError("CUDA driver version is insufficient for CUDA runtime version", call="cudaGetDeviceCount",
                    code=35, name="cudaErrorInsufficientDriver", driver=11040, runtime=12060,
                    binding="ctypes (/usr/local/cuda/lib64/libcudart.so.12)")
    assert isinstance(err, EdgekdError)  # the CLI prints it as one "error: ..." line
    assert str(err) == ("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version "
                        "(driver 11.4, runtime 12.6; cudaGetDeviceCount through ctypes "
                        "(/usr/local/cuda/lib64/libcudart.so.12))")
    assert (err.code, err.driver, err.runtime) == (35, 11040, 12060)
    assert "\n" not in str(err)
    hinted = CudaError("x", code=35, name="cudaErrorInsufficientDriver", driver=12020, runtime=13000,
                       hint="put JetPack's /usr/local/cuda first on LD_LIBRARY_PATH")
    assert str(hinted).endswith("(driver 12.2, runtime 13.0). Put JetPack's /usr/local/cuda first on LD_LIBRARY_PATH")
    assert str(CudaError("no CUDA runtime found (looked in /usr/local/cuda/lib64)")) == \
        "no CUDA runtime found (looked in /usr/local/cuda/lib64)"


# -- selection order ----------------------------------------------------------------------------------------------
class FakeRuntime(CudaRuntime):
    """A libcudart candidate ``source`` that answers ``devices`` or fails with ``code`` (no CUDA involved)."""

    binding = "ctypes"

    def __init__(self, source: str, devices: int = 1, code: int | None = None) -> None:
        self.source, self.devices, self.code = f"fake {source}", devices, code

    def device_count(self) -> int:
        if self.code is not None:
            raise CudaError(f"failure {self.code}", call="cudaGetDeviceCount", code=self.code,
                            name=f"cudaError{self.code}", driver=11040, runtime=12060, binding=self.describe())
        return self.devices

    def driver_version(self) -> int:
        return 11040

    def runtime_version(self) -> int:
        return 12060


def _absent(kind: type) -> object:
    def load() -> CudaRuntime:
        raise kind("not installed")
    return load


def test_the_first_libcudart_that_sees_a_gpu_wins():
    calls: list[str] = []

    def loader(name: str, **kw: object):
        def load() -> CudaRuntime:
            calls.append(name)
            return FakeRuntime(name, **kw)  # type: ignore[arg-type]
        return load

    rt = select_runtime([("ctypes", loader("cuda-12.6")), ("ctypes", loader("cuda-11.4"))])
    assert rt.source == "fake cuda-12.6" and calls == ["cuda-12.6"]  # later candidates are not even loaded
    calls.clear()
    rt = select_runtime([("ctypes", _absent(OSError)), ("ctypes", loader("cuda-11.4"))])
    assert rt.source == "fake cuda-11.4"
    # a libcudart that loads but cannot talk to the driver gives way to the next one
    rt = select_runtime([("ctypes", loader("cuda-13.0", code=35)), ("ctypes", loader("cuda-12.6"))])
    assert rt.source == "fake cuda-12.6"


def test_when_nothing_works_the_first_candidates_error_is_raised():
    loaders = [("ctypes", lambda: FakeRuntime("cuda-13.0", code=35)), ("ctypes", _absent(OSError)),
               ("ctypes", lambda: FakeRuntime("cuda-12.6", devices=0))]
    with pytest.raises(CudaError) as info:
        select_runtime(loaders)
    err = info.value
    assert err.code == 35 and err.binding == "ctypes (fake cuda-13.0)"
    assert str(err).startswith("cudaError35: failure 35 (driver 11.4, runtime 12.6")
    assert str(err).endswith(". Also tried ctypes (fake cuda-12.6): no CUDA GPU visible")


def test_no_gpu_and_no_runtime_are_clean_statuses(tmp_path):
    with pytest.raises(CudaError, match="no CUDA GPU visible: cudaGetDeviceCount reports 0 devices"):
        select_runtime([("ctypes", lambda: FakeRuntime("cuda-12.6", devices=0))])
    with pytest.raises(CudaError) as info:
        select_runtime([("ctypes", _absent(OSError))], [str(tmp_path), "/nonexistent/lib64"])
    assert str(info.value).startswith(f"no CUDA runtime found (looked in {tmp_path} for libcudart.so*")
    assert "ctypes: not installed" in str(info.value)
    assert info.value.code is None and not info.value.binding  # status() reads this as "found: False"


def test_default_loaders_are_every_libcudart_through_ctypes(jetpack_tree, monkeypatch):
    fake_dirs = [str(jetpack_tree / "usr/local/cuda/lib64"), str(jetpack_tree / "usr/lib/aarch64-linux-gnu")]
    monkeypatch.setattr(cuda, "cudart_search_dirs", lambda environ=None, root="": fake_dirs)
    loaders, dirs = cuda.default_loaders({})
    names = [name for name, _ in loaders]
    # every libcudart candidate through ctypes (the two fake files, plus whatever the loader knows); no Python binding
    assert dirs == fake_dirs
    assert names == ["ctypes"] * len(names) and len(names) >= 2
    assert not hasattr(cuda, "BINDING_ENV")  # EDGEKD_CUDA_BINDING is gone: there is nothing left to choose


def test_status_never_raises(monkeypatch):
    cuda.reset()
    try:
        monkeypatch.setattr(cuda, "default_loaders", lambda environ=None: ([("ctypes", _absent(OSError))], ["/x"]))
        state = cuda.status()
        assert not state.ok and not state.found and state.detail.startswith("no CUDA runtime found")
        cuda.reset()
        monkeypatch.setattr(cuda, "default_loaders",
                            lambda environ=None: ([("ctypes", lambda: FakeRuntime("ctypes", code=35))], []))
        state = cuda.status()
        assert not state.ok and state.found and (state.driver, state.runtime) == (11040, 12060)
        assert state.detail.startswith("cudaError35")
        cuda.reset()
        monkeypatch.setattr(cuda, "default_loaders", lambda environ=None: ([("ctypes", lambda: _Named())], []))
        state = cuda.status()
        assert state.ok and state.devices == 2 and state.compute_capability == (8, 7)
        assert state.detail.startswith("2 GPU(s), Orin (sm 8.7); CUDA driver 12.6, runtime 12.6 through ctypes")
    finally:
        cuda.reset()


class _Named(FakeRuntime):
    def __init__(self) -> None:
        super().__init__("ctypes", devices=2)

    def driver_version(self) -> int:
        return 12060

    def device_name(self, device: int = 0) -> str:
        return "Orin"

    def compute_capability(self, device: int = 0) -> tuple[int, int]:
        return (8, 7)


def test_importing_the_layer_loads_nothing_heavy():
    assert_no_heavy_imports("import edgekd.device.cuda as c\nc.cudart_search_dirs()\nc.find_cudart()")
    # asking for the status imports no Python binding (cuda-python, pycuda): the layer is ctypes only
    assert_no_heavy_imports("import edgekd.device.cuda as c\nc.status()")


# -- real ctypes calls into a stand-in library (NOT CUDA) ---------------------------------------------------------
STANDIN_C = textwrap.dedent("""
    /* A STAND-IN for libcudart, for tests only: seven CUDA runtime names with CUDA's C signatures, answering like
       a CUDA 12.6 runtime on a CUDA 11.4 driver (or, built with -DDEVICES=n, like a working one). Not CUDA. */
    #ifndef DEVICES
    #define DEVICES 0
    #endif
    int cudaGetDeviceCount(int *count) {
        if (DEVICES == 0) { *count = 0; return 35; }
        *count = DEVICES; return 0;
    }
    int cudaDriverGetVersion(int *v) { *v = DEVICES ? 12060 : 11040; return 0; }
    int cudaRuntimeGetVersion(int *v) { *v = 12060; return 0; }
    /* page-locked host memory: ordinary malloc here; size 0 and absurd sizes fail as cudaErrorMemoryAllocation */
    void *malloc(unsigned long); void free(void *);
    int cudaMallocHost(void **p, unsigned long n) { *p = n > (1UL << 40) ? 0 : malloc(n); return *p ? 0 : 2; }
    int cudaFreeHost(void *p) { free(p); return 0; }
    const char *cudaGetErrorName(int e) {
        return e == 35 ? "cudaErrorInsufficientDriver" : "cudaErrorUnknown";
    }
    const char *cudaGetErrorString(int e) {
        return e == 35 ? "CUDA driver version is insufficient for CUDA runtime version" : "unknown error";
    }
""")


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict[str, Path]:
    """Two stand-in libraries (see STANDIN_C): ``bad`` (insufficient driver) and ``good`` (one device)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the stand-in library")
    out = tmp_path_factory.mktemp("standin")
    src = out / "standin.c"
    src.write_text(STANDIN_C)
    libs = {}
    for kind, flags in (("bad", []), ("good", ["-DDEVICES=1"])):
        (out / kind).mkdir()
        libs[kind] = out / kind / "libcudart.so.12"
        subprocess.run([cc, "-shared", "-fPIC", *flags, "-o", str(libs[kind]), str(src)], check=True)
    return libs


def test_ctypes_binding_reports_the_stand_ins_error(standin):
    rt = cuda.CtypesRuntime(str(standin["bad"]))
    assert (rt.driver_version(), rt.runtime_version()) == (11040, 12060)
    with pytest.raises(CudaError) as info:
        rt.device_count()
    err = info.value
    assert (err.code, err.name, err.call) == (35, "cudaErrorInsufficientDriver", "cudaGetDeviceCount")
    assert str(err).startswith("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime "
                               f"version (driver 11.4, runtime 12.6; cudaGetDeviceCount through ctypes "
                               f"({standin['bad']}))")
    assert "LD_LIBRARY_PATH" in str(err)  # the hint: put the driver's own CUDA first
    with pytest.raises(CudaError, match="does not export cudaMalloc"):  # the stand-in has five functions only
        rt.malloc(16)
    good = cuda.CtypesRuntime(str(standin["good"]))
    assert good.device_count() == 1
    assert select_runtime([("ctypes", lambda: cuda.CtypesRuntime(str(standin["good"])))]) is not None


def test_pinned_buffer_views_page_locked_memory_through_ctypes(standin):
    """PinnedBuffer over the stand-in's cudaMallocHost (ordinary malloc: this checks the ctypes calls, sizes and
    views, not page locking): views share the memory, a view larger than the buffer is refused, a failed
    allocation is a CudaError (the runner then copies through ordinary memory), and a freed buffer gives no views."""
    rt = cuda.CtypesRuntime(str(standin["good"]))
    buffer = cuda.PinnedBuffer(rt, 64)
    a = buffer.view((2, 4), np.float32)  # (2, 4): 32 bytes
    a[:] = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert a.flags.c_contiguous and a.ctypes.data == buffer.ptr
    np.testing.assert_array_equal(buffer.view((8,), np.float32), np.arange(8, dtype=np.float32))
    with pytest.raises(EdgekdError, match="needs 128 bytes; the page-locked buffer holds 64"):
        buffer.view((4, 8), np.float32)
    buffer.free()
    buffer.free()  # idempotent
    with pytest.raises(EdgekdError, match="after it was freed"):
        buffer.view((1,), np.float32)
    with pytest.raises(CudaError) as info:
        cuda.PinnedBuffer(rt, 1 << 41)
    assert info.value.call == "cudaMallocHost"


def test_discovery_through_ld_library_path_reaches_the_stand_in(standin):
    """The whole road in a fresh interpreter: search → ctypes load → cudaGetDeviceCount → CudaError text; and
    what tensorrt_available() would report comes from the same status."""
    code = ("import edgekd.device.cuda as c\ns = c.status()\n"
            "print(s.ok, s.found, s.driver, s.runtime)\nprint(s.detail)\n")
    env = dict(os.environ, LD_LIBRARY_PATH=str(standin["bad"].parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, detail = proc.stdout.splitlines()[:2]
    assert first == "False True 11040 12060"
    assert detail.startswith("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime "
                             f"version (driver 11.4, runtime 12.6; cudaGetDeviceCount through ctypes "
                             f"({standin['bad']}")


def test_a_real_libcudart_here_is_reported_not_crashed():
    """Where this machine has a real libcudart (but perhaps no driver or GPU), asking is safe and the answer is
    either a working GPU or a named CUDA error. Nothing here needs a GPU; nothing here shows one works."""
    if not cuda.find_cudart():
        pytest.skip("no libcudart on this machine")
    code = "import edgekd.device.cuda as c\ns = c.status()\nprint(s.ok, s.found)\nprint(s.detail)\n"
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    ok, detail = proc.stdout.splitlines()[:2]
    assert ok.startswith("True") or detail.startswith(("cudaError", "no CUDA GPU visible")), detail


# -- the trt extra ------------------------------------------------------------------------------------------------
def _trt_extra() -> list[str]:
    """The ``trt`` extra of pyproject.toml (tomllib from Python 3.11, else tomli, else skip)."""
    for name in ("tomllib", "tomli"):  # by name: the device wing's tests also run on Python 3.8
        try:
            toml = importlib.import_module(name)
        except ImportError:
            continue
        with open(ROOT / "pyproject.toml", "rb") as f:
            return toml.load(f)["project"]["optional-dependencies"]["trt"]
    pytest.skip("no TOML reader here (tomllib is Python 3.11+; pip install tomli)")


def test_the_trt_extra_installs_no_python_cuda_binding():
    """pip resolves cuda-python to the newest release, which can need a newer driver than JetPack's (cuda-python 13
    needs a CUDA 13 driver); edgekd's CUDA layer is ctypes on the system libcudart, so the extra installs none."""
    requirements = pytest.importorskip("packaging.requirements")
    names = {requirements.Requirement(line).name for line in _trt_extra()}
    assert not names & {"cuda-python", "cuda-bindings", "pycuda"}, names


# -- what the engine builder reports ------------------------------------------------------------------------------
def test_tensorrt_available_reports_the_real_cuda_error(monkeypatch):
    """With TensorRT importable (a fake module here) and CUDA failing, the reason is the CUDA error with its
    versions, not "no CUDA GPU visible"."""
    import types

    from edgekd.device.tensorrt import loader

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    error = CudaError("CUDA driver version is insufficient for CUDA runtime version", call="cudaGetDeviceCount",
                      code=35, name="cudaErrorInsufficientDriver", driver=11040, runtime=12060,
                      binding="ctypes (/usr/local/cuda/lib64/libcudart.so.12)")
    monkeypatch.setattr(cuda, "status", lambda: cuda.CudaStatus(False, True, str(error), error=error))
    ok, why = loader.tensorrt_available()
    assert not ok and why.startswith("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA "
                                     "runtime version (driver 11.4, runtime 12.6")
    monkeypatch.setattr(cuda, "status", lambda: cuda.CudaStatus(True, True, "1 GPU(s)", devices=1))
    assert loader.tensorrt_available() == (True, "10.3.0")
    monkeypatch.setattr(cuda, "status", lambda: cuda.CudaStatus(False, False, "no CUDA runtime found (looked in x)"))
    ok, why = loader.tensorrt_available()
    assert not ok and why == "no CUDA runtime for edgekd's CUDA layer: no CUDA runtime found (looked in x)"


def test_the_machine_facts_name_the_gpu_through_the_layer(monkeypatch):
    from edgekd.device import machine

    monkeypatch.setattr(cuda, "runtime", lambda: _Named())
    assert machine.cuda_gpu_name() == "Orin" and machine.gpu_sm() == "sm87"

    def no_cuda() -> CudaRuntime:
        raise CudaError("no CUDA runtime found (looked in nowhere)")

    monkeypatch.setattr(cuda, "runtime", no_cuda)
    assert machine.cuda_gpu_name() == "" and machine.gpu_sm() == ""

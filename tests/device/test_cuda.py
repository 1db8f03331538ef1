"""edgekd.device.cuda, the CUDA layer of the TensorRT path, on a machine without a GPU.

What runs here: the libcudart search on a fake directory tree, the error text, the binding selection order (with
fake loaders), that importing the layer loads nothing heavy, the ``trt`` extra's cuda-python pin against the
JetPack table, and real ctypes calls into a STAND-IN shared library compiled here with ``cc``. The stand-in exports
five CUDA runtime function names and answers like a CUDA 12.6 runtime on a CUDA 11.4 driver; it is not CUDA, and
nothing here shows that a real GPU works. Where this machine has a real libcudart (it may, without a driver or
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
                       hint="pip install 'cuda-python>=12,<13'")
    assert str(hinted).endswith("(driver 12.2, runtime 13.0). Pip install 'cuda-python>=12,<13'")
    assert str(CudaError("no CUDA runtime found (looked in /usr/local/cuda/lib64)")) == \
        "no CUDA runtime found (looked in /usr/local/cuda/lib64)"


# -- selection order ----------------------------------------------------------------------------------------------
class FakeRuntime(CudaRuntime):
    """A binding that answers ``devices`` or fails with ``code`` (no CUDA involved)."""

    def __init__(self, binding: str, devices: int = 1, code: int | None = None) -> None:
        self.binding, self.source, self.devices, self.code = binding, f"fake {binding}", devices, code

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


def test_the_first_binding_that_sees_a_gpu_wins():
    calls: list[str] = []

    def loader(name: str, **kw: object):
        def load() -> CudaRuntime:
            calls.append(name)
            return FakeRuntime(name, **kw)  # type: ignore[arg-type]
        return load

    rt = select_runtime([("ctypes", loader("ctypes")), ("cuda-python", loader("cuda-python"))])
    assert rt.binding == "ctypes" and calls == ["ctypes"]  # later bindings are not even imported
    calls.clear()
    rt = select_runtime([("ctypes", _absent(OSError)), ("cuda-python", _absent(ImportError)),
                         ("pycuda", loader("pycuda"))])
    assert rt.binding == "pycuda"
    # a binding that loads but cannot talk to the driver gives way to the next one
    rt = select_runtime([("ctypes", loader("ctypes", code=35)), ("cuda-python", loader("cuda-python"))])
    assert rt.binding == "cuda-python"


def test_when_nothing_works_the_preferred_bindings_error_is_raised():
    loaders = [("ctypes", lambda: FakeRuntime("ctypes", code=35)), ("cuda-python", _absent(ImportError)),
               ("pycuda", lambda: FakeRuntime("pycuda", devices=0))]
    with pytest.raises(CudaError) as info:
        select_runtime(loaders)
    err = info.value
    assert err.code == 35 and err.binding == "ctypes (fake ctypes)"
    assert str(err).startswith("cudaError35: failure 35 (driver 11.4, runtime 12.6")
    assert str(err).endswith(". Also tried pycuda (fake pycuda): no CUDA GPU visible")


def test_no_gpu_and_no_runtime_are_clean_statuses(tmp_path):
    with pytest.raises(CudaError, match="no CUDA GPU visible: cudaGetDeviceCount reports 0 devices"):
        select_runtime([("ctypes", lambda: FakeRuntime("ctypes", devices=0))])
    with pytest.raises(CudaError) as info:
        select_runtime([("cuda-python", _absent(ImportError)), ("pycuda", _absent(ImportError))],
                       [str(tmp_path), "/nonexistent/lib64"])
    assert str(info.value).startswith(f"no CUDA runtime found (looked in {tmp_path} for libcudart.so*")
    assert "cuda-python: not installed" in str(info.value)
    assert info.value.code is None and not info.value.binding  # status() reads this as "found: False"


def test_default_loaders_order_and_the_binding_variable(jetpack_tree, monkeypatch):
    fake_dirs = [str(jetpack_tree / "usr/local/cuda/lib64"), str(jetpack_tree / "usr/lib/aarch64-linux-gnu")]
    monkeypatch.setattr(cuda, "cudart_search_dirs", lambda environ=None, root="": fake_dirs)
    loaders, dirs = cuda.default_loaders({})
    names = [name for name, _ in loaders]
    # every libcudart candidate through ctypes (the two fake files, plus whatever the loader knows), then the
    # Python bindings, cuda-python before pycuda
    assert dirs == fake_dirs
    assert names[-2:] == ["cuda-python", "pycuda"] and names[:-2] == ["ctypes"] * (len(names) - 2)
    assert len(names) >= 4
    loaders, _ = cuda.default_loaders({cuda.BINDING_ENV: "pycuda"})
    assert [name for name, _ in loaders] == ["pycuda"]
    with pytest.raises(CudaError, match="choose one of ctypes, cuda-python, pycuda"):
        cuda.default_loaders({cuda.BINDING_ENV: "cupy"})


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
    # with the ctypes binding forced, even asking for the status imports no Python binding
    assert_no_heavy_imports(f"import os\nos.environ[{cuda.BINDING_ENV!r}] = 'ctypes'\n"
                            "import edgekd.device.cuda as c\nc.status()")


# -- real ctypes calls into a stand-in library (NOT CUDA) ---------------------------------------------------------
STANDIN_C = textwrap.dedent("""
    /* A STAND-IN for libcudart, for tests only: five CUDA runtime names with CUDA's C signatures, answering like
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


def test_discovery_through_ld_library_path_reaches_the_stand_in(standin):
    """The whole road in a fresh interpreter: search → ctypes load → cudaGetDeviceCount → CudaError text; and
    what tensorrt_available() would report comes from the same status."""
    code = ("import edgekd.device.cuda as c\ns = c.status()\n"
            "print(s.ok, s.found, s.driver, s.runtime)\nprint(s.detail)\n")
    env = dict(os.environ, LD_LIBRARY_PATH=str(standin["bad"].parent), **{cuda.BINDING_ENV: "ctypes"})
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
    env = dict(os.environ, **{cuda.BINDING_ENV: "ctypes"})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    ok, detail = proc.stdout.splitlines()[:2]
    assert ok.startswith("True") or detail.startswith(("cudaError", "no CUDA GPU visible")), detail


# -- the trt extra's cuda-python pin --------------------------------------------------------------------------------
# (what, Python, machine, CUDA major of the driver): cuda-python's major must not exceed the driver's CUDA major
# (cuda-python 13 needs a CUDA 13 driver, >= 580), so every version the extra admits on a row must be <= it.
JETPACK_CUDA = [
    ("JetPack 6.1/6.2 (TensorRT 10.3, CUDA 12.6)", "3.10", "aarch64", 12),
    ("JetPack 6.0 (TensorRT 8.6, CUDA 12.2)", "3.10", "aarch64", 12),
    ("JetPack 5.1 (TensorRT 8.5, CUDA 11.4)", "3.8", "aarch64", 11),
    ("desktop TensorRT 10.x, CUDA 12 driver", "3.10", "x86_64", 12),
    ("desktop TensorRT 10.x, CUDA 12 driver, Python 3.12", "3.12", "x86_64", 12),
]
CUDA_PYTHON_RELEASES = ["11.5.0", "11.8.2", "11.8.7", "12.0.0", "12.2.1", "12.6.2", "12.9.10", "13.0.0", "13.4.4"]


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


@pytest.mark.parametrize("what, python, machine, cuda_major", JETPACK_CUDA)
def test_trt_extra_never_admits_a_cuda_python_newer_than_the_driver(what, python, machine, cuda_major):
    requirements = pytest.importorskip("packaging.requirements")
    environment = {"python_version": python, "python_full_version": python + ".0", "platform_machine": machine,
                   "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": "trt"}
    pins = [requirements.Requirement(line) for line in _trt_extra()]
    pins = [r for r in pins if r.name in ("cuda-python", "cuda-bindings")
            and (r.marker is None or r.marker.evaluate(environment))]
    admitted = [v for v in CUDA_PYTHON_RELEASES if all(r.specifier.contains(v, prereleases=False) for r in pins)]
    if not pins:
        assert cuda_major < 12, f"{what}: the trt extra installs no CUDA binding"  # only JetPack 5.1 goes without
        return
    too_new = [v for v in admitted if int(v.split(".")[0]) > cuda_major]
    assert not too_new, f"{what}: the trt extra admits cuda-python {too_new}, newer than the driver's CUDA {cuda_major}"
    assert any(v.startswith(f"{cuda_major}.") for v in admitted), f"{what}: no cuda-python {cuda_major}.x admitted"


# -- what the engine builder reports ------------------------------------------------------------------------------
def test_tensorrt_available_reports_the_real_cuda_error(monkeypatch):
    """With TensorRT importable (a fake module here) and CUDA failing, the reason is the CUDA error with its
    versions, not "no CUDA GPU visible"."""
    import types

    from edgekd.device.compiler import tensorrt as ctrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    error = CudaError("CUDA driver version is insufficient for CUDA runtime version", call="cudaGetDeviceCount",
                      code=35, name="cudaErrorInsufficientDriver", driver=11040, runtime=12060,
                      binding="cuda-python (cuda.bindings.runtime)")
    monkeypatch.setattr(cuda, "status", lambda: cuda.CudaStatus(False, True, str(error), error=error))
    ok, why = ctrt.tensorrt_available()
    assert not ok and why.startswith("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA "
                                     "runtime version (driver 11.4, runtime 12.6")
    assert ctrt._cuda_device_count() == 0
    monkeypatch.setattr(cuda, "status", lambda: cuda.CudaStatus(True, True, "1 GPU(s)", devices=1))
    assert ctrt.tensorrt_available() == (True, "10.3.0") and ctrt._cuda_device_count() == 1
    monkeypatch.setattr(cuda, "status", lambda: cuda.CudaStatus(False, False, "no CUDA runtime found (looked in x)"))
    assert ctrt._cuda_device_count() is None


def test_the_builder_names_the_gpu_through_the_layer(monkeypatch):
    from edgekd.device.compiler import tensorrt as ctrt

    monkeypatch.setattr(cuda, "runtime", lambda: _Named())
    assert ctrt._gpu_name() == "Orin" and ctrt.gpu_sm() == "sm87"

    def no_cuda() -> CudaRuntime:
        raise CudaError("no CUDA runtime found (looked in nowhere)")

    monkeypatch.setattr(cuda, "runtime", no_cuda)
    assert ctrt._cuda_runtime() is None and ctrt._gpu_name() == "" and ctrt.gpu_sm() == ""

"""Importing TensorRT and making its objects (edgekd.device.tensorrt.loader): whether engines can be built here and
why not, the one logger, the Builder/Runtime constructors' one-line failure. The ``tensorrt`` modules here are
fakes, named so: they test edgekd's handling, never TensorRT."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from edgekd.core.errors import EdgekdError
from edgekd.device import cuda
from edgekd.device.tensorrt import loader
from edgekd.device.tensorrt.loader import tensorrt_available


def test_tensorrt_available_reports_a_reason():
    ok, detail = tensorrt_available()
    assert isinstance(ok, bool) and isinstance(detail, str) and detail
    if importlib.util.find_spec("tensorrt") is None:
        assert (ok, detail) == (False, "tensorrt is not installed")
    elif ok:
        assert detail[0].isdigit()  # the version


def test_tensorrt_available_names_a_missing_native_library(tmp_path, monkeypatch):
    """A tensorrt package whose native library is missing is not reported as "not installed": the reason names
    what failed (here a stand-in package whose import raises ImportError for libnvinfer, as the real one does)."""
    pkg = tmp_path / "tensorrt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('libnvinfer.so.10: cannot open shared object file', "
                                     "name='tensorrt_bindings')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "tensorrt", raising=False)
    ok, why = tensorrt_available()
    assert not ok and "libnvinfer.so.10" in why and "not installed" not in why


class _NullFactories:
    """Not TensorRT: constructors that fail the way pybind11 reports a nullptr from createInferBuilder/Runtime."""

    @staticmethod
    def Builder(logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    @staticmethod
    def Runtime(logger):
        return None


def test_tensorrt_that_cannot_start_is_one_line_naming_the_causes():
    for create, what in ((loader.create_builder, "builder"), (loader.create_runtime, "runtime")):
        with pytest.raises(EdgekdError) as err:
            create(_NullFactories, object())
        text = str(err.value)
        assert f"could not create its {what}" in text and "\n" not in text
        assert "out of memory" in text and "/dev/nvhost" in text and "video group" in text


class _Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class _ILogger:
    Severity = _Severity

    def __init__(self):
        pass


def test_one_tensorrt_logger_per_process():
    fake = types.SimpleNamespace(ILogger=_ILogger)
    seen: list = []
    first = loader.tensorrt_logger(fake, seen.append)
    first.log(_Severity.ERROR, "[x.cpp::f::1] broke")
    first.log(_Severity.INFO, "chatter")
    assert seen == ["tensorrt: (x.cpp::f::1) broke"] and first.errors == ["(x.cpp::f::1) broke"]
    later: list = []
    second = loader.tensorrt_logger(fake, later.append)
    assert second is first and second.errors == []  # the same object, now logging to the new sink
    second.log(_Severity.WARNING, "w")
    assert later == ["tensorrt: w"] and seen == ["tensorrt: (x.cpp::f::1) broke"]
    other = types.SimpleNamespace(ILogger=type("ILogger", (_ILogger,), {}))  # another tensorrt module (a test's)
    assert loader.tensorrt_logger(other) is not first


def test_tensorrt_available_needs_a_cuda_runtime(monkeypatch):
    """TensorRT importable but no CUDA runtime for edgekd's CUDA layer: not available (a build would compile every
    engine and fail only at verification)."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(cuda, "status",
                        lambda: cuda.CudaStatus(False, False, "no CUDA runtime found (looked in x)"))
    ok, why = tensorrt_available()
    assert not ok and why == "no CUDA runtime for edgekd's CUDA layer: no CUDA runtime found (looked in x)"

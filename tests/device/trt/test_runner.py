"""The TensorRT runner.

What needs no GPU (lazy imports, construction, clear errors when TensorRT is missing) runs everywhere. So does the
chain path (shared stream, feature maps left on the device, logits to the host, padding to the profile's min,
``batch_range``) against two STAND-INS, neither of them TensorRT or CUDA: :class:`RecordingCuda` replaces the CUDA
layer (device memory is bytearrays here, copies move bytes and are logged: it checks which copies the runner
issues) and :class:`FakeTrt` / :class:`FakeEngine` / :class:`FakeContext` follow TensorRT's name-based API and
assert the rules the runner must keep (cited in :mod:`edgekd.device.tensorrt.runner`). They show what the runner
asks for, not that TensorRT or a GPU does it. Running a real engine is marked ``tensorrt`` and skips, with the
reason :func:`tensorrt_available` gives, wherever TensorRT, an NVIDIA GPU or a CUDA runtime is missing (as on CI).
"""

from __future__ import annotations

import ctypes

import gc
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.core.errors import EdgekdError
from edgekd.core.vote import softmax
from edgekd.device import cuda
from edgekd.device.chain import Chain
from edgekd.device.tensorrt.build import build_engine
from edgekd.device.runners import make_runner
from edgekd.device.tensorrt import runner as trt_runner
from edgekd.device.tensorrt.loader import tensorrt_available
from edgekd.device.tensorrt.runner import TensorRTRunner, _sidecar_dla_core
from tests.helpers import assert_no_heavy_imports, gpu_target, tiny_onnx


# -- everywhere --------------------------------------------------------------------------------------------------
def test_tiny_graph_runs_on_onnxruntime(tmp_path):
    """The reference the TensorRT comparison below relies on."""
    path = tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    with make_runner("onnxruntime", path) as runner:
        out = runner.infer({"image": x})
    assert out["logits"].shape == (3, 5)


def test_make_runner_builds_a_tensorrt_runner_lazily(tmp_path):
    runner = make_runner("tensorrt", tmp_path / "model.engine", dla_core=1)
    assert isinstance(runner, TensorRTRunner)
    assert runner.backend == "tensorrt" and not runner.is_active
    assert runner.options == {"dla_core": 1}


def test_missing_engine_is_reported(tmp_path):
    with pytest.raises(EdgekdError, match="graph not found"):
        make_runner("tensorrt", tmp_path / "absent.engine").activate()


def test_activate_without_tensorrt_says_so(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"fake")
    runner = make_runner("tensorrt", engine)
    with pytest.raises(EdgekdError, match="tensorrt is not installed"):
        runner.activate()
    assert not runner.is_active
    with pytest.raises(EdgekdError, match="not active"):
        runner.infer({"image": np.zeros((1, 3, 16, 16), np.float32)})


def test_dla_core_default_comes_from_the_sidecar(tmp_path):
    engine = tmp_path / "model.engine"
    assert _sidecar_dla_core(engine) is None
    (tmp_path / "model.engine.json").write_text(json.dumps({"dla_core": 1}))
    assert _sidecar_dla_core(engine) == 1
    (tmp_path / "model.engine.json").write_text("{broken")
    assert _sidecar_dla_core(engine) is None


def test_the_runner_applies_the_builds_version_gate(tmp_path, monkeypatch):
    """An engine is not loaded with a TensorRT the build refuses: the same one line (versions.check_tensorrt), before
    any TensorRT object is made. The ``tensorrt`` here is a FAKE carrying only a version."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.4.3.1"))
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"fake")
    runner = make_runner("tensorrt", engine)
    with pytest.raises(EdgekdError, match=r"^TensorRT 8.4.3.1 is not supported: edgekd builds and runs engines with "
                                          r"TensorRT 8.5 to 11.x") as err:
        runner.activate()
    assert "\n" not in str(err.value) and not runner.is_active


def test_a_dla_engine_on_a_device_without_that_dla_core_is_refused(standin, tmp_path):
    """The one DLA rule at run time: the sidecar's DLA core on a runtime with no DLA cores (the fake says 0) is one
    line, as at build time; it is never run on the GPU instead."""
    engine = fake_engines(tmp_path, n=1)[0]
    (tmp_path / "segment0.engine.json").write_text(json.dumps({"dla_core": 0}))
    runner = make_runner("tensorrt", engine)
    with pytest.raises(EdgekdError, match=r"^segment0.engine: --dla-core 0: this device has no DLA core$"):
        runner.activate()
    assert not runner.is_active
    standin.dla_cores = 2
    with make_runner("tensorrt", engine) as runner:
        assert runner._runtime.DLA_core == 0


def test_importing_the_runner_does_not_import_tensorrt_or_cuda():
    assert_no_heavy_imports("from edgekd.device.runners import make_runner\nmake_runner('tensorrt', 'x.engine')")


# -- stand-ins: a recording CUDA layer and a fake TensorRT (neither is CUDA or TensorRT) ----------------------------
class RecordingCuda(cuda.CudaRuntime):
    """A RECORDING STAND-IN for the CUDA layer (a :class:`edgekd.device.cuda.CudaRuntime`): device memory is
    bytearrays in this process, copies really move bytes, and every call goes into :attr:`log`. It checks which
    copies the runner issues and in what order; it is not CUDA and says nothing about a GPU."""

    binding = "recording stand-in"

    def __init__(self) -> None:
        self.mem: dict[int, bytearray] = {}
        self.log: list[tuple[Any, ...]] = []
        self._next_ptr, self._next_stream = 0x10000, 1
        self.streams: dict[int, str] = {}
        self.dla_cores = 0  # what FakeTrt's runtime reports as num_DLA_cores (kept here: one FakeTrt per activation)
        self.pinned: dict[int, Any] = {}  # "page-locked" address → the ctypes buffer behind it (ordinary memory here)
        self.pinning = True  # False: host_alloc fails, as cudaMallocHost does when page-locked memory runs out
        self.host_addresses: list[tuple[str, int, int]] = []  # (htod|dtoh, host address, nbytes) of every copy

    def device_count(self) -> int:
        return 1

    def driver_version(self) -> int:
        return 12060

    def runtime_version(self) -> int:
        return 12060

    def malloc(self, nbytes: int) -> int:
        ptr = self._next_ptr
        self._next_ptr += (nbytes // 0x10000 + 1) * 0x10000  # 256-byte aligned, as cudaMalloc's are
        self.mem[ptr] = bytearray(nbytes)
        self.log.append(("malloc", ptr, nbytes))
        return ptr

    def free(self, ptr: int) -> None:
        del self.mem[ptr]
        self.log.append(("free", ptr))

    def host_alloc(self, nbytes: int) -> int:
        if not self.pinning:
            raise cuda.CudaError("out of memory", call="cudaMallocHost", code=2, name="cudaErrorMemoryAllocation")
        buffer = (ctypes.c_ubyte * nbytes)()
        self.pinned[ctypes.addressof(buffer)] = buffer
        self.log.append(("host_alloc", ctypes.addressof(buffer), nbytes))
        return ctypes.addressof(buffer)

    def host_free(self, ptr: int) -> None:
        del self.pinned[ptr]
        self.log.append(("host_free", ptr))

    def is_pinned(self, address: int, nbytes: int) -> bool:
        """Whether ``nbytes`` from ``address`` lie inside one page-locked allocation."""
        return any(p <= address and address + nbytes <= p + len(b) for p, b in self.pinned.items())

    def _open(self, stream: Any) -> None:
        assert self.streams.get(stream) == "open", f"stream {stream} is not open"

    def htod_async(self, dst: int, host: np.ndarray, stream: Any) -> None:
        self._open(stream)
        assert host.flags.c_contiguous
        self.mem[dst][:host.nbytes] = host.tobytes()  # raises if the buffer is too small
        self.host_addresses.append(("htod", host.ctypes.data, host.nbytes))
        assert len(self.mem[dst]) >= host.nbytes
        self.log.append(("htod", dst, host.nbytes, stream))

    def dtoh_async(self, host: np.ndarray, src: int, stream: Any) -> None:
        self._open(stream)
        assert host.flags.c_contiguous and len(self.mem[src]) >= host.nbytes
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(self.mem[src][:host.nbytes]), dtype=np.uint8)
        self.host_addresses.append(("dtoh", host.ctypes.data, host.nbytes))
        self.log.append(("dtoh", src, host.nbytes, stream))

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._open(stream)
        self.mem[dst][:nbytes] = self.mem[src][:nbytes]
        self.log.append(("dtod", dst, src, nbytes, stream))

    def stream_create(self) -> Any:
        stream, self._next_stream = self._next_stream, self._next_stream + 1
        self.streams[stream] = "open"
        self.log.append(("stream_create", stream))
        return stream

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._open(stream)
        self.log.append(("sync", stream))

    def stream_destroy(self, stream: Any) -> None:
        self._open(stream)
        self.streams[stream] = "destroyed"
        self.log.append(("stream_destroy", stream))

    # reading and writing the fake device memory (for the fake engine) ---------------------------------------------
    def read(self, ptr: int, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape)) * 4
        return np.frombuffer(bytes(self.mem[ptr][:n]), dtype=np.float32).reshape(shape).copy()

    def write(self, ptr: int, value: np.ndarray) -> None:
        data = np.ascontiguousarray(value, dtype=np.float32).tobytes()
        assert len(data) <= len(self.mem[ptr]), "TensorRT would write past the end of the buffer"
        self.mem[ptr][:len(data)] = data

    def entries(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == kind]


SAMPLE = (3, 2, 2)  # every segment's input and feat: (N, 3, 2, 2); logits: (N, 3); conf: (N,)


def segment_reference(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """What a fake segment engine computes: feat = 0.5 x + 1, logits = per-channel sums of feat times scale."""
    feat = 0.5 * x + 1.0  # (N, 3, 2, 2)
    return feat, feat.reshape(len(x), 3, -1).sum(axis=2) * scale  # (N, 3)


def _shape(name: str, batch: int) -> tuple[int, ...]:
    """A fake engine's tensor shapes, as an exported segment graph declares them."""
    return (batch, 3) if name.startswith("logits") else (batch,) if name.startswith("conf") else (batch, *SAMPLE)


class FakeTrt:
    """A FAKE ``tensorrt`` module: just what the runner touches (ILogger, Runtime, TensorIOMode, nptype)."""

    __version__ = "10.3.0-fake"

    class ILogger:  # what edgekd's one logger (tensorrt.loader.tensorrt_logger) subclasses
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    def __init__(self, standin: RecordingCuda) -> None:
        self.standin = standin

    @staticmethod
    def nptype(dtype: str) -> type:
        return {"FLOAT": np.float32}[dtype]

    def Runtime(self, logger: Any) -> Any:
        standin = self.standin

        class _Runtime:
            DLA_core = -1
            num_DLA_cores = standin.dla_cores  # IRuntime.num_DLA_cores: the DLA cores this device has

            def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
                return FakeEngine(json.loads(data), standin)

        return _Runtime()


class FakeEngine:
    """A FAKE ``ICudaEngine`` following TensorRT's name-based API (8.5+), described by the JSON in the engine file:
    ``{"input": name, "outputs": [...], "batch": [min, opt, max] | null (fixed), "fixed": n, "scale": s}``."""

    def __init__(self, spec: dict[str, Any], standin: RecordingCuda) -> None:
        self.spec, self.standin = spec, standin
        self.names = [spec["input"], *spec["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return FakeTrt.TensorIOMode.INPUT if name == self.spec["input"] else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return _shape(name, self.spec.get("fixed", -1))

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        # TensorRT answers for inputs only (samples/python/common_runtime.py: for an output it returns a Dims with
        # nbDims = -1); the runner must size outputs from the context instead.
        assert name == self.spec["input"], f"get_tensor_profile_shape asked for output {name}"
        assert profile == 0
        return [(b, *SAMPLE) for b in self.spec["batch"]]

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    """A FAKE ``IExecutionContext``: computes :func:`segment_reference` from the stand-in's device memory in
    ``execute_async_v3`` and asserts TensorRT's rules (include/NvInferRuntime.h, python/docstrings/infer)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.shapes, self.addresses = engine, {}, {}
        self.executed: list[dict[str, Any]] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        spec = self.engine.spec
        assert name == spec["input"]
        lo, hi = (spec["fixed"],) * 2 if "fixed" in spec else (spec["batch"][0], spec["batch"][2])
        if tuple(shape[1:]) != SAMPLE or not lo <= shape[0] <= hi:
            return False  # outside the optimization profile: TensorRT returns False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        source = self.engine.spec["input"]
        assert source in self.shapes, "output shapes are only known once every input shape is set"
        batch = self.shapes[source][0]
        return self.shapes[source] if name == source else _shape(name, batch)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        assert ptr % 256 == 0, "TensorRT needs at least 256-byte-aligned tensor addresses"
        assert ptr in self.engine.standin.mem, "a whole device allocation, never an offset into one"
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        standin = self.engine.standin
        assert stream_handle != 0, "execute_async_v3 on the default stream (TensorRT advises a non-default one)"
        assert standin.streams.get(stream_handle) == "open"
        missing = [n for n in self.engine.names if n not in self.addresses]
        assert not missing, f"every input and output needs an address before execute_async_v3: {missing}"
        source = self.engine.spec["input"]
        shape = self.shapes[source]
        feat, logits = segment_reference(standin.read(self.addresses[source], shape), self.engine.spec["scale"])
        conf = softmax(logits.astype(np.float32)).max(axis=1)  # the segment graph's Softmax + ReduceMax
        for name in self.engine.spec["outputs"]:
            standin.write(self.addresses[name], logits if name.startswith("logits") else
                          conf if name.startswith("conf") else feat)
        self.executed.append({"shape": shape, "addresses": dict(self.addresses), "stream": stream_handle})
        standin.log.append(("execute", source, shape[0], stream_handle))
        return True


@pytest.fixture
def standin(monkeypatch) -> RecordingCuda:
    """The recording CUDA stand-in and the fake TensorRT, installed where the runner looks for them."""
    rec = RecordingCuda()
    monkeypatch.setattr(trt_runner, "import_tensorrt", lambda: FakeTrt(rec))
    monkeypatch.setattr(cuda, "runtime", lambda: rec)
    return rec


def fake_engines(folder: Path, n: int = 3, batch: tuple[int, int, int] | None = (1, 2, 8),
                 fixed: int | None = None) -> list[Path]:
    """``n`` chained fake segment engines (segment{i}.engine): image → feat0, logits0, conf0 → ... → logits{n-1},
    conf{n-1}."""
    paths = []
    for i in range(n):
        spec: dict[str, Any] = {"input": "image" if i == 0 else f"feat{i - 1}",
                                "outputs": ([f"feat{i}"] if i < n - 1 else []) + [f"logits{i}", f"conf{i}"],
                                "batch": list(batch) if batch else None, "scale": 1.0 + i}
        if fixed is not None:
            spec["fixed"] = fixed
        paths.append(folder / f"segment{i}.engine")
        paths[-1].write_text(json.dumps(spec))
    return paths


def chain_reference(x: np.ndarray, n: int = 3) -> list[np.ndarray]:
    """(N, 3) softmax of each exit's logits, computed in numpy."""
    out = []
    for i in range(n):
        x, logits = segment_reference(x, 1.0 + i)
        out.append(softmax(logits))
    return out


def buffer_names(chain: Chain) -> dict[int, str]:
    """Device pointer → ``segment{i}:{tensor}`` for every buffer of the chain's runners."""
    return {ptr: f"segment{i}:{name}" for i, r in enumerate(chain.runners) for name, ptr in r._buffers.items()}


def test_batch_range_comes_from_the_optimization_profile(standin, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runner = make_runner("tensorrt", fake_engines(tmp_path, n=1, batch=(1, 2, 8))[0])
    assert runner.batch_range == (1, None)  # not loaded yet: nothing known
    with runner:
        assert runner.batch_range == (1, 8)
    with make_runner("tensorrt", fake_engines(tmp_path / "a", n=1, batch=(4, 4, 4))[0]) as runner:
        assert runner.batch_range == (4, 4)  # a fixed-batch (DLA) profile
    with make_runner("tensorrt", fake_engines(tmp_path / "b", n=1, batch=None, fixed=2)[0]) as runner:
        assert runner.batch_range == (2, 2)  # a static input shape
    with make_runner("tensorrt", fake_engines(tmp_path, n=1, batch=(1, 2, 8))[0]) as runner:
        with pytest.raises(EdgekdError, match="a batch of 9 is outside the 1..8"):
            runner.infer({"image": np.zeros((9, *SAMPLE), np.float32)})


def test_early_exit_at_batch_1_copies_no_feature_map_to_the_host(standin, tmp_path):
    """A live camera frame: the image goes up once, each segment that may answer sends its logits and confidence
    down, feat stays on the device; a segment whose threshold nothing reaches sends nothing down (issue 23)."""
    x = np.random.default_rng(0).normal(size=(1, *SAMPLE)).astype(np.float32)  # (1, 3, 2, 2)
    want = chain_reference(x)
    with Chain("tensorrt", fake_engines(tmp_path)) as chain:
        names = buffer_names(chain)
        for thresholds, answer, answering in (([1.5, 0.0, 0.0], 1, [1]), ([1.5, 1.5, 0.0], 2, [2]),
                                              ([0.0, 0.0, 0.0], 0, [0]), ([0.99, 0.0, 0.0], 1, [0, 1])):
            standin.log.clear()
            out = chain.early_exit(x, thresholds)
            assert out.exits.tolist() == [answer]
            np.testing.assert_allclose(out.probs, want[answer], rtol=1e-6)
            down = [names[e[1]] for e in standin.entries("dtoh")]
            assert down == [f"segment{i}:{t}{i}" for i in answering for t in ("logits", "conf")]  # never feat
            assert [names[e[1]] for e in standin.entries("htod")] == ["segment0:image"]
            assert not standin.entries("dtod")
            # a sync where something comes down (the chain decides on the host) or went up (the image)
            assert len(standin.entries("sync")) == len(set([0] + answering))
        # segment i + 1 read feat{i} straight from segment i's output buffer, on the one shared stream
        contexts = [r._context for r in chain.runners]
        for i in (1, 2):
            bound = contexts[i].executed[-1]["addresses"][f"feat{i - 1}"]
            assert bound == chain.runners[i - 1]._buffers[f"feat{i - 1}"]
        assert len({c.executed[-1]["stream"] for c in contexts}) == 1
    assert list(standin.streams.values()) == ["destroyed"]  # one stream for the whole chain, destroyed on close


def test_a_partial_batch_copies_only_what_it_must(standin, tmp_path):
    """Rows 0 and 2 answer at exit 0: feat0 comes to the host once and the two other rows go back up."""
    x = np.zeros((4, *SAMPLE), np.float32)  # flat rows: confidence 1/3 everywhere
    x[[0, 2], 0] = 10.0  # peaked rows: confidence ~1 at exit 0
    want = chain_reference(x)
    with Chain("tensorrt", fake_engines(tmp_path)) as chain:
        names = buffer_names(chain)
        standin.log.clear()
        out = chain.early_exit(x, [0.9, 0.0, 0.0])
        assert out.exits.tolist() == [0, 1, 0, 1]
        np.testing.assert_allclose(out.probs[[0, 2]], want[0][[0, 2]], rtol=1e-6)
        np.testing.assert_allclose(out.probs[[1, 3]], chain_reference(x[[1, 3]])[1], rtol=1e-6)
        down = [(names[e[1]], e[2]) for e in standin.entries("dtoh")]
        row = int(np.prod(SAMPLE)) * 4
        assert down == [("segment0:logits0", 4 * 12), ("segment0:conf0", 4 * 4), ("segment0:feat0", 4 * row),
                        ("segment1:logits1", 2 * 12), ("segment1:conf1", 2 * 4)]
        up = [(names[e[1]], e[2]) for e in standin.entries("htod")]
        assert up == [("segment0:image", 4 * row), ("segment1:feat0", 2 * row)]


def test_a_short_batch_is_padded_to_the_profile_min(standin, tmp_path):
    """A fixed-batch engine (profile 2..2, as DLA engines are): one frame runs as two rows, one comes back."""
    x = np.random.default_rng(1).normal(size=(1, *SAMPLE)).astype(np.float32)
    row = int(np.prod(SAMPLE)) * 4
    with Chain("tensorrt", fake_engines(tmp_path, batch=(2, 2, 2))) as chain:
        assert [r.batch_range for r in chain.runners] == [(2, 2)] * 3
        names = buffer_names(chain)
        standin.log.clear()
        out = chain.early_exit(x, [1.5, 1.5, 0.0])
        assert out.exits.tolist() == [2] and out.probs.shape == (1, 3)
        np.testing.assert_allclose(out.probs, chain_reference(x)[2], rtol=1e-6)
        assert [(names[e[1]], e[2]) for e in standin.entries("htod")] == [("segment0:image", 2 * row)]
        assert [e[2] for e in standin.log if e[0] == "execute"] == [2, 2, 2]  # every engine ran its fixed batch
        assert [(names[e[1]], e[2]) for e in standin.entries("dtoh")] == \
            [(f"segment2:{t}2", 2 * size) for t, size in (("logits", 12), ("conf", 4))]  # padded rows: dropped
        single = chain.runners[0].infer({"image": x})
        assert single["logits0"].shape == (1, 3) and single["feat0"].shape == (1, *SAMPLE)
        np.testing.assert_allclose(single["logits0"], segment_reference(x, 1.0)[1], rtol=1e-6)
        with pytest.raises(EdgekdError, match="outside the 2..2"):
            chain.runners[0].infer({"image": np.zeros((3, *SAMPLE), np.float32)})


def test_host_copies_go_through_page_locked_buffers_and_results_are_copies(standin, tmp_path):
    """Issue 23: every host copy of a runner's own inputs and outputs uses its page-locked staging buffers
    (cudaMallocHost, allocated once at activation, freed at close); what a call returns is a copy, so the next
    call, which overwrites those buffers, leaves it as it was."""
    rng = np.random.default_rng(3)
    x1, x2 = (rng.normal(size=(2, *SAMPLE)).astype(np.float32) for _ in range(2))
    with make_runner("tensorrt", fake_engines(tmp_path, n=1)[0]) as runner:
        assert len(standin.entries("host_alloc")) == len(runner.input_names + runner.output_names) == 3
        standin.host_addresses.clear()
        first = runner.infer({"image": x1})
        copies = list(standin.host_addresses)
        assert [c[0] for c in copies] == ["htod", "dtoh", "dtoh"]
        assert all(standin.is_pinned(address, nbytes) for _, address, nbytes in copies)
        kept = {name: value.copy() for name, value in first.items()}
        second = runner.infer({"image": x2})
        for name, value in first.items():
            np.testing.assert_array_equal(value, kept[name])  # not a view of the reused buffer
            assert not standin.is_pinned(value.ctypes.data, value.nbytes)
        np.testing.assert_allclose(second["logits0"], segment_reference(x2, 1.0)[1], rtol=1e-6)
    assert not standin.pinned and len(standin.entries("host_free")) == 3


def test_without_page_locked_memory_the_runner_copies_through_ordinary_memory(standin, tmp_path):
    x = np.random.default_rng(4).normal(size=(1, *SAMPLE)).astype(np.float32)
    standin.pinning = False
    with Chain("tensorrt", fake_engines(tmp_path)) as chain:
        assert all(not r._pinned for r in chain.runners)
        out = chain.early_exit(x, [1.5, 1.5, 0.0])
        np.testing.assert_allclose(out.probs, chain_reference(x)[2], rtol=1e-6)
        assert standin.host_addresses and not any(standin.is_pinned(a, n) for _, a, n in standin.host_addresses)


def test_run_keeps_feat_on_the_device_until_someone_reads_it(standin, tmp_path):
    rng = np.random.default_rng(2)
    x1, x2 = (rng.normal(size=(3, *SAMPLE)).astype(np.float32) for _ in range(2))
    with Chain("tensorrt", fake_engines(tmp_path)) as chain:
        names = buffer_names(chain)
        standin.log.clear()
        first = chain.run(x1)
        assert isinstance(first["feat0"], cuda.DeviceArray) and isinstance(first["logits0"], np.ndarray)
        assert first["feat0"].shape == (3, *SAMPLE) and len(first["feat0"]) == 3
        assert not [e for e in standin.entries("dtoh") if names[e[1]].endswith(("feat0", "feat1"))]
        np.testing.assert_allclose(np.asarray(first["feat0"]), segment_reference(x1, 1.0)[0], rtol=1e-6)
        assert [names[e[1]] for e in standin.entries("dtoh")][-1] == "segment0:feat0"  # read on demand, once
        np.asarray(first["feat0"])
        assert len([e for e in standin.entries("dtoh") if names[e[1]] == "segment0:feat0"]) == 1
        # running again overwrites the buffers: feat1 of the first run, still held, is read to the host first
        second = chain.run(x2)
        assert not first["feat1"].on_device
        want1 = segment_reference(segment_reference(x1, 1.0)[0], 2.0)[0]
        np.testing.assert_allclose(np.asarray(first["feat1"]), want1, rtol=1e-6)
        np.testing.assert_allclose(second["logits2"], segment_reference(
            segment_reference(segment_reference(x2, 1.0)[0], 2.0)[0], 3.0)[1], rtol=1e-6)
        # results nobody holds cost nothing: no copy when they are dropped
        del first, second
        gc.collect()
        standin.log.clear()
        chain.run(x1)
        assert not [e for e in standin.entries("dtoh") if names[e[1]].endswith(("feat0", "feat1"))]


def test_the_segment_input_hook_sees_host_arrays(standin, tmp_path):
    x = np.random.default_rng(3).normal(size=(2, *SAMPLE)).astype(np.float32)
    seen: list[tuple[int, dict[str, Any]]] = []
    with Chain("tensorrt", fake_engines(tmp_path)) as chain:
        chain.run(x, on_segment_input=lambda i, feed: seen.append((i, feed)))
    assert [i for i, _ in seen] == [0, 1, 2]
    for i, feed in seen:
        (value,) = feed.values()
        assert type(value) is np.ndarray and value.shape == (2, *SAMPLE)
    np.testing.assert_allclose(seen[2][1]["feat1"], segment_reference(segment_reference(x, 1.0)[0], 2.0)[0],
                               rtol=1e-6)


def test_runners_on_different_streams_copy_on_the_device(standin, tmp_path):
    """A device array from a runner that is not followed (its own stream) is copied device to device and waited
    for: never through the host."""
    x = np.random.default_rng(4).normal(size=(2, *SAMPLE)).astype(np.float32)
    paths = fake_engines(tmp_path, n=2)
    with make_runner("tensorrt", paths[0]) as first, make_runner("tensorrt", paths[1]) as second:
        assert first._stream is not second._stream
        out = first.infer({"image": x}, keep_on_device=["feat0"])
        standin.log.clear()
        got = second.infer({"feat0": out["feat0"]}, ["logits1"])
        assert [e[0] for e in standin.log if e[0] in ("htod", "dtoh", "dtod")] == ["dtod", "dtoh"]
        assert standin.entries("dtod")[0][4] == first._stream.handle  # on the producer's stream, then synced
        np.testing.assert_allclose(got["logits1"], segment_reference(segment_reference(x, 1.0)[0], 2.0)[1],
                                   rtol=1e-6)
        plain = first.infer({"image": x})  # no keep_on_device: numpy, float32
        assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in plain.values())


def test_closing_synchronises_before_freeing_and_destroys_the_shared_stream_once(standin, tmp_path):
    chain = Chain("tensorrt", fake_engines(tmp_path))
    with chain:
        chain.early_exit(np.zeros((1, *SAMPLE), np.float32), [1.5, 1.5, 0.0])
        standin.log.clear()
    kinds = [e[0] for e in standin.log]
    assert kinds.count("stream_destroy") == 1 and kinds[-1] == "stream_destroy"
    assert kinds.index("sync") < kinds.index("free")  # TensorRT: no freeing before the stream is synchronised
    assert len(standin.entries("free")) == 4 + 4 + 3 and not standin.mem  # every buffer of the 3 engines
    with chain:  # a closed chain opens again, with a fresh stream
        assert chain.runners[0]._stream.handle == chain.runners[2]._stream.handle


def test_stream_and_device_array_lifecycle():
    rec = RecordingCuda()
    stream = cuda.Stream(rec)
    assert stream.retain() is stream
    stream.release()
    assert not stream.closed and not rec.entries("stream_destroy")
    ptr = rec.malloc(24)
    rec.write(ptr, np.arange(6, dtype=np.float32))
    array = cuda.DeviceArray(ptr, (2, 3), np.float32, stream)
    assert (array.nbytes, array.ndim, len(array), array.capacity) == (24, 2, 2, 24)
    np.testing.assert_array_equal(np.asarray(array), np.arange(6, dtype=np.float32).reshape(2, 3))
    np.asarray(array, dtype=np.float64)
    assert len(rec.entries("dtoh")) == 1  # read once, kept
    array.detach()
    assert not array.on_device and np.asarray(array).shape == (2, 3)
    stream.release()
    assert stream.closed and rec.entries("stream_destroy") and rec.log[-2][0] == "sync"
    with pytest.raises(EdgekdError, match="released"):
        stream.retain()
    orphan = cuda.DeviceArray(ptr, (2, 3), np.float32, stream)
    orphan.ptr = None
    with pytest.raises(EdgekdError, match="released without being read"):
        orphan.numpy()


# -- real engines (TensorRT + NVIDIA GPU + a CUDA runtime) ----------------------------------------------------------
@pytest.fixture
def trt_ready() -> str:
    ok, detail = tensorrt_available()
    if not ok:
        pytest.skip(detail)
    state = cuda.status()
    if not state.ok:
        pytest.skip(state.detail)
    return detail


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_engine_matches_onnxruntime(tmp_path, trt_ready, precision, atol):
    onnx_path = tiny_onnx(tmp_path / "full.onnx")
    engine = build_engine(onnx_path, tmp_path / "out", precision=precision, target=gpu_target(tmp_path),
                          input_name="image", input_shape_chw=(3, 16, 16), engine_cache=tmp_path / "engines",
                          log=lambda m: None).path
    rng = np.random.default_rng(2)
    with make_runner("onnxruntime", onnx_path) as ort_runner, \
            make_runner("tensorrt", engine) as trt_runner:
        assert trt_runner.input_names == ["image"] and trt_runner.output_names == ["logits"]
        for batch in (1, 3, 4, 2):  # every size within the profile, reusing the max-batch buffers
            x = rng.random((batch, 3, 16, 16), dtype=np.float32)
            want = ort_runner.infer({"image": x})["logits"]
            got = trt_runner.infer({"image": x})["logits"]
            assert got.dtype == np.float32 and got.shape == (batch, 5)
            np.testing.assert_allclose(got, want, atol=atol, rtol=atol)
        with pytest.raises(EdgekdError, match="outside the engine's optimisation profile"):
            trt_runner.infer({"image": np.zeros((5, 3, 16, 16), np.float32)})  # batch.max is 4
        with pytest.raises(EdgekdError, match="unknown outputs"):
            trt_runner.infer({"image": np.zeros((1, 3, 16, 16), np.float32)}, outputs=["nope"])
    assert not trt_runner.is_active


@pytest.mark.tensorrt
def test_corrupt_engine_is_reported(tmp_path, trt_ready):
    engine = tmp_path / "bad.engine"
    engine.write_bytes(b"\0" * 256)
    with pytest.raises(EdgekdError, match="cannot load bad.engine"):
        make_runner("tensorrt", engine).activate()

"""Issue 14: what a hostile-but-ordinary user feeds the device commands (build, run, profile) ends as one line
``error: …`` on stderr and exit status 2: no traceback, no multi-line box, no library chatter before it, and nothing
computed before an output that cannot be written is refused.

Each case runs the real command in a child process (``python -m edgekd``), on a copy of the committed fixture bundle
(tests/fixtures/bundle-abf6d4b) edited the way a user or a broken disk would, so stderr is seen exactly as a user
sees it. Torch-free. The cases that need a user other than root run in a forked child that drops to ``nobody``
after its imports (the interpreter itself lies under root's private home here)."""

from __future__ import annotations

import codecs
import hashlib
import http.server
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekd.core.manifest import ManifestError, load_manifest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"


def edgekd(*args, cwd: Path, env: dict = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 and stderr exactly one line, ``error: …``, holding every needle; returns the line."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def bundle(tmp_path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(str(FIXTURE), str(dest))
    return dest


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for n in range(8):
        writer.write(np.full((48, 64, 3), 20 * n, np.uint8))
    writer.release()
    return path


def edit_manifest(bundle: Path, change) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    change(data)
    (bundle / "manifest.json").write_text(json.dumps(data))


def rehash(bundle: Path, key: str) -> None:
    """Make the manifest's sha256 of files[key] match the file as it is now (a tampered file that passes the hash)."""
    def change(m):
        m["files"][key]["sha256"] = hashlib.sha256((bundle / m["files"][key]["path"]).read_bytes()).hexdigest()
    edit_manifest(bundle, change)


def run_args(bundle: Path, clip: Path, *extra) -> list:
    return ["run", bundle, "--source", clip, "--headless", "--max-frames", "2", *extra]


# ---------------------------------------------------------------------------------------- unwritable outputs


def test_outputs_under_a_regular_file_are_refused_before_any_work(bundle, clip, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["build", bundle, "--precision", "fp32", "--out", a_file / "out"], "--out"),
        (["build", bundle, "--precision", "int8", "--out", tmp_path / "b8", "--cache-dir", a_file / "c"],
         "--cache-dir"),
        (["profile", bundle, "--out", a_file / "report", "--iterations", "2", "--warmup", "0"], "--out"),
        (run_args(bundle, clip, "--jsonl", a_file / "log.jsonl"), "--jsonl"),
        (run_args(bundle, clip, "--output", a_file / "out.mp4"), "--output"),
    ]
    for args, flag in cases:
        t0 = time.perf_counter()
        r = edgekd(*args, cwd=tmp_path)
        one_line_error(r, flag, "is not a directory")
        assert time.perf_counter() - t0 < 60, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "bundle"]  # nothing made, nothing left


def test_a_directory_given_as_a_file_output_is_refused_before_the_run(bundle, clip, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for flag in ("--jsonl", "--output"):
        r = edgekd(*run_args(bundle, clip, flag, logs), cwd=tmp_path)
        one_line_error(r, flag, "is a directory; give a file name")
        assert "frames" not in r.stdout  # refused before the first frame, not after the last
    assert list(logs.iterdir()) == []


def _readable_package(shared: Path) -> Path:
    """A copy of the ``edgekd`` package under ``shared`` that every user can read (the folder holding it).

    The clone under test may lie where ``nobody`` cannot read (a private 0700 directory as root: CI images, Jetson
    containers), and the child still imports what the parent never loaded (``edgekd.device.compiler.targets`` on the
    first build, the shipped target YAMLs)."""
    dest = shared / "readable-src"
    if not (dest / "edgekd").is_dir():
        shutil.copytree(str(ROOT / "edgekd"), str(dest / "edgekd"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for p in [dest, *dest.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def _import_edgekd_from(copy: Path) -> None:
    """Point every loaded ``edgekd`` package at its twin in ``copy``, so the submodules and data files imported
    from now on come from the readable copy (the modules already loaded keep running as they are)."""
    for name, module in list(sys.modules.items()):
        if (name == "edgekd" or name.startswith("edgekd.")) and hasattr(module, "__path__"):
            module.__path__ = [str(copy.joinpath(*name.split(".")))]
    sys.path.insert(0, str(copy))
    sys.path_importer_cache.clear()


def _as_nobody(fn, shared: Path):
    """Run ``fn()`` in a forked child whose user is ``nobody`` (everything imported first: the interpreter's files
    are not readable by nobody here), importing edgekd's not-yet-loaded modules from a readable copy in ``shared``;
    return what it returns (pickled back through a pipe)."""
    copy = _readable_package(shared)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            _import_edgekd_from(copy)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            result = exc
        with os.fdopen(write, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = pickle.loads(data)
    if isinstance(result, BaseException):
        raise result
    return result


@pytest.fixture
def shared_dir():
    """A folder outside root's private pytest tree, so that another user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="edgekd-nobody-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(str(path), ignore_errors=True)


def _cli(args: list) -> tuple:
    """``edgekd ARGS`` in this process (typer's runner, stderr apart): (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from edgekd.cli import app

    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: stderr is always apart
        runner = CliRunner()
    r = runner.invoke(app, [str(a) for a in args])
    if r.exit_code not in (0, 2) and r.exc_info:  # show a crash's traceback, not just its status
        import traceback

        return r.exit_code, r.stdout, "".join(traceback.format_exception(*r.exc_info))
    return r.exit_code, r.stdout, r.stderr


needs_root = pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0,
                                reason="drops to the user nobody, which takes root")


@needs_root
def test_a_read_only_directory_is_refused_for_a_user_who_cannot_write_it(bundle, clip, shared_dir):
    import edgekd.device.compiler.builder  # noqa: F401 - imported before the child drops its rights
    import edgekd.device.profile.profiler  # noqa: F401
    import edgekd.device.runtime.app  # noqa: F401

    src = shared_dir / "bundle"
    shutil.copytree(str(bundle), str(src))
    for p in [src, *src.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    ro = shared_dir / "ro"
    ro.mkdir(mode=0o755)  # root's: read-only for nobody
    cases = [(["build", src, "--precision", "fp32", "--backend", "onnxruntime", "--out", ro / "out"],
              ["--max-drop", "nan"]),
             (["profile", src, "--out", ro / "report", "--iterations", "2", "--warmup", "0"], ["--threads", "0"]),
             (["run", src, "--source", clip, "--headless", "--jsonl", ro / "log.jsonl"], ["--threads", "0"])]
    os.chdir(str(shared_dir))  # a working directory nobody may write into
    try:
        codecs.lookup("cp437")  # zip member names: a codec imported on first use
        load_manifest(src)
        for args, refused in cases:
            assert _cli(args + refused)[0] == 2  # as root, parsed to the end: the option parser's lazy imports done
            code, _out, err = _as_nobody(lambda: _cli(args), shared_dir)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert code == 2 and len(lines) == 1 and "permission denied in" in lines[0], (args, code, err)
    finally:
        os.chdir(str(ROOT))
    assert list(ro.iterdir()) == []


@needs_root
def test_a_bundle_the_user_cannot_read_is_one_line(bundle, shared_dir):
    src = shared_dir / "bundle"
    shutil.copytree(str(bundle), str(src))
    for p in src.iterdir():
        p.chmod(0o600)  # root's own files
    src.chmod(0o755)

    def load():
        try:
            load_manifest(src)
        except ManifestError as exc:
            return str(exc)
        return "loaded"

    message = _as_nobody(load, shared_dir)
    assert "cannot read" in message and "Permission denied" in message, message
    assert "\n" not in message


# ------------------------------------------------------------------------------------------- bad manifests


def _drop_last_exit(m):
    m["exits"].pop()
    m["thresholds"].pop()
    m["graphs"]["stages"].pop()
    m["vote"]["weights"].pop()


def _add_exit(m):
    m["exits"].append(dict(m["exits"][-1], index=3, stage=3))
    m["thresholds"].append(0.0)
    m["graphs"]["stages"].append(m["graphs"]["stages"][-1])
    m["vote"]["weights"].append(1.0)


MANIFEST_CASES = {
    "height 10^9": (lambda m: m["input_spec"].update(height=10 ** 9), "larger than 8192 px"),
    "height not the graph's": (lambda m: m["input_spec"].update(height=20), "declares input 'image'"),
    "channels not the graph's": (lambda m: m["input_spec"].update(channels=3, mean=[0.3] * 3, std=[0.3] * 3,
                                                                  color_order="rgb"), "declares input 'image'"),
    "one class too many": (lambda m: [m[k].append("x") for k in ("class_names",)] and
                           m["input_spec"]["class_names"].append("x"), "'logits0'"),
    "one class too few": (lambda m: (m["class_names"].pop(), m["input_spec"]["class_names"].pop()), "'logits0'"),
    "macs 10^400": (lambda m: m["exits"][0].update(macs=10 ** 400), "exits[0].macs"),
    "feat_shape not the graph's": (lambda m: m["exits"][0].update(feat_shape=[16, 8, 8]), "'feat0'"),
    "feat_shape a string": (lambda m: m["exits"][0].update(feat_shape="x"), "feat_shape"),
    "vote weights strings": (lambda m: m["vote"].update(weights=["a", "b", "c"]), "vote.weights"),
    "vote weights overflow": (lambda m: m["vote"].update(rule="weighted", weights=[1e308, 1e308, 1.0]),
                              "vote.weights"),
    "weighted without weights": (lambda m: m["vote"].update(rule="weighted", weights=None), "vote.weights"),
    "mean a string": (lambda m: m["input_spec"].update(mean="abc"), "mean must be a list of numbers"),
    "fewer exits than the graphs": (_drop_last_exit, "beyond the manifest's 2 exit(s)"),
    "more exits than the graphs": (_add_exit, "has no output 'logits3'"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_a_manifest_that_disagrees_with_itself_or_its_graphs_is_one_line(bundle, clip, tmp_path, case):
    change, needle = MANIFEST_CASES[case]
    edit_manifest(bundle, change)
    one_line_error(edgekd(*run_args(bundle, clip), cwd=tmp_path), "manifest.json", needle)


@pytest.mark.parametrize("text, needle", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"schema_version": 1, "x": NaN}', "NaN is not a JSON number"),
    ('{"schema_version": 1, "x": 1e400}', "not a finite number"),
    ("\xff\xfe garbage", "not valid JSON"),
], ids=["deep", "nan", "1e400", "binary"])
def test_malformed_manifest_json_is_one_line(bundle, clip, tmp_path, text, needle):
    (bundle / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape") if text[0] != "\xff"
                                           else b"\xff\xfe garbage")
    one_line_error(edgekd(*run_args(bundle, clip), cwd=tmp_path), needle)


def test_infinite_vote_weights_never_reach_the_jsonl_as_nan(bundle, clip, tmp_path):
    edit_manifest(bundle, lambda m: m["vote"].update(rule="weighted", weights=[float("inf"), 1.0, 1.0]))
    log = tmp_path / "log.jsonl"
    one_line_error(edgekd(*run_args(bundle, clip, "--mode", "full-vote", "--jsonl", log), cwd=tmp_path),
                   "Infinity is not a JSON number")
    assert not log.exists()


# ---------------------------------------------------------------------------------------------- bad arrays


def _object_npz(path: Path, labelled: bool) -> None:
    arrays = {"images": np.array([np.zeros((16, 16, 1), np.uint8), None], dtype=object)}
    if labelled:
        arrays["labels"] = np.array([0, 1])
    np.savez(str(path), allow_pickle=True, **arrays)


def _corrupt_npz(path: Path, labelled: bool) -> None:
    """A compressed npz whose zip directory is intact but one member's deflate stream is damaged."""
    arrays = {"images": np.random.default_rng(0).integers(0, 255, (20, 16, 16, 1), dtype=np.uint8)}
    if labelled:
        arrays["labels"] = np.arange(20) % 10
    np.savez_compressed(str(path), **arrays)
    data = bytearray(path.read_bytes())
    for i in range(120, 400, 7):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make", [_object_npz, _corrupt_npz], ids=["object-array", "corrupt"])
def test_a_val_sample_with_a_matching_hash_but_bad_content_is_one_line(bundle, tmp_path, make):
    make(bundle / "val_sample.npz", labelled=True)
    rehash(bundle, "val_sample")
    one_line_error(edgekd("build", bundle, "--precision", "fp32", "--out", tmp_path / "out", cwd=tmp_path),
                   "val_sample.npz")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make", [_object_npz, _corrupt_npz], ids=["object-array", "corrupt"])
def test_bad_calib_data_is_one_line_naming_the_file(bundle, tmp_path, make):
    calib = tmp_path / "calib.npz"
    make(calib, labelled=False)
    r = edgekd("build", bundle, "--precision", "int8", "--out", tmp_path / "out", "--calib-data", calib,
               "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    one_line_error(r, str(calib))


def test_nan_pixels_in_calib_data_are_refused(bundle, tmp_path):
    x = np.random.default_rng(0).random((10, 16, 16, 1))
    x[3, 1, 2, 0] = np.nan
    np.savez(str(tmp_path / "nan.npz"), images=x)
    r = edgekd("build", bundle, "--precision", "int8", "--out", tmp_path / "out", "--calib-data",
               tmp_path / "nan.npz", cwd=tmp_path)
    one_line_error(r, "NaN or infinite", "image 3")


# ------------------------------------------------------------------------------------- usage and the noise


@pytest.mark.parametrize("args, needle", [
    (["build", "B", "--precision", "int9"], "'int9' is not one of"),
    (["build", "B", "--threads", "3"], "No such option: --threads"),
    (["run"], "Missing argument"),
    (["frobnicate"], "No such command"),
    (["run", "B", "--max-frames", "many"], "Invalid value for '--max-frames'"),
], ids=["choice", "option", "argument", "command", "type"])
def test_usage_errors_are_one_line_not_a_box(tmp_path, args, needle):
    one_line_error(edgekd(*args, cwd=tmp_path), needle, "--help")


def test_library_noise_only_under_verbose(bundle, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)  # FFmpeg says "moov atom not found" on its own
    one_line_error(edgekd("run", bundle, "--source", bad, "--headless", cwd=tmp_path), "cannot open video")
    r = edgekd("--verbose", "run", bundle, "--source", bad, "--headless", cwd=tmp_path)
    assert r.returncode == 2 and "moov atom not found" in r.stderr and "error: cannot open video" in r.stderr


# ------------------------------------------------------------------- one rule per option, for every command


@pytest.mark.parametrize("args, needle", [
    (["run", "{b}", "--source", "{clip}", "--headless", "--max-frames", "0"], "--max-frames must be an integer"),
    (["run", "{b}", "--source", "{clip}", "--headless", "--threads", "-3"], "--threads must be an integer"),
    (["profile", "{b}", "--threads", "-3"], "--threads must be an integer"),
    (["profile", "{b}", "--target-drop", "-1"], "--target-drop must be"),
    (["build", "{b}", "--target-drop", "-1", "--out", "{tmp}/o"], "--target-drop must be"),
    (["profile", "{b}", "--duration", "nan"], "--duration must be a number"),
    (["build", "{b}", "--precision", "fp32", "--max-drop", "nan", "--out", "{tmp}/o"], "--max-drop must be"),
    (["build", "{b}", "--precision", "fp32", "--dla-core", "0", "--out", "{tmp}/o"], "--dla-core runs on TensorRT"),
], ids=["run-max-frames-0", "run-threads", "profile-threads", "profile-target-drop", "build-target-drop",
        "profile-duration-nan", "build-max-drop-nan", "build-dla-core-on-ort"])
def test_bad_option_values_are_refused_alike_by_every_command(bundle, clip, tmp_path, args, needle):
    args = [a.format(b=bundle, clip=clip, tmp=tmp_path) for a in args]
    one_line_error(edgekd(*args, cwd=tmp_path), needle)
    assert not (tmp_path / "o").exists() and not (tmp_path / "profiles").exists()


# ---------------------------------------------------------------------- a live source that drops 20 times


class _Camera(http.server.BaseHTTPRequestHandler):
    """An MJPEG-over-HTTP camera (multipart/x-mixed-replace, as IP cameras serve) that hangs up after ten
    frames on every connection."""

    frames: list = []
    connections = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).connections += 1
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for jpg in self.frames:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                 + jpg + b"\r\n")
                self.wfile.flush()
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_a_live_source_that_drops_twenty_times_keeps_running_and_counts_the_reconnects(bundle, tmp_path):
    _Camera.frames = [cv2.imencode(".jpg", np.full((48, 64, 3), 20 * n, np.uint8))[1].tobytes() for n in range(10)]
    _Camera.connections = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/stream.mjpg" % server.server_address[1]
    log = tmp_path / "frames.jsonl"
    try:
        r = edgekd("run", bundle, "--source", url, "--headless", "--max-frames", "205", "--jsonl", log,
                   cwd=tmp_path, env={"COLUMNS": "200"})
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.strip() == ""  # FFmpeg's "Stream ends prematurely" stays quiet without --verbose
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 205  # 10 frames a connection: the run went on past at least 20 drops
    row = next(line for line in r.stdout.splitlines() if "reopened" in line)
    dropped, reopened, failed = (int(x) for x in row.split("│")[2].split("/"))
    assert reopened >= 20 and reopened == _Camera.connections - 1, (row, _Camera.connections)


# ------------------------------------------------------------------------------------------- the install (issue 21)
def test_without_opencv_a_command_says_which_extra_to_install(bundle, tmp_path):
    """OpenCV is the ``opencv`` extra (a Jetson uses JetPack's): when cv2 cannot be imported, one line names the fix."""
    code = ("import sys; sys.modules['cv2'] = None\n"  # import cv2 -> ModuleNotFoundError, as when it is not installed
            "from edgekd.cli import main\n"
            f"sys.argv = ['edgekd', 'run', {str(bundle)!r}, '--source', 'x.png', '--headless']\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    one_line_error(r, "OpenCV (cv2) is not installed", "pip install 'edgekd[opencv]'")


def test_pyproject_keeps_opencv_out_of_the_default_install_and_numpy_below_2_on_jetpack():
    import importlib

    for name in ("tomllib", "tomli"):  # by name: the device wing's tests also run on Python 3.8
        try:
            toml = importlib.import_module(name)
            break
        except ImportError:
            continue
    else:
        pytest.skip("no TOML reader here (tomllib is Python 3.11+; pip install tomli)")
    project = toml.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    assert not [d for d in deps if d.startswith("opencv")]  # on a Jetson it would hide JetPack's GStreamer cv2
    extras = project["optional-dependencies"]
    for extra in ("opencv", "train", "dev"):  # make run / make test (.[train,dev]) still get OpenCV
        assert any(d.startswith("opencv-python-headless") for d in extras[extra]), extra
    numpy = [d for d in deps if d.startswith("numpy")]
    assert "numpy>=1.23,<2; platform_machine == 'aarch64' and python_version < '3.12'" in numpy
    assert len(numpy) == 2 and any("platform_machine != 'aarch64'" in d for d in numpy)


def test_an_engine_cache_that_cannot_be_written_is_one_line(bundle, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = edgekd("build", bundle, "--backend", "onnxruntime", "--precision", "fp32", "--out", tmp_path / "out",
               "--engine-cache", blocker / "engines", cwd=tmp_path)
    one_line_error(r, "--engine-cache")
    assert not (tmp_path / "out").exists()

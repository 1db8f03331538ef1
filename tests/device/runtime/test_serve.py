"""``edgekd run --serve``: real sockets and a real HTTP client. The page, MJPEG frames decoded with OpenCV, /stats
and /metrics (parsed with prometheus_client's parser), the token, a bounded number of streams, a stalled client that
never reads and does not slow the frame loop, a port in use, and a whole run over a video file."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.errors import ConfigError, EdgekdError
from edgekd.device.runtime.serve import LiveServer, gstreamer_pipeline, is_network_output, parse_address
from tests.device.runtime.test_app import built, frames, video  # noqa: F401  (fixtures)


def _get(url: str, headers: dict | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _mjpeg_frames(url: str, count: int, timeout: float = 20.0) -> list[np.ndarray]:
    """Read ``count`` JPEG parts of a multipart stream and decode them."""
    out, buf = [], b""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        while len(out) < count:
            buf += r.read1(65536)
            while len(out) < count:  # one read can hold several frames
                start, end = buf.find(b"\xff\xd8"), buf.find(b"\xff\xd9")
                if start < 0 or end < start:
                    break
                out.append(cv2.imdecode(np.frombuffer(buf[start:end + 2], np.uint8), cv2.IMREAD_COLOR))
                buf = buf[end + 2:]
    return out


class _Feeder:
    """A stand-in frame loop: offers a fresh 320x240 frame and observes an exit as fast as it can."""

    def __init__(self, server: LiveServer):
        self.server, self.count, self.stop = server, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            image = np.full((240, 320, 3), self.count % 256, dtype=np.uint8)
            self.server.observe(self.count % 3, 1.5)
            if self.server.watching:
                self.server.offer(image)
            self.count += 1
            if self.count % 50 == 0:
                self.server.update({"fps": 100.0, "exit_histogram": [1, 2, 3], "source": {"dropped": 4},
                                    "certificate": {"epsilon": 0.5, "delta": 0.1, "n": 1000},
                                    "drift": {"flagged": False, "p_value": 0.5}})
            time.sleep(0.0005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_page_stream_stats_and_metrics():
    with LiveServer("127.0.0.1:0", 3, title="t") as server, _Feeder(server):
        status, page = _get(server.url)
        assert status == 200 and b"stream.mjpg" in page and b"stats" in page
        images = _mjpeg_frames(server.url + "stream.mjpg", 3)
        assert len(images) == 3 and all(img.shape == (240, 320, 3) for img in images)
        time.sleep(0.2)
        status, body = _get(server.url + "stats")
        stats = json.loads(body)
        assert status == 200 and stats["fps"] == 100.0 and stats["certificate"]["n"] == 1000
        status, body = _get(server.url + "metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        n_frames = families["edgekd_frames"].samples[0].value
        per_exit = {s.labels["exit"]: s.value for s in families["edgekd_exit_frames"].samples}
        assert n_frames > 0 and sum(per_exit.values()) == pytest.approx(n_frames, abs=3)  # the feeder keeps going
        buckets = [s for s in families["edgekd_latency_seconds"].samples if s.name.endswith("_bucket")]
        assert buckets[-1].labels["le"] == "+Inf"
        assert families["edgekd_certificate_epsilon"].samples[0].value == 0.5
        assert families["edgekd_drift"].samples[0].value == 0
        assert _get(server.url + "nothing")[0] == 404


def test_the_token_is_refused_and_accepted():
    with LiveServer("127.0.0.1:0", 3, token="s3cret") as server, _Feeder(server):
        assert _get(server.url + "stats")[0] == 401
        assert _get(server.url + "stats?token=wrong")[0] == 401
        assert _get(server.url + "stats?token=s3cret")[0] == 200
        assert _get(server.url + "metrics", {"Authorization": "Bearer s3cret"})[0] == 200
        status, page = _get(server.url + "?token=s3cret")
        assert status == 200 and b"stream.mjpg?token=s3cret" in page  # the page passes it on
        assert len(_mjpeg_frames(server.url + "stream.mjpg?token=s3cret", 1)) == 1
    assert LiveServer("0.0.0.0:0", 2).warning and LiveServer("127.0.0.1:0", 2).warning is None


def _stalled_client(server: LiveServer) -> socket.socket:
    """Asks for the stream and never reads a byte."""
    s = socket.create_connection((server.host, server.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def _offers_per_second(server: LiveServer, seconds: float = 1.0) -> float:
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)  # a hard-to-compress frame
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        server.observe(0, 1.0)
        server.offer(image.copy())
        n += 1
    return n / seconds


def test_a_stalled_client_does_not_slow_the_frame_loop_and_streams_are_bounded():
    with LiveServer("127.0.0.1:0", 1, max_clients=2) as server:
        alone = _offers_per_second(server)
        stalled = _stalled_client(server)
        time.sleep(0.5)
        assert server.watching
        with_stall = _offers_per_second(server)
        second = _stalled_client(server)
        time.sleep(0.3)
        status, body = _get(server.url + "stream.mjpg")  # a third stream: refused, not queued
        assert status == 503 and b"at most 2" in body
        stalled.close()
        second.close()
    assert with_stall > 0.5 * alone, (alone, with_stall)  # frames are lost for the client, not for the loop


def test_a_port_in_use_and_a_bad_address_are_one_line_errors():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(EdgekdError, match="port is in use"):
            LiveServer(f"127.0.0.1:{port}", 2).__enter__()
    for bad in ("abc", "1:2:99999", ":80", "-1"):
        with pytest.raises(ConfigError):
            parse_address(bad)
    assert parse_address("8080") == ("127.0.0.1", 8080) and parse_address("[::1]:81") == ("::1", 81)


def test_network_outputs_need_gstreamer_and_build_their_pipeline():
    assert is_network_output("rtsp://h:8554/cam") and is_network_output("rtp://10.0.0.2:5000")
    assert not is_network_output("out.mp4")
    assert "udpsink host=10.0.0.2 port=5000" in gstreamer_pipeline("rtp://10.0.0.2:5000")
    assert "rtspclientsink location=rtsp://h:8554/cam" in gstreamer_pipeline("rtsp://h:8554/cam")
    with pytest.raises(ConfigError):
        gstreamer_pipeline("rtp://nohost")


def test_a_whole_run_served_over_a_video_file(built, video, tmp_path):
    with socket.socket() as s:  # a free port, released just before the run takes it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    got = {}

    def client():
        deadline = time.time() + 60
        while time.time() < deadline and "frames" not in got:
            try:
                got["frames"] = _mjpeg_frames(url + "stream.mjpg", 2, timeout=10)
                time.sleep(1.2)  # the status is published about once a second
                got["stats"] = json.loads(_get(url + "stats")[1])
                got["metrics"] = _get(url + "metrics")[1].decode()
            except OSError:
                time.sleep(0.2)

    reader = threading.Thread(target=client, daemon=True)
    reader.start()
    result = CliRunner().invoke(app, ["run", str(built), "--source", str(video), "--loop", "--headless",
                                      "--max-frames", "4000", "--serve", f"127.0.0.1:{port}",
                                      "--jsonl", str(tmp_path / "log.jsonl")])
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert f"live view: {url}" in result.output
    assert len(got.get("frames", [])) == 2 and got["frames"][0].shape == (48, 64, 3)
    assert got["stats"]["frames"] > 0 and got["stats"]["prediction"]["exit"] in range(3)
    names = {f.name for f in text_string_to_metric_families(got["metrics"])}
    assert {"edgekd_frames", "edgekd_exit_frames", "edgekd_latency_seconds", "edgekd_dropped_frames"} <= names
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert "drift" in first


def test_run_on_a_port_in_use_is_one_line_and_exit_2(built, video):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["run", str(built), "--source", str(video), "--headless",
                                          "--serve", f"127.0.0.1:{port}"])
    assert result.exit_code == 2 and "port is in use" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["run", str(built), "--source", str(video), "--serve", "nope"])
    assert result.exit_code == 2 and "--serve takes" in result.output

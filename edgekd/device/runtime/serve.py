"""``edgekd run --serve [HOST:]PORT``: watch a headless device from a browser, and scrape it with Prometheus.

A small HTTP server (the standard library's, on threads) beside the frame loop:

* ``/``: a page with the live annotated stream and a panel (label, exit, confidence, FPS, latency, exit shares,
  the certificate and the drift check), refreshed from ``/stats``;
* ``/stream.mjpg``: the annotated frames as MJPEG (``multipart/x-mixed-replace``), which browsers and VLC play;
* ``/stats``: the panel's numbers as JSON; ``/metrics``: Prometheus' text format (exposition format 0.0.4).

The frame loop never waits for a client: it hands over a reference to its newest annotated frame (encoded to JPEG on
the server's own thread, only while someone watches) and its counters; each client thread sends the newest JPEG when
it can, so a slow client loses frames, not the camera, and a stalled one is dropped after :data:`SEND_TIMEOUT_S`.
At most ``max_clients`` streams at once. The server binds 127.0.0.1 unless a host is given; with a token
(``--serve-token`` or ``EDGEKD_SERVE_TOKEN``) every request must present it (``?token=…`` or ``Authorization:
Bearer …``), and serving any other host without one is allowed but said (:attr:`LiveServer.warning`).

Network video out (``--output rtsp://…`` / ``rtp://HOST:PORT``) goes through OpenCV's GStreamer backend: JetPack's
OpenCV has it, pip's has none (then one line says so).
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from edgekd.core.errors import ConfigError, EdgekdError

TOKEN_ENV = "EDGEKD_SERVE_TOKEN"
DEFAULT_HOST = "127.0.0.1"
MAX_CLIENTS = 4
SEND_TIMEOUT_S = 10.0
JPEG_QUALITY = 80
BOUNDARY = "edgekdframe"
#: Prometheus histogram buckets of the end-to-end latency, in seconds.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
NETWORK_SCHEMES = ("rtsp", "rtp")
GST_ENCODER_ENV = "EDGEKD_GST_ENCODER"  # e.g. "nvv4l2h264enc insert-sps-pps=true" on a Jetson
GST_ENCODER = "x264enc tune=zerolatency speed-preset=ultrafast bitrate=2000"


def parse_address(text: str) -> Tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); host defaults to 127.0.0.1."""
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) < 65536 or (sep and not host):
        raise ConfigError(f"--serve takes [HOST:]PORT with a port 0-65535 (0: any free port), got {text!r}")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


class _Counters:
    """What the loop reports per frame (under the server's lock): frames, per-exit counts, a latency histogram."""

    def __init__(self, n_exits: int) -> None:
        self.frames = 0
        self.exits = [0] * n_exits
        self.buckets = [0] * len(LATENCY_BUCKETS_S)
        self.latency_sum_s = 0.0

    def add(self, exit_index: int, e2e_ms: float) -> None:
        self.frames += 1
        self.exits[exit_index] += 1
        seconds = e2e_ms / 1e3
        self.latency_sum_s += seconds
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.buckets[i] += 1


def prometheus_text(counters: _Counters, status: Dict[str, Any]) -> str:
    """The metrics in Prometheus' text exposition format (counters, a histogram, gauges)."""
    out: List[str] = []

    def metric(name: str, kind: str, help_text: str, samples: List[Tuple[str, Any]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for suffix_labels, value in samples:
            out.append(f"{name}{suffix_labels} {float(value):.10g}")

    metric("edgekd_frames_total", "counter", "Frames classified.", [("", counters.frames)])
    metric("edgekd_exit_frames_total", "counter", "Frames answered at each exit.",
           [(f'{{exit="{i}"}}', n) for i, n in enumerate(counters.exits)])
    hist = [(f'_bucket{{le="{b:g}"}}', n) for b, n in zip(LATENCY_BUCKETS_S, counters.buckets)]
    hist += [('_bucket{le="+Inf"}', counters.frames), ("_sum", counters.latency_sum_s), ("_count", counters.frames)]
    metric("edgekd_latency_seconds", "histogram", "End-to-end latency per frame (pre, network, post).", hist)
    source = status.get("source") or {}
    metric("edgekd_dropped_frames_total", "counter", "Frames the live source dropped (newest frame kept).",
           [("", source.get("dropped", 0))])
    metric("edgekd_fps", "gauge", "Frames per second since the run started.", [("", status.get("fps", 0.0))])
    early = (1.0 - counters.exits[-1] / counters.frames) if counters.frames else 0.0
    metric("edgekd_early_exit_share", "gauge", "Share of frames answered before the last exit.", [("", early)])
    cert = status.get("certificate") or {}
    for key, help_text in (("epsilon", "Certified budget, points of top-1."), ("delta", "Certificate's delta."),
                           ("n", "Images the certificate rests on.")):
        if isinstance(cert.get(key), (int, float)):
            metric(f"edgekd_certificate_{key}", "gauge", help_text, [("", cert[key])])
    drift = status.get("drift") or {}
    if drift.get("flagged") is not None:
        metric("edgekd_drift", "gauge", "1 when the last window's exit shares moved beyond sampling.",
               [("", int(bool(drift["flagged"])))])
        metric("edgekd_drift_p_value", "gauge", "p-value of the last window's drift test.", [("", drift["p_value"])])
    return "\n".join(out) + "\n"


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>edgekd · {title}</title>
<style>body{{font-family:sans-serif;margin:1em;background:#111;color:#eee}}img{{max-width:70vw;float:left;
margin-right:1em}}td{{padding:2px 8px}}.warn{{color:#f84}}</style></head><body>
<img src="stream.mjpg{query}" alt="live stream"><table id="panel"></table>
<script>
const q = "{query}";
async function tick() {{
  try {{
    const s = await (await fetch("stats" + q)).json();
    const p = s.prediction || {{}};
    const rows = [["label", p.class_name], ["exit", p.exit], ["confidence", p.confidence],
      ["FPS", s.fps && s.fps.toFixed(1)], ["latency p50 / p99 ms", s.end_to_end_ms &&
      s.end_to_end_ms.p50.toFixed(2) + " / " + s.end_to_end_ms.p99.toFixed(2)],
      ["frames per exit", (s.exit_histogram || []).join(" / ")], ["thresholds", s.thresholds],
      ["drift", s.drift && (s.drift.message || (s.drift.flagged === null ? "window filling" : "none"))]];
    document.getElementById("panel").innerHTML = rows.map(r =>
      `<tr><td>${{r[0]}}</td><td class="${{r[0] == "drift" && s.drift && s.drift.flagged ? "warn" : ""}}">` +
      `${{r[1] === undefined || r[1] === null ? "-" : r[1]}}</td></tr>`).join("");
  }} catch (e) {{}}
}}
setInterval(tick, 1000); tick();
</script></body></html>
"""


class LiveServer:
    """The HTTP server of one run (a context manager). The frame loop calls :meth:`observe` per frame,
    :meth:`offer` with its annotated frame when :attr:`watching`, and :meth:`update` with the status about once a
    second."""

    def __init__(self, address: str, n_exits: int, *, token: Optional[str] = None, title: str = "run",
                 max_clients: int = MAX_CLIENTS) -> None:
        self.host, self.port = parse_address(address)
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.title, self.max_clients = title, max_clients
        self._lock = threading.Condition()
        self._counters = _Counters(n_exits)
        self._status: Dict[str, Any] = {}
        self._raw: Optional[np.ndarray] = None
        self._raw_seq = 0
        self._jpeg: Optional[bytes] = None
        self._jpeg_seq = 0
        self._clients = 0
        self._closing = False
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._threads: List[threading.Thread] = []

    # ------------------------------------------------------------------ the frame loop's side (never blocks)

    @property
    def watching(self) -> bool:
        """Someone is streaming: worth rendering and offering frames."""
        return self._clients > 0

    def observe(self, exit_index: int, e2e_ms: float) -> None:
        with self._lock:
            self._counters.add(exit_index, e2e_ms)

    def offer(self, image: np.ndarray) -> None:
        """Hand over the newest annotated frame (a reference; the loop makes a new array per frame)."""
        with self._lock:
            self._raw, self._raw_seq = image, self._raw_seq + 1
            self._lock.notify_all()

    def update(self, status: Dict[str, Any]) -> None:
        with self._lock:
            self._status = status

    # ------------------------------------------------------------------ lifecycle

    @property
    def warning(self) -> Optional[str]:
        """What to say when the stream is open to the network without a token."""
        if self.token is None and not _is_loopback(self.host):
            return (f"serving {self.host} without a token: anyone who reaches this port can watch the stream (give "
                    f"--serve-token or {TOKEN_ENV})")
        return None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> LiveServer:
        handler = type("Handler", (_Handler,), {"live": self, "timeout": SEND_TIMEOUT_S})
        server_class = type("Server", (ThreadingHTTPServer,), {"daemon_threads": True,
                                                                "address_family": _family(self.host)})
        try:
            self._httpd = server_class((self.host, self.port), handler)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise EdgekdError(f"cannot serve on {self.host}:{self.port}: {why}") from None
        self.port = self._httpd.server_address[1]
        for target in (self._httpd.serve_forever, self._encode_forever):
            thread = threading.Thread(target=target, name=f"edgekd-serve-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving (idempotent): streams end, threads join."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._lock.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # ------------------------------------------------------------------ the server's side

    def _encode_forever(self) -> None:
        seq = 0
        while True:
            with self._lock:
                while not self._closing and self._raw_seq == seq:
                    self._lock.wait()
                if self._closing:
                    return
                image, seq = self._raw, self._raw_seq
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                with self._lock:
                    self._jpeg, self._jpeg_seq = buf.tobytes(), seq
                    self._lock.notify_all()

    def _next_jpeg(self, after: int) -> Optional[Tuple[int, bytes]]:
        """The newest JPEG newer than ``after`` (waits up to a second), or None when closing or nothing new."""
        with self._lock:
            if not self._closing and self._jpeg_seq <= after:
                self._lock.wait(timeout=1.0)
            if self._closing or self._jpeg is None or self._jpeg_seq <= after:
                return None
            return self._jpeg_seq, self._jpeg

    def _snapshot(self) -> Tuple[_Counters, Dict[str, Any]]:
        with self._lock:
            c = _Counters(len(self._counters.exits))
            c.frames, c.exits = self._counters.frames, list(self._counters.exits)
            c.buckets = list(self._counters.buckets)
            c.latency_sum_s = self._counters.latency_sum_s
            return c, dict(self._status)


def _family(host: str) -> int:
    import socket

    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _Handler(BaseHTTPRequestHandler):
    live: LiveServer
    server_version = "edgekd"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  quiet: the run has its own status line
        pass

    def _allowed(self, query: Dict[str, List[str]]) -> bool:
        token = self.live.token
        if token is None:
            return True
        given = (query.get("token") or [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer "):]
        return hmac.compare_digest(given.encode(), token.encode())

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query):
            self._send(401, b"a token is needed: ?token=... or Authorization: Bearer ...\n", "text/plain")
            return
        passed = f"?token={query['token'][0]}" if query.get("token") else ""
        if url.path in ("/", "/index.html"):
            page = PAGE.format(title=self.live.title, query=passed)
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif url.path == "/stats":
            _, status = self.live._snapshot()
            self._send(200, json.dumps(status, default=str).encode(), "application/json")
        elif url.path == "/metrics":
            counters, status = self.live._snapshot()
            self._send(200, prometheus_text(counters, status).encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif url.path == "/stream.mjpg":
            self._stream()
        else:
            self._send(404, b"not found\n", "text/plain")

    def _stream(self) -> None:
        live = self.live
        with live._lock:
            if live._clients >= live.max_clients:
                busy = True
            else:
                busy, live._clients = False, live._clients + 1
        if busy:
            self._send(503, f"at most {live.max_clients} streams at once\n".encode(), "text/plain")
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seq = 0
            while not live._closing:
                got = live._next_jpeg(seq)
                if got is None:
                    continue
                seq, jpeg = got
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode() + jpeg + b"\r\n")
        except (OSError, ValueError):  # the client went away, stalled past the timeout, or the server closed
            pass
        finally:
            with live._lock:
                live._clients -= 1


# ---------------------------------------------------------------------------------------------- network video out


def is_network_output(target: Optional[str]) -> bool:
    return bool(target) and urlparse(str(target)).scheme in NETWORK_SCHEMES


def gstreamer_pipeline(url: str) -> str:
    """The GStreamer pipeline that sends BGR frames from OpenCV to ``rtp://HOST:PORT`` (H.264 over UDP) or pushes
    them to an RTSP server at ``rtsp://…`` (``rtspclientsink``). The encoder is ``EDGEKD_GST_ENCODER`` or x264."""
    parsed = urlparse(url)
    encoder = os.environ.get(GST_ENCODER_ENV) or GST_ENCODER
    head = f"appsrc ! videoconvert ! video/x-raw,format=I420 ! {encoder} ! h264parse ! "
    if parsed.scheme == "rtp":
        if not parsed.hostname or not parsed.port:
            raise ConfigError(f"--output {url}: rtp:// needs HOST:PORT")
        return head + (f"rtph264pay config-interval=1 pt=96 ! udpsink host={parsed.hostname} port={parsed.port} "
                       "sync=false")
    return head + f"rtspclientsink location={url}"


class NetworkVideoOutput:
    """Annotated frames to ``rtsp://`` or ``rtp://`` through OpenCV's GStreamer backend (opened on the first frame,
    at its size)."""

    def __init__(self, url: str, fps: float = 30.0) -> None:
        from edgekd.device.runtime.sources import has_gstreamer

        if not has_gstreamer():
            raise EdgekdError(f"--output {url} needs OpenCV built with GStreamer (JetPack's is); this OpenCV has "
                              "none (pip's opencv-python* wheels never do): write a file instead, or use --serve")
        self.url, self.fps = url, fps
        self.pipeline = gstreamer_pipeline(url)
        self._writer: Any = None

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(self.pipeline, cv2.CAP_GSTREAMER, 0, self.fps, (w, h), True)
            if not self._writer.isOpened():
                raise EdgekdError(f"cannot open --output {self.url}: GStreamer refused the pipeline "
                                  f"({self.pipeline}); see `edgekd --verbose run …`")
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

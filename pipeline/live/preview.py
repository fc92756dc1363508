"""The browser preview of `facezoom live --preview HOST:PORT`: a small HTTP server.

Routes:
- `/`: a page showing the stream, with fps, latency and drop figures refreshed twice a second;
- `/stream.mjpg`: the input and the processed frame side by side, as MJPEG
  (`multipart/x-mixed-replace`, which every browser shows in an `<img>`);
- `/frame.jpg`: the latest side-by-side frame as one JPEG;
- `/stats.json`: the latest figures (whatever dict the live loop published).

The live loop calls `publish` once per output frame; it only stores references, so the loop
never waits for a browser. Each JPEG is encoded once, on the first request that wants it, in
that request's thread, and every client gets only the newest frame: a slow browser skips
frames rather than queueing them. The standard library's threading HTTP server is enough for
a handful of viewers; it binds to 127.0.0.1 unless told otherwise, since it has no
authentication.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from pipeline.errors import UserError

log = logging.getLogger(__name__)

BOUNDARY = "facezoomframe"
MAX_HEIGHT = 480  # px: each half of the preview is shrunk to this height at most (a preview, not the recording)
JPEG_QUALITY = 80  # cv2's scale 0-100: sharp enough to judge faces, ~5x smaller than 95
CLIENT_TIMEOUT = 5.0  # s a send to a browser may block before that browser is dropped

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facezoom live</title>
<style>
body { background: #15171a; color: #e8e8e8; font: 15px system-ui, sans-serif; margin: 16px; }
#figures { font-variant-numeric: tabular-nums; margin: 8px 0; }
.view { display: inline-block; max-width: 100%; }
.halves { display: flex; }
.halves span { flex: 1; text-align: center; color: #9aa; }
img { display: block; max-width: 100%; background: #000; }
</style></head>
<body>
<h1 style="font-size: 18px">facezoom live</h1>
<div id="figures">waiting for the first frame…</div>
<div class="view">
<div class="halves"><span>input</span><span>processed</span></div>
<img id="video" src="stream.mjpg" alt="input and processed video, side by side">
</div>
<script>
const figures = document.getElementById("figures");
function ms(v) { return v === null || v === undefined ? "–" : Math.round(v) + " ms"; }
async function poll() {
  try {
    const s = await (await fetch("stats.json", {cache: "no-store"})).json();
    figures.textContent = `${s.fps ?? 0} fps · latency p50 ${ms(s.latency_ms_p50)} · p95 ${ms(s.latency_ms_p95)}` +
      ` · frames in ${s.frames_in ?? 0}, out ${s.frames_out ?? 0}, dropped ${s.frames_dropped ?? 0}` +
      (s.budget ? ` · ${s.budget}` : "");
  } catch (err) {
    figures.textContent = "the live run has stopped";
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body></html>
"""


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'PORT' -> (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    host = (host if sep else "") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"--preview expects [HOST:]PORT, e.g. --preview 8080 or --preview 127.0.0.1:8080; got {text!r}")
    return host.strip("[]"), int(port)


def side_by_side(left: np.ndarray, right: np.ndarray, *, max_height: int = MAX_HEIGHT) -> np.ndarray:
    """`[H, W, 3]` images next to each other at one height (the smaller of the right's and `max_height`)."""
    height = min(max_height, right.shape[0])
    halves = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height), interpolation=cv2.INTER_AREA)
              if im.shape[0] != height else im for im in (left, right)]
    return np.hstack(halves)


class PreviewServer:
    """Serve the preview on `host:port` until `close()`.

    server = PreviewServer("127.0.0.1", 8080)
    server.publish(input_image, output_image, {"fps": 29.9, ...})  # from the live loop
    server.close()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._cond = threading.Condition()
        self._images: tuple[np.ndarray, np.ndarray] | None = None
        self._stats: dict = {}
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._closing = threading.Event()
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as err:
            raise UserError(f"cannot serve the preview on {host}:{port}: {err.strerror}; choose another --preview address") from None
        self._server.daemon_threads = False  # so that close() waits for the request threads
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="facezoom-preview", daemon=True)
        self._thread.start()
        log.info("preview at %s", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def publish(self, input_image: np.ndarray, output_image: np.ndarray, stats: dict) -> None:
        """Offer a new frame pair (`[H, W, 3] uint8 RGB` each) and figures; returns at once."""
        with self._cond:
            self._images, self._stats = (input_image, output_image), dict(stats)
            self._seq += 1
            self._cond.notify_all()

    def stats(self) -> dict:
        with self._cond:
            return dict(self._stats)

    def jpeg(self, after: int = 0, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """The newest frame as JPEG once its number is above `after` (None if none came in `timeout`)."""
        with self._cond:
            if self._seq <= after and not self._closing.is_set():
                self._cond.wait_for(lambda: self._seq > after or self._closing.is_set(), timeout)
            if self._seq <= after or self._images is None:
                return None
            if self._jpeg is not None and self._jpeg[0] == self._seq:
                return self._jpeg
            seq, (left, right) = self._seq, self._images
        image = cv2.cvtColor(side_by_side(left, right), cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"cv2 could not encode a {image.shape} preview frame as JPEG")
        encoded = (seq, data.tobytes())
        with self._cond:
            if self._jpeg is None or self._jpeg[0] < seq:
                self._jpeg = encoded
        return encoded

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def close(self) -> None:
        """Stop serving; open streams end within about a second."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()  # joins the request threads
        self._thread.join()

    def __enter__(self) -> "PreviewServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _handler(preview: PreviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT
        protocol_version = "HTTP/1.0"  # one request per connection: the stream ends by closing it

        def do_GET(self):  # noqa: N802 (the http.server naming)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())
            elif path == "/stats.json":
                self._send(HTTPStatus.OK, "application/json", json.dumps(preview.stats()).encode())
            elif path == "/frame.jpg":
                latest = preview.jpeg(0, timeout=2.0)
                if latest is None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no frame yet\n")
                else:
                    self._send(HTTPStatus.OK, "image/jpeg", latest[1])
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found; try /\n")

        def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seq = 0
            try:
                while not preview.closing:
                    latest = preview.jpeg(seq, timeout=1.0)
                    if latest is None:
                        continue
                    seq, data = latest
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n"
                    )
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the browser went away or stopped reading: its stream ends

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            log.debug("preview %s: " + format, self.address_string(), *args)

    return Handler

"""The browser preview: its routes, that a browser never holds up the live loop, and, in headless
Chromium, that the page shows the live video and its figures."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from PIL import Image

from live_server import TSServer
from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.live.loop import run_live
from pipeline.live.spec import parse_source
from pipeline.live.preview import BOUNDARY, CLIENT_TIMEOUT, PreviewServer, parse_address, side_by_side


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def _frame(i: int, height: int = 120, width: int = 160) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, (i * 9) % width:(i * 9) % width + 20] = (250, 200, 0)  # a bar that moves
    return image


def test_addresses_default_to_localhost():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(UserError, match="HOST:]PORT"):
        parse_address("localhost")


def test_a_busy_port_is_a_clear_error():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(UserError, match="choose another --preview"):
            PreviewServer("127.0.0.1", taken.getsockname()[1])


def test_input_and_output_are_shown_side_by_side_at_one_height():
    out = side_by_side(np.zeros((120, 160, 3), np.uint8), np.full((240, 320, 3), 255, np.uint8))
    assert out.shape == (240, 320 + 320, 3)
    assert out[:, :320].max() == 0 and out[:, 320:].min() == 255


def test_page_stats_frame_and_mjpeg_stream():
    with PreviewServer("127.0.0.1", 0) as preview:
        assert _get(preview.url + "frame.jpg")[0] == 503  # nothing published yet
        preview.publish(_frame(0), _frame(0) // 2, {"fps": 29.5, "frames_out": 1})
        status, kind, page = _get(preview.url)
        assert status == 200 and kind.startswith("text/html")
        assert b"stream.mjpg" in page and b"stats.json" in page
        assert json.loads(_get(preview.url + "stats.json")[2]) == {"fps": 29.5, "frames_out": 1}
        status, kind, jpeg = _get(preview.url + "frame.jpg")
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert kind == "image/jpeg" and image.shape == (120, 320, 3)
        assert _get(preview.url + "nothing")[0] == 404

        stop = threading.Event()

        def feed():
            i = 1
            while not stop.is_set():
                preview.publish(_frame(i), _frame(i), {"frames_out": i})
                i += 1
                time.sleep(1 / 30)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            with urllib.request.urlopen(preview.url + "stream.mjpg", timeout=10) as stream:
                assert stream.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
                parts = []
                for _ in range(3):
                    assert stream.readline().strip() == f"--{BOUNDARY}".encode()
                    headers = dict(line.decode().strip().split(": ", 1) for line in iter(stream.readline, b"\r\n"))
                    assert headers["Content-Type"] == "image/jpeg"
                    parts.append(stream.read(int(headers["Content-Length"])))
                    stream.readline()
        finally:
            stop.set()
            feeder.join()
        decoded = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR).astype(int) for p in parts]
        assert np.abs(decoded[0] - decoded[-1]).mean() > 1  # a stream of new frames, not one frame again


def test_a_browser_that_stops_reading_never_holds_up_the_live_loop():
    frames = [_frame(i, 480, 640) for i in range(8)]  # made beforehand: only the publishing is timed
    with PreviewServer("127.0.0.1", 0) as preview:
        preview.publish(frames[0], frames[0], {})
        stalled = socket.create_connection((preview.host, preview.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")  # ...and never read a byte
        start = time.monotonic()
        for i in range(300):  # 10 s of frames at 30 fps, as fast as the loop can publish them
            preview.publish(frames[i % 8], frames[(i + 1) % 8], {"frames_out": i})
        # A publish that waited on the stalled browser would wait out its send time-out at least
        # once; 300 that only store references take milliseconds, even on a loaded machine.
        assert time.monotonic() - start < CLIENT_TIMEOUT
        # Another browser still gets the newest frame and figures at once.
        assert json.loads(_get(preview.url + "stats.json")[2]) == {"frames_out": 299}
        closing = time.monotonic()
    # close() waits for the stalled browser's send time-out at most (without one it would wait for ever)
    assert time.monotonic() - closing < CLIENT_TIMEOUT + 10
    stalled.close()


def _chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)


def _headless(browser: str, *args: str, profile: str) -> subprocess.CompletedProcess:
    """Chromium in a session of its own at normal priority (`chrt --other`), every process of it gone
    afterwards. Twice the suite's own process had a real-time policy (SCHED_FIFO 99, from outside:
    nothing here sets one); Chromium inherited it, and once its zygotes spun in the kernel for half
    an hour at that priority, starving the machine."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}"]
    normal = ["chrt", "--other", "0"] if shutil.which("chrt") else []  # (a preexec_fn can deadlock the forked child)
    proc = subprocess.Popen([*normal, browser, *flags, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        out, err = "", "timed out after 90 s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install -y chromium)")
def test_chromium_shows_the_live_video_changing_and_its_figures(tmp_path):
    browser = _chromium()
    cfg = load_config()
    stop = threading.Event()
    with TSServer() as server, PreviewServer("127.0.0.1", 0) as preview:
        result: dict = {}
        live = threading.Thread(target=lambda: result.update(run_live(parse_source(server.url), cfg=cfg, preview=preview, stop=stop, duration=120)))
        live.start()
        try:
            deadline = time.monotonic() + 60
            while preview.stats().get("frames_out", 0) < 10 and live.is_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert preview.stats().get("frames_out", 0) >= 10, "the live loop produced no frames"
            shots = []
            for k in range(2):
                with tempfile.TemporaryDirectory() as profile:
                    path = tmp_path / f"shot{k}.png"
                    done = _headless(browser, f"--screenshot={path}", "--window-size=1400,640", preview.url, profile=profile)
                    assert path.is_file(), done.stderr[-2000:]
                shots.append(np.asarray(Image.open(path).convert("RGB")).astype(int))
                time.sleep(1.0)
            with tempfile.TemporaryDirectory() as profile:
                dom = _headless(browser, "--dump-dom", "--virtual-time-budget=2000", preview.url, profile=profile).stdout
        finally:
            stop.set()
            live.join(30)
    assert not live.is_alive() and result["stopped"] == "interrupted"
    # The video sits below the title, figures and labels: 1280x480 (input | processed) from y ~ 95.
    video = [shot[120:560, 20:1290] for shot in shots]
    assert all(v.std() > 20 for v in video), "the preview shows a blank picture"
    assert np.abs(video[0] - video[1]).mean() > 1, "the preview's picture did not change between two screenshots"
    figures = re.search(r'<div id="figures">([^<]*)', dom).group(1)
    assert re.search(r"[\d.]+ fps · latency p50 \d+ ms · p95 \d+ ms", figures), figures

"""Live sources made in code, on 127.0.0.1, for the live tests and benchmarks/live.py.

`TSServer` is a camera on the network: every client that connects over TCP gets an MPEG-TS
stream (H.264, no B-frames, a keyframe every `gop` frames) of the built-in sample's virtual
camera (a real face, moving), encoded as it is sent at `fps` frames per second by the wall
clock. Timestamps come from the wall clock too, so a sender that runs late on a loaded machine
does not look like a receiver falling behind. `vanish()` drops every client and stops
listening, as a camera that is unplugged; `stall()` keeps the connections open but stops
sending, as a camera that hangs. With `audio="aac"` (or another codec MPEG-TS carries) it sends
sound too, timed by the same clock, made to check sync: in the first half of every second of the
stream's clock the picture is white and a 440 Hz tone plays; in the other half the picture is the
camera's and the sound is silent.

`UDPSender` sends the same stream as UDP datagrams for a few seconds, then goes quiet.
`SilentServer` accepts connections and never sends a byte.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from fractions import Fraction

import av
import numpy as np

from pipeline.media.sample import camera_frames

TS_CLOCK = Fraction(1, 90000)  # MPEG-TS timestamps run at 90 kHz
AUDIO_RATE = 48000
BEEP_HZ = 440.0


def beeping(seconds: float) -> bool:
    """Whether the test stream is white and beeping at `seconds` on its clock: the first half of every second."""
    return seconds % 1.0 < 0.5


class _SocketFile(io.RawIOBase):
    """A write-only file over a socket, for PyAV's muxer."""

    def __init__(self, conn: socket.socket):
        self.conn = conn

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.conn.sendall(data)
        return len(data)


class _Listener:
    """A TCP server on 127.0.0.1: an accept thread hands each connection to `_connected`."""

    def __init__(self, port: int = 0):
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._listen(port)

    def _listen(self, port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._accept = threading.Thread(target=self._accept_loop, name=type(self).__name__, daemon=True)
        self._accept.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return  # the listener was closed
            self._conns.append(conn)
            self._connected(conn)

    def _connected(self, conn: socket.socket) -> None:
        pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accept.join(5)
        for conn in self._conns:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TSServer(_Listener):
    def __init__(self, *, width: int = 640, height: int = 480, fps: int = 30, seconds: float = 60.0, gop: int = 15,
                 audio: str | None = None):
        self.width, self.height, self.fps, self.seconds, self.gop, self.audio = width, height, fps, seconds, gop, audio
        self._stall = threading.Event()
        self._threads: list[threading.Thread] = []
        self.frames_sent = 0
        super().__init__()

    def _connected(self, conn: socket.socket) -> None:
        thread = threading.Thread(target=self._send, args=(conn,), name="ts-client", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _send(self, conn: socket.socket) -> None:
        try:
            with av.open(_SocketFile(conn), "w", format="mpegts") as out:
                stream = out.add_stream("libx264", rate=self.fps)
                stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
                stream.time_base = stream.codec_context.time_base = TS_CLOCK
                stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(self.gop), "crf": "28"}
                sound = _Beeps(out, self.audio) if self.audio else None
                start = time.monotonic()
                frames = camera_frames(seconds=self.seconds, fps=self.fps, width=self.width, height=self.height)
                for i, image in enumerate(frames):
                    if self._stop.wait(max(0.0, start + i / self.fps - time.monotonic())):
                        return
                    while self._stall.is_set() and not self._stop.is_set():
                        time.sleep(0.05)
                    pts = round((time.monotonic() - start) / TS_CLOCK)
                    if sound is not None and beeping(float(pts * TS_CLOCK)):
                        image = np.full_like(image, 255)
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    frame.pts, frame.time_base = pts, TS_CLOCK
                    for packet in stream.encode(frame):
                        out.mux(packet)
                    if sound is not None:
                        sound.until(float(pts * TS_CLOCK) + 1 / self.fps)
                    self.frames_sent += 1
        except (OSError, av.error.FFmpegError):
            return  # the client went away, or vanish() closed the socket
        finally:
            conn.close()

    def stall(self) -> None:
        """Keep every connection open, send nothing more."""
        self._stall.set()

    def vanish(self) -> None:
        """Drop every client and stop listening."""
        self._stop.set()
        self._listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._join()

    def restart(self) -> None:
        """Listen again on the same port (after `vanish`), as a camera coming back."""
        self._stop.clear()
        self._listen(self.port)

    def _join(self) -> None:
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        self._threads, self._conns = [], []

    def close(self) -> None:
        self._stall.clear()
        super().close()
        self._join()


class _Beeps:
    """The test stream's sound: `BEEP_HZ` in the first half of each second, silence in the other (see `beeping`)."""

    def __init__(self, out, codec: str):
        self.out = out
        self.stream = out.add_stream(codec, rate=AUDIO_RATE, layout="mono")
        self.chunk = self.stream.codec_context.frame_size or 1024
        self.samples = 0  # sent so far: the next one is at samples / AUDIO_RATE on the stream's clock

    def until(self, seconds: float) -> None:
        """Send the sound up to `seconds` on the stream's clock, in whole codec frames."""
        while (self.samples + self.chunk) / AUDIO_RATE <= seconds:
            t = np.arange(self.samples, self.samples + self.chunk) / AUDIO_RATE
            wave = np.where(t % 1.0 < 0.5, 0.3 * np.sin(2 * np.pi * BEEP_HZ * t), 0.0).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, self.samples, Fraction(1, AUDIO_RATE)
            for packet in self.stream.encode(frame):
                self.out.mux(packet)
            self.samples += self.chunk


class UDPSender:
    """Sends the same MPEG-TS stream as `TSServer` as UDP datagrams to 127.0.0.1:`port`, for
    `seconds`, then stops (a camera that goes quiet: UDP has no connection to drop)."""

    def __init__(self, port: int, *, width: int = 320, height: int = 240, fps: int = 30, seconds: float = 3.0):
        self.url = f"udp://127.0.0.1:{port}"
        self.width, self.height, self.fps, self.seconds = width, height, fps, seconds
        self.frames_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="udp-sender", daemon=True)
        self._thread.start()

    def _send(self) -> None:
        with av.open(f"{self.url}?pkt_size=1316", "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            stream.time_base = stream.codec_context.time_base = TS_CLOCK
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "15", "crf": "28"}
            start = time.monotonic()
            for i, image in enumerate(camera_frames(seconds=self.seconds, fps=self.fps, width=self.width, height=self.height)):
                if self._stop.wait(max(0.0, start + i / self.fps - time.monotonic())):
                    return
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = round((time.monotonic() - start) / TS_CLOCK), TS_CLOCK
                for packet in stream.encode(frame):
                    out.mux(packet)
                self.frames_sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> "UDPSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SilentServer(_Listener):
    """Accepts TCP connections on 127.0.0.1 and never sends anything."""

    @property
    def accepted(self) -> int:
        return len(self._conns)

"""Synthetic media for the tests, made with PyAV: nothing is downloaded, nothing is committed."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """A smooth, frame-dependent test image `[height, width, 3] uint8` with an orientation marker.

    Smooth gradients survive lossy encoding well, so decoded pixels can be compared to these.
    The top-left quarter-corner is bright red, so a rotation shows.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / max(width, 1) * np.pi * 2 + index * 0.3)
    g = 128 + 100 * np.cos(y / max(height, 1) * np.pi * 2 - index * 0.2)
    b = 60 + 120 * (x + y) / (width + height)
    image = np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)
    image[: height // 4, : width // 4] = (230, 20, 20)
    return image


def make_video(
    path: str | Path,
    *,
    frames: int = 12,
    width: int = 96,
    height: int = 64,
    fps: int = 24,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: Sequence[str] = ("aac",),
    audio_seconds: float | None = None,
) -> Path:
    """Write a clip: `frames` video frames (at `pts`, else 1/fps apart) and one audio stream per codec."""
    path = Path(path)
    time_base = time_base or Fraction(1, fps)
    pts = list(pts) if pts is not None else list(range(frames))
    seconds = audio_seconds if audio_seconds is not None else float((pts[-1] + 1) * time_base)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if codec == "libx264":
            video.options = {"crf": "10", "preset": "ultrafast"}
        audio_streams = []
        for i, name in enumerate(audio):
            rate = 48000
            stream = out.add_stream(name, rate=rate, layout="stereo" if i == 0 else "mono")
            audio_streams.append(stream)
        for index, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(pattern(index, width, height), format="rgb24")
            frame.pts, frame.time_base = p, time_base
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        for i, stream in enumerate(audio_streams):
            _write_tone(out, stream, seconds, freq=330 + 110 * i)
    return path


def _write_tone(out, stream, seconds: float, *, freq: float) -> None:
    rate = stream.codec_context.sample_rate
    layout = stream.codec_context.layout
    chunk = stream.codec_context.frame_size or 1024
    total = int(seconds * rate)
    for start in range(0, total, chunk):
        t = np.arange(start, start + chunk) / rate
        wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        data = np.repeat(wave[None], layout.nb_channels, axis=0)  # [channels, samples]
        # PyAV converts to the encoder's sample format itself.
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout.name)
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def audio_packets(path: str | Path) -> list[list[bytes]]:
    """The bytes of every audio packet, per audio stream, in file order."""
    with av.open(str(path)) as container:
        streams = list(container.streams.audio)
        result: list[list[bytes]] = [[] for _ in streams]
        for packet in container.demux(streams):
            if packet.size:
                result[streams.index(packet.stream)].append(bytes(packet))
    return result


def video_frames(path: str | Path) -> tuple[list[float], list[np.ndarray]]:
    """Presentation times (seconds) and RGB images of every frame of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, images = [], []
        for frame in container.decode(stream):
            times.append(float(frame.pts * frame.time_base))
            images.append(frame.to_ndarray(format="rgb24"))
    return times, images


def set_mp4_rotation(path: str | Path, degrees_clockwise: int) -> None:
    """Write a display matrix into the first track of an mp4, as phones do instead of rotating pixels."""
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    times = 8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4
    offset = at + 4 + 4 + times + 8 + 8  # past version/flags, times, reserved, layer..volume
    one = 0x10000
    a, b, c, d = {90: (0, one, -one, 0), 180: (-one, 0, 0, -one), 270: (0, -one, one, 0)}[degrees_clockwise]
    data[offset : offset + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    Path(path).write_bytes(data)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def audio_only(path: str | Path) -> Path:
    """A short AAC file with no video stream."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    Path(path).write_bytes(data)
    return Path(path)


def tiny_stylegan2_checkpoint(path: str | Path) -> Path:
    """A tiny random StyleGAN2 (32 px) in the published layout: the PULSE backend's generator in tests."""
    import torch

    from models.generators import build, published_state
    from models.networks.stylegan2 import StyleGAN2Config

    with torch.random.fork_rng():
        torch.manual_seed(0)
        generator = build(StyleGAN2Config(resolution=32, w_dim=16, num_mlp=2, channels=(16, 16, 16, 16)))
    torch.save(published_state(generator), path)
    return Path(path)

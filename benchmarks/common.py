"""Shared bits of the benchmark scripts: clips made in code, a plain PyAV loop, tables, JSON."""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config.sections import VideoConfig  # noqa: E402
from pipeline.media.writer import VideoWriter
from pipeline.media.sample import _write_tone, astronaut  # noqa: E402


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--workdir", default="/tmp/facezoom-bench", help="where clips and outputs go")
    return p


def make_clip(path: Path, *, width: int, height: int, seconds: float, fps: int = 30, faces: int = 0) -> Path:
    """A clip with `faces` copies of the astronaut drifting over a textured background, with audio."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(40, 200, (height // 16, width // 16, 3), dtype=np.uint8), (width, height))
    photo = astronaut()[20:330, 100:380]  # head and shoulders
    sizes = [int(height * s) for s in np.linspace(0.18, 0.45, max(faces, 1))]
    audio = path.with_name(f".{path.stem}.audio.m4a")
    _write_tone(audio, seconds=seconds)
    n = round(seconds * fps)
    with VideoWriter(path, width=width, height=height, time_base=Fraction(1, fps), rate=Fraction(fps),
                     cfg=VideoConfig(preset="veryfast", crf=20), audio_from=audio) as out:
        for i in range(n):
            frame = background.copy()
            for k in range(faces):
                h = sizes[k]
                w = int(h * photo.shape[1] / photo.shape[0])
                x = int((width - w) * (0.1 + 0.8 * ((k + 0.5) / faces)) + 40 * math.sin(i / 20 + k))
                y = int((height - h) * 0.5 + 30 * math.cos(i / 25 + k))
                frame[y:y + h, x:x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
            out.write(frame, i)
    audio.unlink()
    return path


def stylegan2_checkpoint(folder: Path, *, channels: tuple[int, ...]) -> Path:
    """A StyleGAN2 in the published (BasicSR) layout at 32 px with these channel widths and random
    weights: a stand-in for the real 512 px generator that a CPU runs in seconds."""
    import torch

    from models.generators import build, published_state
    from models.networks.stylegan2 import StyleGAN2Config

    path = folder / f"stylegan2_32_{'-'.join(map(str, channels))}.pth"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        config = StyleGAN2Config(resolution=32, w_dim=64, num_mlp=2, channels=channels)
        torch.save(published_state(build(config)), path)
    return path


def plain_loop(src: Path, dst: Path, cfg: VideoConfig = VideoConfig()) -> float:
    """The baseline: decode to RGB arrays and encode them again with PyAV alone; returns seconds."""
    start = time.perf_counter()
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vout = out.add_stream(cfg.codec, rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, cfg.pix_fmt
        vout.time_base = vout.codec_context.time_base = vin.time_base
        vout.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        aout = {s.index: out.add_stream_from_template(s) for s in inp.streams.audio}
        for packet in inp.demux():
            if packet.stream.type == "audio" and packet.size:
                packet.stream = aout[packet.stream.index]
                out.mux(packet)
            elif packet.stream.type == "video":
                for frame in packet.decode():
                    rgb = frame.to_ndarray(format="rgb24")
                    new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    new.pts, new.time_base = frame.pts, frame.time_base
                    out.mux(vout.encode(new))
        out.mux(vout.encode(None))
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

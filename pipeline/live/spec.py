"""What a live SOURCE names: `parse_source` turns what a user typed into what `av.open` needs.

A webcam is FFmpeg's v4l2 input on Linux, avfoundation on macOS, dshow on Windows; a URL is
probed by FFmpeg; a file needs `--realtime`. Opening and reading it is `pipeline/live/source.py`.
An audio device for the recording (`--audio-input`) is mapped the same way by `parse_audio_input`:
ALSA on Linux, avfoundation on macOS, dshow on Windows (`pipeline/live/audio.py` reads it).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Literal

from pipeline.errors import InputError, UserError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp", "http", "https")  # http(s) covers HLS (.m3u8)


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """What `av.open` gets for a SOURCE argument."""

    label: str  # the SOURCE as the user typed it, for messages
    url: str  # the file, device or URL handed to FFmpeg
    kind: Literal["camera", "network", "file"]
    format: str | None = None  # FFmpeg input format (v4l2, avfoundation, dshow); None = probe
    options: dict[str, str] = dataclasses.field(default_factory=dict)  # FFmpeg demuxer/protocol options
    realtime: bool = False  # hand frames out at their timestamps' pace, not as fast as they decode


def parse_source(
    text: str,
    *,
    input_format: str | None = None,
    options: dict[str, str] | None = None,
    realtime: bool = False,
    platform: str = sys.platform,
) -> SourceSpec:
    """Map SOURCE to a `SourceSpec`.

    - `/dev/videoN`: a V4L2 webcam (Linux); `camera:N` (or a bare `N`): the platform's camera N
      (Linux /dev/videoN, macOS avfoundation device N; on Windows `camera:NAME`, dshow);
    - a URL whose scheme is one of `NETWORK_SCHEMES` (HLS is an http(s) URL of a .m3u8);
    - an existing file, which is played at its frame rate and so needs `realtime=True`.
    `input_format` (an FFmpeg input format) makes SOURCE a device or URL of that format as is.
    """
    opts = dict(options or {})
    if input_format:
        kind = "camera" if input_format in ("v4l2", "video4linux2", "avfoundation", "dshow") else "network"
        return SourceSpec(text, text, kind, input_format, opts, realtime or input_format == "hls")
    camera = re.fullmatch(r"(?:camera:)?(\d+)", text) or re.fullmatch(r"camera:(.+)", text)
    if text.startswith("/dev/video") or camera:
        return SourceSpec(text, *_camera(text, camera.group(1) if camera else None, platform), options=opts, realtime=realtime)
    scheme = text.split("://", 1)[0].lower() if "://" in text else None
    if scheme is not None:
        if scheme not in NETWORK_SCHEMES:
            raise UserError(f"unsupported stream scheme {scheme}:// in {text!r}; use one of {', '.join(s + '://' for s in NETWORK_SCHEMES)}")
        # HLS arrives a segment (seconds of frames) at a time: played at its timestamps, or the
        # newest-frame-wins reader would keep one frame per segment
        hls = urllib.parse.urlsplit(text).path.lower().endswith((".m3u8", ".m3u"))
        return SourceSpec(text, text, "network", None, opts, realtime or hls)
    path = Path(text)
    if not path.is_file():
        raise InputError(
            f"live source not found: {text!r}; give a webcam (/dev/video0, camera:0), a stream URL "
            "(rtsp://, udp://, tcp://, http://...) or an existing video file with --realtime"
        )
    if not realtime:
        raise UserError(
            f"{text} is a file, not a live source: add --realtime to play it at its frame rate as if it "
            "were live, or use `facezoom video` to process every frame"
        )
    return SourceSpec(text, str(path), "file", None, opts, True)


@dataclasses.dataclass(frozen=True)
class AudioInputSpec:
    """What `av.open` gets for an `--audio-input` device."""

    label: str  # as the user typed it, for messages
    url: str  # the device handed to FFmpeg
    format: str  # FFmpeg input format: alsa, avfoundation, dshow
    hint: str  # how to list this platform's devices, for the error when one does not open


def parse_audio_input(text: str, *, platform: str = sys.platform) -> AudioInputSpec:
    """Map an `--audio-input` DEVICE to the platform's audio capture input.

    - Linux, ALSA: a card number N is `plughw:N` (card N, converted to a rate and format FFmpeg
      takes); anything else is an ALSA device name as is: `default`, `hw:1,0`, `plughw:1`, or
      `pulse`/`pipewire` where those ALSA plugins route to the sound server;
    - macOS, avfoundation: N (or a device name) is the audio device `:N`, with no video;
    - Windows, dshow: the device's name, `audio=NAME`.
    """
    text = text.strip()
    if not text:
        raise UserError("--audio-input needs a device, e.g. default (Linux), 0 (macOS) or \"Microphone (USB Audio)\" (Windows)")
    if platform.startswith("linux"):
        hint = "list the cards with `arecord -l` and give a card number or an ALSA name (default, hw:1,0)"
        return AudioInputSpec(text, f"plughw:{text}" if text.isdigit() else text, "alsa", hint)
    if platform == "darwin":
        hint = "list the devices with `ffmpeg -f avfoundation -list_devices true -i \"\"`"
        return AudioInputSpec(text, f":{text}", "avfoundation", hint)
    if platform == "win32":
        hint = "list the devices with `ffmpeg -list_devices true -f dshow -i dummy`"
        if text.isdigit():
            raise UserError(f"on Windows name the audio device, e.g. --audio-input \"Microphone (USB Audio)\" ({hint})")
        return AudioInputSpec(text, f"audio={text}", "dshow", hint)
    raise UserError(f"no audio input is known for platform {platform!r}; record without --audio-input")


def _camera(text: str, device: str | None, platform: str) -> tuple[str, str, str]:
    """(url, kind, format) of a webcam on `platform`."""
    if platform.startswith("linux"):
        if device is not None and not device.isdigit():
            raise UserError(f"on Linux a camera is camera:N or /dev/videoN (list them with `v4l2-ctl --list-devices`), got {text!r}")
        return (text if device is None else f"/dev/video{device}"), "camera", "v4l2"
    if device is None:
        raise UserError(f"{text} is a Linux (V4L2) device; on this system name the camera as camera:0")
    if platform == "darwin":
        return f"{device}:none", "camera", "avfoundation"  # video device N, no audio
    if platform == "win32":
        if device.isdigit():
            raise UserError(
                "on Windows name the camera, e.g. camera:\"Integrated Camera\" (list them with "
                "`ffmpeg -list_devices true -f dshow -i dummy`)"
            )
        return f"video={device}", "camera", "dshow"
    raise UserError(f"no camera input is known for platform {platform!r}; pass --input-format FORMAT with the device FFmpeg expects")

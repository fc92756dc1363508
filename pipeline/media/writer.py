"""`VideoWriter`: encode frames, each at the pts it came with, audio copied untouched.

It encodes with the configured codec (variable frame rate survives) and copies every audio
stream of the input packet for packet, bytes untouched, interleaved by time as the video is
written. It writes to a temporary file beside the output and renames it only when the file is
complete (`pipeline/media/files.py`'s `AtomicWriter`): on an error or Ctrl-C nothing is left
at the output path. It streams: memory does not depend on the length of the video.

A live recording hands it audio packets itself (`audio_like`, `write_audio`): those are copied
where the container holds their codec and encoded to AAC (Opus in WebM) where it does not.
`AudioTrack` makes every audio stream of an output, copied or encoded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.config.sections import CODECS, WEBM_CODECS, VideoConfig
from pipeline.errors import UserError
from pipeline.media.files import AtomicWriter, format_for, no_room_reason, room_to_write, temp_path_beside
from pipeline.media.reader import error_reason, main_video_stream, open_input

log = logging.getLogger(__name__)


class VideoWriter(AtomicWriter):
    """Encode frames to `path`, copying the audio of `audio_from` untouched.

    with VideoWriter("out.mp4", width=w, height=h, time_base=tb, rate=r, cfg=cfg, audio_from="in.mp4") as out:
        out.write(image, pts)  # image [h, w, 3] uint8 RGB, pts in `time_base` units, increasing
    # the file appears at out.mp4 only here, complete

    Leaving the block through an exception removes the partial file instead. With `audio_like`
    (an input's audio stream) instead of `audio_from`, the file gets one audio stream made like
    it, and the caller writes its packets with `write_audio`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        time_base: Fraction,
        rate: Fraction | None,
        cfg: VideoConfig = VideoConfig(),
        audio_from: str | Path | None = None,
        audio_like: av.AudioStream | None = None,
        low_latency: bool = False,
        partial: Path | None = None,
    ):
        self.path = Path(path)
        self.width, self.height = width, height
        self.low_latency = low_latency  # no B-frames: each frame is written as it comes (live recording)
        self.time_base = Fraction(time_base)
        self.frames_written = 0
        check_encoder(cfg, self.path)
        self._pad = _padding(width, height, cfg.pix_fmt)
        if self._pad != (0, 0):
            log.info("padding %dx%d frames by %s px to an even size for %s", width, height, self._pad, cfg.pix_fmt)
        self._tmp = partial or temp_path_beside(self.path)  # `partial`: made by the caller with `temp_path_beside`
        self._closed = False
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets = None  # audio_from's packets, read as the video is written
        self.audio_tracks: list[AudioTrack] = []
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its settings to stderr otherwise
        try:
            try:
                self._out = av.open(str(self._tmp), mode="w", format=format_for(self.path))
            except ValueError as err:  # PyAV: "Could not determine output format"
                raise UserError(f"cannot write {self.path} ({err}); name it .mp4, .mkv, .mov or .webm") from None
            self._video = self._add_video_stream(cfg, rate)
            self._add_audio_streams(audio_from)
            if audio_like is not None:
                self.audio_tracks.append(AudioTrack(self._out, audio_like, path=self.path, transcode=True))
            self._out.start_encoding()
        except av.error.FFmpegError as err:
            codec = self._video_codec(cfg)
            room = isinstance(err, OSError) and no_room_reason(err)
            audio = [] if room else self._refused_audio(self._out.format.name)  # before _discard closes the input
            self._discard()
            if room:  # the header did not fit
                raise UserError(f"cannot write {self.path}: {no_room_reason(err)}") from None
            kind = self.path.suffix or "these"
            if audio:  # the muxer refuses at its header: an audio codec copied as it is, or the video's
                raise UserError(f"cannot write {self.path}: {kind} files refuse the input's {', '.join(audio)} audio, which "
                                f"facezoom copies untouched ({error_reason(err)}); write .mkv, which holds any audio codec") from None
            raise UserError(f"cannot write {self.path}: {kind} files refuse {codec} video ({error_reason(err)}); "
                            "write .mkv or .mp4, which hold every video.codec, or choose another video.codec") from None
        except BaseException:
            self._discard()
            raise

    @contextlib.contextmanager
    def _muxing(self) -> Iterator[None]:
        """`room_to_write`, and any other packet the muxer refuses as one line: copied audio packets go
        in as they are, and a damaged input's can be refused (FFmpeg's "Invalid argument")."""
        with room_to_write(self.path):
            try:
                yield
            except av.error.FFmpegError as err:
                if isinstance(err, OSError) and no_room_reason(err):
                    raise
                raise UserError(f"could not write {self.path}: the muxer refused a packet ({error_reason(err)}); "
                                "a damaged input's audio fails this way (facezoom copies it as it is)") from None

    def _refused_audio(self, fmt: str) -> list[str]:
        """The codecs of the copied audio tracks that a `fmt` file refuses at its header."""
        return sorted({t.source_codec for t in self.audio_tracks if t.copied and not _holds(fmt, t.template, self.path)})

    def _video_codec(self, cfg: VideoConfig) -> str:
        return encoder_for(cfg, self.path)

    def _add_video_stream(self, cfg: VideoConfig, rate: Fraction | None) -> av.VideoStream:
        codec = self._video_codec(cfg)
        if codec != cfg.codec:
            log.info("WebM holds VP9 or AV1 video only: encoding %s with %s (video.codec=%s is for the other containers)",
                     self.path.name, codec, cfg.codec)
            cfg = dataclasses.replace(cfg, codec=codec)
        try:
            stream = self._out.add_stream(cfg.codec, rate=rate or None)
        except ValueError as err:  # PyAV: "'mov' format does not support 'libvpx-vp9' codec"
            raise UserError(f"cannot write {self.path} with codec {cfg.codec} ({err})") from None
        stream.width = self.width + self._pad[0]
        stream.height = self.height + self._pad[1]
        stream.pix_fmt = cfg.pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        names = CODECS[cfg.codec]
        options = {}
        if names["crf"]:
            options[names["crf"]] = str(cfg.crf)
        preset = cfg.encoder_preset(cfg.codec)
        if preset is not None:
            options[names["preset"]] = preset
        if cfg.codec == "libx265":
            options["x265-params"] = "log-level=error"  # x265 prints a banner per file otherwise
        if cfg.codec == "libvpx-vp9":
            options.update({"b": "0", "row-mt": "1"})  # constant quality mode, multithreaded rows
        if cfg.codec == "mpeg4":
            options["qscale"] = str(max(1, min(31, cfg.crf // 2)))
        if self.low_latency:
            options["bf"] = "0"
        stream.options = options
        return stream

    def _add_audio_streams(self, audio_from: str | Path | None) -> None:
        """One copied audio stream per audio stream of the file `audio_from`."""
        if audio_from is None:
            return
        self._audio_in = open_input(audio_from)
        main = main_video_stream(self._audio_in)
        others = [s for s in self._audio_in.streams if not _copyable_audio(s) and s is not main]  # a cover picture, subtitles, data
        if others:
            def kind(s) -> str:
                what = "cover picture" if s.disposition & av.stream.Disposition.attached_pic else s.type
                return f"{what} ({s.codec_context.name if s.codec_context else 'a codec FFmpeg does not know'})"

            kinds = ", ".join(sorted({kind(s) for s in others}))
            log.warning("%s: %d stream(s) besides the video and its audio are not copied: %s", audio_from, len(others), kinds)
        streams = [s for s in self._audio_in.streams.audio if _copyable_audio(s)]
        if not streams:
            self._audio_in.close()
            self._audio_in = None
            return
        self._audio_map = {}
        for in_stream in streams:
            self._audio_map[in_stream.index] = track = AudioTrack(self._out, in_stream, path=self.path, transcode=False)
            self.audio_tracks.append(track)
        self._audio_packets = self._audio_in.demux(streams)
        self._pending = None  # the next audio packet, read but not yet muxed

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one `[height, width, 3] uint8 RGB` frame shown at `pts` (in `time_base` units)."""
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"frames must be [{self.height}, {self.width}, 3] uint8, got {list(image.shape)} {image.dtype}"
            )
        if self._pad != (0, 0):
            image = np.pad(image, ((0, self._pad[1]), (0, self._pad[0]), (0, 0)), mode="edge")
        frame = _rgb_frame(image)
        frame.pts = pts
        frame.time_base = self.time_base
        with self._muxing():
            self._mux_audio_until(float(pts * self.time_base))
            for packet in self._video.encode(frame):
                self._out.mux(packet)
        self.frames_written += 1

    def write_audio(self, packet: av.Packet) -> None:
        """Write a packet of the `audio_like` stream's kind, its pts, dts and time_base already on this file's clock."""
        with self._muxing():
            self.audio_tracks[0].mux(packet)

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Mux the audio packets of `audio_from` that start before `seconds` (all of them when None)."""
        if self._audio_packets is None:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._audio_packets, None)
                if self._pending is None:
                    self._audio_packets = None  # all copied
                    return
            packet = self._pending
            if packet.dts is None and packet.size == 0:  # the demuxer's end-of-stream marker
                self._pending = None
                continue
            when = packet.dts if packet.dts is not None else packet.pts
            if seconds is not None and when is not None and float(when * packet.time_base) > seconds:
                return
            self._audio_map[packet.stream.index].mux(packet)
            self._pending = None

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio and move the file into place."""
        if self._closed:
            return
        with self._muxing():
            for packet in self._video.encode(None):
                self._out.mux(packet)
            self._mux_audio_until(None)
            for track in self.audio_tracks:
                track.flush()
            try:
                self._out.close()  # writes the trailer: a muxer may refuse the file only now
            except av.error.FFmpegError as err:
                if isinstance(err, OSError) and no_room_reason(err):
                    raise  # said as a full disk
                self._discard()
                other = "another container, e.g. .mkv" if self.path.suffix.lower() != ".mkv" else "another container"
                raise UserError(f"could not finish {self.path} ({error_reason(err)}); try {other}") from None
        if self._audio_in is not None:
            self._audio_in.close()
        self._closed = True
        os.replace(self._tmp, self.path)

    def _discard(self) -> None:
        """Drop the partial file; nothing appears at the output path."""
        self._closed = True
        for container in (getattr(self, "_out", None), self._audio_in):
            if container is not None:
                try:
                    container.close()
                except (av.error.FFmpegError, ValueError, OSError):
                    pass  # closing a half-written file may fail; it is deleted next
        self._tmp.unlink(missing_ok=True)


class AudioTrack:
    """One audio stream of an output, made like the input stream `template`, and the writing of its packets.

    Packets are copied untouched where the container holds the codec. Where it does not,
    `transcode=True` (a live recording, whatever its source sends) decodes them and encodes AAC,
    or Opus in WebM, which holds no AAC; `transcode=False` (a video file's audio, which facezoom
    never re-encodes) makes it a `UserError` that names a container that would. With
    `transcode=True`, PCM is encoded for .mp4 and .mov too: their PCM tracks have no timestamps,
    only a count of samples, so a gap in a live source's sound would shift all that follows it.
    """

    def __init__(self, out: av.container.OutputContainer, template: av.AudioStream, *, path: Path, transcode: bool):
        self._out = out
        self._decoder: av.AudioCodecContext | None = None
        self.template = template
        self.source_codec = _codec_name(template)
        self.packets = 0  # packets handed to `mux`
        try:
            if transcode and template.codec_context.name.startswith("pcm_") and out.format.name in ("mp4", "mov"):
                raise ValueError("PCM in mp4/mov is laid end to end")
            self.stream = out.add_stream_from_template(template)
        except ValueError:  # PyAV: "'webm' format does not support 'aac' codec"
            if not transcode:
                raise UserError(
                    f"{path.suffix or 'this output'} files cannot hold the input's {self.source_codec} audio, which "
                    "facezoom copies untouched; write .mkv (it holds any codec) or .mp4/.mov instead"
                ) from None
            self.stream = self._add_encoder(template)
            log.info("%s files cannot hold %s audio: encoding it to %s", path.suffix, self.source_codec, self.codec)
        else:
            layout = template.codec_context.layout
            if layout.name.endswith("channels") and layout.channels:  # "2 channels": no speaker order (mkv, avi), which mp4/mov refuse
                self.stream.codec_context.layout = av.AudioLayout(f"{len(layout.channels)}c")  # FFmpeg's default order for that count

    @property
    def copied(self) -> bool:
        return self._decoder is None

    @property
    def codec(self) -> str:
        """The codec written: the input's when copied."""
        return self.source_codec if self.copied else _codec_name(self.stream)

    def _add_encoder(self, template: av.AudioStream) -> av.AudioStream:
        ctx = template.codec_context
        name = "libopus" if self._out.format.name == "webm" else "aac"
        rate = ctx.sample_rate if ctx.sample_rate in av.codec.Codec(name, "w").audio_rates else 48000
        stream = self._out.add_stream(name, rate=rate, layout="mono" if len(ctx.layout.channels) == 1 else "stereo")
        self._decoder = av.CodecContext.create(ctx.name, "r")
        self._decoder.sample_rate, self._decoder.layout = ctx.sample_rate, ctx.layout
        if ctx.extradata:
            self._decoder.extradata = ctx.extradata
        return stream

    def mux(self, packet: av.Packet) -> None:
        """Write one packet of the template's kind, its pts, dts and time_base on the output's clock."""
        self.packets += 1
        if self._decoder is None:
            packet.stream = self.stream
            self._out.mux(packet)
            return
        try:
            frames = self._decoder.decode(packet)
        except av.error.InvalidDataError:  # a damaged packet: its moment of sound is lost, the rest goes on
            return
        for frame in frames:
            self._out.mux(self.stream.encode(frame))

    def flush(self) -> None:
        """Drain the decoder and encoder of a transcoded track (nothing to do for a copied one)."""
        if self._decoder is None:
            return
        for frame in self._decoder.decode(None):
            self._out.mux(self.stream.encode(frame))
        self._out.mux(self.stream.encode(None))


def encoder_for(cfg: VideoConfig, path: Path) -> str:
    """The encoder an output is written with: `cfg.codec`, or VP9 where WebM cannot hold that."""
    return "libvpx-vp9" if format_for(path) == "webm" and cfg.codec not in WEBM_CODECS else cfg.codec


def check_encoder(cfg: VideoConfig, path: Path) -> None:
    """A `UserError` for a pixel format the output's encoder does not take (SVT-AV1 and mpeg4: 4:2:0
    only), before any file is made; the encoder refused it once opened, and the message blamed the container."""
    codec = encoder_for(cfg, path)
    if cfg.pix_fmt != "yuv420p" and codec in ("libsvtav1", "mpeg4"):
        raise UserError(f"video.pix_fmt={cfg.pix_fmt}: {codec} encodes yuv420p only; libx264, libx265 and "
                        "libvpx-vp9 also take yuv422p and yuv444p")


def check_audio_fits(source: str | Path, output: Path) -> None:
    """Before a run: a `UserError` where a file named `output` cannot hold `source`'s audio as it is
    copied (the muxer would refuse it at the output's header, once the models had loaded). An input
    that cannot be read is left for the run to report."""
    try:
        with open_input(source) as src:
            refused = sorted({_codec_name(s) for s in src.streams.audio if _copyable_audio(s) and not _holds(format_for(output), s, output)})
    except (av.error.FFmpegError, UserError):
        return
    if refused:
        raise UserError(f"cannot write {output}: {output.suffix} files refuse the input's {', '.join(refused)} audio, which "
                        "facezoom copies untouched; write .mkv, which holds any audio codec")


def _holds(fmt: str, template: av.AudioStream, path: Path) -> bool:
    """Whether a `fmt` file takes a copy of the audio stream `template`: tried alone in memory (a
    copied stream opens no encoder)."""
    probe = av.open(io.BytesIO(), mode="w", format=fmt)
    try:
        AudioTrack(probe, template, path=path, transcode=False)
        probe.start_encoding()
        return True
    except (av.error.FFmpegError, UserError):
        return False
    finally:
        probe.close()


def _copyable_audio(stream) -> bool:
    """An audio stream whose codec FFmpeg knows: one it does not is left out (named in the warning)."""
    return stream.type == "audio" and stream.codec_context is not None


def _codec_name(stream) -> str:
    """A stream's codec as people name it (mp3, not FFmpeg's decoder name mp3float)."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or stream.codec_context.name


def _rgb_frame(image: np.ndarray) -> av.VideoFrame:
    """`image` copied once into a frame of FFmpeg's own (aligned) memory, as `VideoFrame.from_ndarray`
    makes it, which copies twice (through a bytes object: 2 of 9 ms a 1080p frame, with the
    conversion to the encoder's format). Not the array itself (`from_numpy_buffer`, no copy, 2 ms
    less): FFmpeg's converters expect the alignment and padding of FFmpeg's own buffers, which a
    NumPy array does not promise."""
    height, width = image.shape[:2]
    frame = av.VideoFrame(width, height, "rgb24")
    plane = frame.planes[0]
    np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[:, : width * 3] = image.reshape(height, width * 3)
    return frame


def _padding(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """Pixels to add on the right and bottom so chroma subsampling gets even sizes."""
    if pix_fmt == "yuv420p":
        return width % 2, height % 2
    if pix_fmt == "yuv422p":
        return width % 2, 0
    return 0, 0

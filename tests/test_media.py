"""Video I/O loses nothing: frames, timestamps, audio bytes, orientation; and never leaves half a file."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.errors import InputError, UserError
from pipeline.config.sections import VideoConfig
from pipeline.media.reader import VideoReader
from pipeline.media.writer import VideoWriter
from synth import audio_only, audio_packets, make_video, pattern, psnr, set_mp4_rotation, video_frames, write_bytes


def copy_through(src, dst, cfg=VideoConfig(), transform=None):
    """Decode `src` and encode it to `dst` with facezoom's reader and writer."""
    with VideoReader(src) as reader, VideoWriter(
        dst, width=reader.width, height=reader.height, time_base=reader.time_base,
        rate=reader.rate, cfg=cfg, audio_from=src,
    ) as writer:
        for frame in reader:
            writer.write(transform(frame) if transform else frame.image, frame.pts)
    return dst


def test_reader_yields_rgb_frames_with_pts(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=10, width=96, height=64)
    with VideoReader(src) as reader:
        frames = list(reader)
    assert [f.index for f in frames] == list(range(10))
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.seconds for f in frames] == pytest.approx([i / 24 for i in range(10)], abs=1e-3)
    assert psnr(frames[3].image, pattern(3, 96, 64)) > 35


def test_constant_rate_round_trip_keeps_frames_times_audio_and_pixels(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=30, audio=("aac",))
    out = copy_through(src, tmp_path / "out.mp4")
    times_in, images_in = video_frames(src)
    times_out, images_out = video_frames(out)
    assert len(times_out) == len(times_in) == 30
    assert times_out == pytest.approx(times_in, abs=1e-4)
    assert audio_packets(out) == audio_packets(src)
    assert min(psnr(a, b) for a, b in zip(images_in, images_out)) > 35


def test_variable_frame_rate_survives(tmp_path):
    pts = [0, 40, 80, 200, 240, 500, 520, 540, 900, 1000]  # ms: pauses and bursts
    src = make_video(tmp_path / "vfr.mkv", pts=pts, time_base=Fraction(1, 1000), audio=())
    out = copy_through(src, tmp_path / "out.mp4")
    times_out, _ = video_frames(out)
    assert times_out == pytest.approx([p / 1000 for p in pts], abs=1e-4)


def test_several_audio_streams_are_copied_byte_for_byte(tmp_path):
    src = make_video(tmp_path / "two.mov", frames=24, audio=("aac", "aac"))
    out = copy_through(src, tmp_path / "out.mkv")
    packets_in, packets_out = audio_packets(src), audio_packets(out)
    assert len(packets_out) == 2
    assert packets_out == packets_in


def test_audio_stays_in_sync_with_video(tmp_path):
    """Audio packets are muxed near the video frames of the same time, not all at the end."""
    src = make_video(tmp_path / "in.mp4", frames=48, audio=("aac",))
    out = copy_through(src, tmp_path / "out.mp4")
    with av.open(str(out)) as container:
        order = [(p.stream.type, float(p.dts * p.time_base)) for p in container.demux() if p.dts is not None]
    first_audio = next(i for i, (kind, _) in enumerate(order) if kind == "audio")
    assert first_audio < len(order) // 2
    with av.open(str(out)) as a, av.open(str(src)) as b:
        assert a.streams.audio[0].duration * a.streams.audio[0].time_base == pytest.approx(
            b.streams.audio[0].duration * b.streams.audio[0].time_base, abs=1e-3
        )


def test_no_audio_input_gives_no_audio_output(tmp_path):
    src = make_video(tmp_path / "silent.mp4", frames=8, audio=())
    out = copy_through(src, tmp_path / "out.mp4")
    with av.open(str(out)) as container:
        assert not container.streams.audio
        assert container.streams.video[0].frames == 8


@pytest.mark.parametrize("width,height", [(95, 63), (33, 48), (64, 21)])
def test_odd_sizes_are_padded_to_even_and_keep_their_pixels(tmp_path, width, height):
    src = make_video(tmp_path / "odd.mkv", frames=4, width=width, height=height, pix_fmt="yuv444p", audio=())
    out = copy_through(src, tmp_path / "out.mp4")
    _, images = video_frames(out)
    assert len(images) == 4
    assert images[0].shape == (height + height % 2, width + width % 2, 3)
    assert psnr(images[0][:height, :width], pattern(0, width, height)) > 27  # 4:2:0 on a tiny frame


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied_to_the_pixels(tmp_path, degrees):
    src = make_video(tmp_path / "phone.mp4", frames=3, width=96, height=64, audio=())
    set_mp4_rotation(src, degrees)
    with VideoReader(src) as reader:
        frame = next(iter(reader)).image
    expected = np.rot90(pattern(0, 96, 64), k=-degrees // 90)  # clockwise by `degrees`
    assert frame.shape == expected.shape
    assert psnr(frame, expected) > 30
    out = copy_through(src, tmp_path / "upright.mp4")
    _, images = video_frames(out)
    assert images[0].shape == expected.shape  # written upright, no rotation left to apply
    assert psnr(images[0], expected) > 30


@pytest.mark.parametrize(
    "name,codec,audio",
    [
        ("h264.mp4", "libx264", "aac"),
        ("hevc.mkv", "libx265", "aac"),
        ("vp9.webm", "libvpx-vp9", "libopus"),
        ("av1.mkv", "libsvtav1", "libopus"),
        ("mpeg4.avi", "mpeg4", "libmp3lame"),
        ("h264.mov", "libx264", "aac"),
    ],
)
def test_decodes_common_containers_and_codecs(tmp_path, name, codec, audio):
    src = make_video(tmp_path / name, frames=12, codec=codec, audio=(audio,))
    out = copy_through(src, tmp_path / "out.mkv")
    times, images = video_frames(out)
    assert len(times) == 12
    assert psnr(images[5], pattern(5, 96, 64)) > 25
    assert audio_packets(out) == audio_packets(src)


@pytest.mark.parametrize("codec,suffix", [("hevc", ".mp4"), ("vp9", ".webm"), ("av1", ".mkv")])
def test_encodes_with_other_codecs(tmp_path, codec, suffix):
    src = make_video(tmp_path / "in.mkv", frames=10, audio=())
    out = copy_through(src, tmp_path / f"out{suffix}", cfg=VideoConfig(codec=codec, crf=20, preset="fast"))
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in {"hevc": ("hevc",), "vp9": ("vp9", "libvpx-vp9"), "av1": ("av1", "libdav1d")}[codec]
    times, _ = video_frames(out)
    assert len(times) == 10


# What each container holds of the codecs the README lists, with every other setting at its default.
MOV_REFUSES = ("vp9", "av1")  # FFmpeg's .mov muxer: VP9 and AV1 only in .mp4


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".webm"])
@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9", "av1"])
def test_every_listed_codec_works_with_its_defaults_in_every_container_that_holds_it(tmp_path, capsys, codec, suffix):
    """`video.preset` defaults to medium, which each encoder gets in its own terms (x264's name was
    once handed to SVT-AV1, which refused it, and the container was blamed)."""
    from pipeline.commands.cli import main

    src = make_video(tmp_path / "in.mkv", frames=6, audio=())
    out = tmp_path / f"out{suffix}"
    code = main(["-q", "video", str(src), "-o", str(out), "--set", f"video.codec={codec}"])
    err = capsys.readouterr().err.strip()
    if suffix == ".mov" and codec in MOV_REFUSES:
        assert code == 2 and f".mov files refuse {VideoConfig(codec=codec).codec} video" in err and "\n" not in err, err
        assert not out.exists()
        return
    assert code == 0, err
    assert len(video_frames(out)[0]) == 6


@pytest.mark.parametrize("preset, codec, expected", [
    ("medium", "libx264", "medium"), ("veryfast", "libx265", "veryfast"),
    ("medium", "av1", "8"), ("veryfast", "av1", "11"), ("3", "av1", "3"),
    ("medium", "vp9", "4"), ("ultrafast", "vp9", "8"), ("2", "vp9", "2"),
])
def test_a_preset_means_what_each_encoder_understands(preset, codec, expected):
    cfg = VideoConfig(codec=codec, preset=preset)
    assert cfg.encoder_preset(cfg.codec) == expected


@pytest.mark.parametrize("preset, codec, allowed", [("8", "libx264", "numbers are for libsvtav1"), ("14", "av1", "a number 0..13"),
                                                     ("9", "vp9", "a number 0..8"), ("quick", "av1", "ultrafast")])
def test_a_preset_an_encoder_cannot_take_is_refused_naming_what_it_takes(preset, codec, allowed):
    with pytest.raises(ValueError, match=allowed):
        VideoConfig(codec=codec, preset=preset)


def test_opus_into_mov_names_the_audio_not_the_video_codec(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=6, audio=("libopus",))
    with pytest.raises(UserError, match=r"\.mov files refuse the input's opus audio") as caught:
        copy_through(src, tmp_path / "out.mov")
    assert "libx264" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_webm_gets_vp9_when_the_codec_is_for_other_containers(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=6, audio=("libopus",))
    out = copy_through(src, tmp_path / "out.webm")  # the default codec, libx264, cannot go in WebM
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
    assert audio_packets(out) == audio_packets(src)


def test_pcm_audio_without_a_speaker_layout_goes_into_mp4(tmp_path):
    """Matroska and AVI store PCM without a speaker order ("2 channels"); mp4 refuses that, so the
    output gets FFmpeg's default order for the count, and the samples are copied untouched."""
    src = make_video(tmp_path / "in.mkv", frames=6, audio=("pcm_s16le",))
    with av.open(str(src)) as container:
        assert container.streams.audio[0].codec_context.layout.name == "2 channels"
    out = copy_through(src, tmp_path / "out.mp4")
    assert audio_packets(out) == audio_packets(src)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.layout.name == "stereo"


def with_extra_streams(clip, dst, *, cover: bool = False, subtitles: Path | None = None):
    """`clip` remuxed to `dst` with a cover picture (an attached mjpeg) and/or a subtitle track."""
    with av.open(str(clip)) as inp, av.open(str(dst), "w") as out, av.open(str(subtitles or clip)) as subs:
        streams = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], inp.streams.audio[0])}
        text = out.add_stream_from_template(subs.streams[0]) if subtitles is not None else None  # all streams before muxing
        if cover:
            art = out.add_stream("mjpeg", rate=1)
            art.width, art.height, art.pix_fmt = 32, 32, "yuvj420p"
            art.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24").reformat(format="yuvj420p")
            for packet in [*art.encode(picture), *art.encode(None)]:
                out.mux(packet)
        for packet in inp.demux(inp.streams.video[0], inp.streams.audio[0]):
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        if text is not None:
            for packet in subs.demux(subs.streams[0]):
                if packet.size:
                    packet.stream = text
                    out.mux(packet)
    return dst


def test_streams_that_are_not_copied_are_named(tmp_path, caplog):
    """Subtitles and cover pictures are not copied (only the video, re-encoded, and its audio);
    a warning names them rather than dropping them silently. The cover is not taken for the video."""
    clip = make_video(tmp_path / "clip.mp4", frames=6)
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,200\nHello\n\n")
    for src, named in [(with_extra_streams(clip, tmp_path / "subs.mkv", subtitles=srt), "subtitle (srt)"),
                       (with_extra_streams(clip, tmp_path / "cover.mp4", cover=True), "cover picture (mjpeg)")]:
        caplog.clear()
        out = copy_through(src, tmp_path / f"out_{src.stem}.mp4")
        times, images = video_frames(out)
        assert len(times) == 6 and psnr(images[3], pattern(3, 96, 64)) > 25
        assert audio_packets(out) == audio_packets(clip)
        assert f"1 stream(s) besides the video and its audio are not copied: {named}" in caplog.text


def test_low_latency_writes_no_b_frames(tmp_path):
    """Live recordings: each frame is encoded in order, so packets are never reordered (pts == dts)."""
    src = make_video(tmp_path / "in.mp4", frames=24, width=96, height=64, audio=())

    def reordered(out):
        with VideoReader(src) as reader, VideoWriter(out, width=96, height=64, time_base=reader.time_base, rate=reader.rate,
                                                     low_latency=out.stem == "live") as writer:
            for frame in reader:
                writer.write(frame.image, frame.pts)
        with av.open(str(out)) as container:
            return sum(p.pts != p.dts for p in container.demux(video=0) if p.size)

    assert reordered(tmp_path / "file.mp4") > 0  # x264's default uses B-frames
    assert reordered(tmp_path / "live.mp4") == 0


def test_audio_that_the_output_container_cannot_hold_is_a_clear_error(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=4, audio=("aac",))
    with pytest.raises(UserError, match="cannot hold the input's aac audio"):
        copy_through(src, tmp_path / "out.webm", cfg=VideoConfig(codec="vp9"))
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize("codec, output, refused", [("av1", "out.mkv", True), ("mpeg4", "out.mp4", True), ("mpeg4", "out.webm", False),
                                                     ("vp9", "out.mkv", False)])
def test_a_pixel_format_the_encoder_cannot_take_is_refused_before_the_run(tmp_path, capsys, codec, output, refused):
    """SVT-AV1 and mpeg4 encode 4:2:0 only: refused before the run, naming the codec (the encoder refused
    it once opened, and the message blamed the container); a WebM is written with VP9, which takes 4:4:4."""
    from pipeline.commands.cli import main

    src = make_video(tmp_path / "in.mkv", frames=3, audio=())
    code = main(["-q", "video", str(src), "-o", str(tmp_path / output), "--set", f"video.codec={codec}", "--set", "video.pix_fmt=yuv444p"])
    err = capsys.readouterr().err.strip()
    if refused:
        assert code == 2 and "encodes yuv420p only" in err and len(err.splitlines()) == 1, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]
    else:
        assert code == 0, err
        with av.open(str(tmp_path / output)) as container:
            assert container.streams.video[0].codec_context.pix_fmt == "yuv444p"


def test_damaged_audio_is_left_out_or_refused_in_one_line_never_an_internal_error(tmp_path, capsys):
    """Hostile inputs: an audio codec FFmpeg does not know (renamed in the mkv) was an AttributeError;
    an AAC whose esds box is damaged was refused by the muxer as an internal error, or made an invalid
    channel layout ("0c")."""
    from pipeline.commands.cli import main

    src = make_video(tmp_path / "opus.mkv", frames=4, audio=("libopus",))
    (tmp_path / "unknown.mkv").write_bytes(src.read_bytes().replace(b"A_OPUS", b"A_QQQQ"))
    assert main(["-q", "video", str(tmp_path / "unknown.mkv"), "-o", str(tmp_path / "u.mkv")]) == 0
    with av.open(str(tmp_path / "u.mkv")) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 0
    aac = make_video(tmp_path / "aac.mp4", frames=4, audio=("aac",)).read_bytes()
    at = aac.index(b"esds")
    for offset, code in [(8, 2), (35, 0)]:
        damaged = bytearray(aac)
        damaged[at + offset] ^= 0xFF
        (tmp_path / f"esds{offset}.mp4").write_bytes(bytes(damaged))
        capsys.readouterr()
        assert main(["-q", "video", str(tmp_path / f"esds{offset}.mp4"), "-o", str(tmp_path / f"e{offset}.mkv")]) == code
        err = capsys.readouterr().err.strip()
        assert code == 0 or ("muxer refused a packet" in err and len(err.splitlines()) == 1), err
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("audio, output", [("aac", "out.webm"), ("libopus", "out.mov")])
def test_audio_the_output_cannot_hold_is_refused_before_the_run_starts(tmp_path, capsys, monkeypatch, audio, output):
    from pipeline import engines
    from pipeline.commands.cli import main

    monkeypatch.setattr(engines, "run", lambda *a, **k: pytest.fail("the run started"))
    src = make_video(tmp_path / "in.mkv", frames=4, audio=(audio,))
    assert main(["-q", "video", str(src), "-o", str(tmp_path / output)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"files refuse the input's {audio.removeprefix('lib')} audio" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_an_error_midway_leaves_no_file(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=20)

    def explode(frame):
        if frame.index == 10:
            raise KeyboardInterrupt
        return frame.image

    with pytest.raises(KeyboardInterrupt):
        copy_through(src, tmp_path / "out.mp4", transform=explode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_output_appears_only_when_complete(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=6)
    target = tmp_path / "out.mp4"
    with VideoReader(src) as reader, VideoWriter(
        target, width=reader.width, height=reader.height, time_base=reader.time_base, rate=reader.rate
    ) as writer:
        for frame in reader:
            writer.write(frame.image, frame.pts)
            assert not target.exists()
    assert target.exists()


def test_a_view_into_a_larger_array_is_written_as_its_pixels(tmp_path):
    """A view whose rows lie further apart than they are wide (a crop of a larger frame) is
    encoded as the picture it shows, not the memory beside it."""
    wide = [np.concatenate([pattern(i, 64, 48), np.zeros((48, 40, 3), np.uint8)], axis=1) for i in range(5)]
    with VideoWriter(tmp_path / "view.mp4", width=64, height=48, time_base=Fraction(1, 25), rate=Fraction(25)) as writer:
        for i, image in enumerate(wide):
            writer.write(image[:, :64], i)
    _, images = video_frames(tmp_path / "view.mp4")
    assert len(images) == 5
    assert min(psnr(image, pattern(i, 64, 48)) for i, image in enumerate(images)) > 30


def test_writer_checks_frame_shape(tmp_path):
    with VideoWriter(tmp_path / "o.mp4", width=32, height=32, time_base=Fraction(1, 25), rate=Fraction(25)) as writer:
        with pytest.raises(ValueError, match=r"\[32, 32, 3\] uint8"):
            writer.write(np.zeros((32, 31, 3), np.uint8), 0)
        writer.write(np.zeros((32, 32, 3), np.uint8), 0)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p / "missing.mp4", "not found"),
        (lambda p: write_bytes(p / "empty.mp4", b""), "empty"),
        (lambda p: write_bytes(p / "text.mp4", b"hello, not a video\n" * 50), "cannot read"),
        (lambda p: p, "folder"),
    ],
)
def test_unreadable_inputs_raise_input_error(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        VideoReader(make(tmp_path))


def test_audio_only_file_is_rejected(tmp_path):
    with pytest.raises(InputError, match="no video stream"):
        VideoReader(audio_only(tmp_path / "song.m4a"))


def test_truncated_mp4_without_index_is_rejected(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=30)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])  # mp4 keeps its index at the end: it is gone
    with pytest.raises(InputError):
        VideoReader(src)


def test_truncated_mkv_keeps_what_can_be_decoded(tmp_path):
    src = make_video(tmp_path / "in.mkv", frames=30, audio=())
    data = src.read_bytes()
    src.write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(src) as reader:
        frames = list(reader)
    assert 5 <= len(frames) < 30


TRIM_CHECK = """
import ctypes, threading, time
import pipeline.media.memory as memory

def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20

libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
blocks = [libc.malloc(100_000) for _ in range(800)]  # under glibc's mmap threshold: from the heap
for b in blocks:
    libc.memset(b, 1, 100_000)
for b in blocks[:-1:2]:  # every other one: 40 MB of holes no trim of the heap's top can reach
    libc.free(b)
memory.TRIM_ABOVE = 16 << 20
if {trim}:
    memory.keep_frame_memory_flat()
    memory.keep_frame_memory_flat()
time.sleep(0.5)  # the trimmer's baseline: memory as it is now, holes and all
big = libc.malloc(32 << 20)  # then memory grows by more than TRIM_ABOVE: the next look trims
libc.memset(big, 1, 32 << 20)
before = rss_mb()
time.sleep(1.0)
print(round(before - rss_mb()), sum(t.name == 'facezoom-malloc-trim' for t in threading.enumerate()))
"""


def test_start_up_runs_without_the_cyclic_collector_until_the_models_are_made():
    """`pipeline.engines.run` imports and sets up inside `setup_without_gc`: no collections until
    `setup_done`; the collector is on again after the block however it ends, and a caller that
    had turned it off keeps it off."""
    import gc

    from pipeline.media import memory

    assert gc.isenabled()
    with memory.setup_without_gc():
        assert not gc.isenabled()
        memory.setup_done()
        assert gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), memory.setup_without_gc():
        assert not gc.isenabled()
        raise RuntimeError("set-up failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with memory.setup_without_gc():
            memory.setup_done()
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux only")
@pytest.mark.parametrize("trim", [False, True])
def test_freed_memory_goes_back_to_the_os_within_a_second(trim):
    """Freed frames go back to the OS (memory flat over a long video), without pinning glibc's
    mmap threshold: once memory has grown (by over TRIM_ABOVE), holes in the heap are given back
    by the trimmer thread, one per process."""
    out = subprocess.run([sys.executable, "-c", TRIM_CHECK.format(trim=trim)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout.split()
    freed, threads = int(out[0]), int(out[1])
    assert threads == int(trim)
    if trim:
        assert freed >= 30, f"only {freed} MB of the 40 MB freed went back"
    else:
        assert freed < 10, "glibc gave the holes back by itself: the trimmer is not what this test sees"

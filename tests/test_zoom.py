"""The zoom: camera path and easing, views, the SR-detail blend, warm starts, and the command end to end."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from face_scenes import Face, background, render
from models.backends.classical import ClassicalBackend
from pipeline.creative import camera as zoom
from pipeline.commands.cli import main
from pipeline.stages.composite import CompositeConfig
from pipeline.config.sections import SRConfig
from pipeline.media.stills import read_frames, read_picture
from pipeline.creative.targets import Choice, Spot, choose_track, whole_spot
from pipeline.creative.zoom import ZoomCamera
from synth import audio_packets, psnr, video_frames


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    """The astronaut at 256x256 (face about 55 px tall), as a PNG file."""
    from pipeline.media.sample import astronaut

    path = tmp_path_factory.mktemp("zoom") / "astronaut.png"
    Image.fromarray(cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)).save(path)
    return path


@pytest.fixture(scope="module")
def detector():
    from pipeline.stages.detect import DetectConfig, FaceDetector

    return FaceDetector(DetectConfig(working_size=0))


def _face_heights(detector, frames):
    heights = []
    for found in detector.detect(frames):
        assert len(found.boxes) >= 1, "the face must stay visible through the zoom"
        best = int(np.argmax(found.scores))
        heights.append(float(found.boxes[best, 3] - found.boxes[best, 1]))
    return heights


# --- the camera path, as plain functions -------------------------------------------------------


@pytest.mark.parametrize("easing", zoom.EASINGS)
def test_tightness_runs_wide_to_tight_and_back_per_direction(easing):
    p = np.linspace(0, 1, 41)
    t_in = [zoom.tightness(x, direction="in", easing=easing) for x in p]
    t_out = [zoom.tightness(x, direction="out", easing=easing) for x in p]
    t_io = [zoom.tightness(x, direction="inout", easing=easing) for x in p]
    assert t_in[0] == 0 and t_in[-1] == 1 and np.all(np.diff(t_in) > 0)
    assert t_out[0] == 1 and t_out[-1] == 0 and np.all(np.diff(t_out) < 0)
    assert t_io[0] == 0 and t_io[20] == 1 and t_io[-1] == 0 and np.allclose(t_io, t_io[::-1])
    if easing == "ease-in-out":  # starts and stops gently: the first step is smaller than the middle one
        assert t_in[1] - t_in[0] < (t_in[21] - t_in[20]) / 10


def test_command_offers_every_direction_and_easing_and_every_command_registers_without_opencv():
    import subprocess
    import sys

    from pipeline.creative import zoom as zoom_command

    assert zoom_command.DIRECTIONS == zoom.DIRECTIONS and zoom_command.EASINGS == zoom.EASINGS
    code = (
        "import sys; from pipeline.commands.cli import build_parser; build_parser(); "
        "print(sorted({'cv2', 'torch', 'av', 'PIL'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_frame_positions_count_is_duration_times_fps():
    assert len(zoom.frame_positions(duration=1.5, fps=8)) == 12
    assert len(zoom.frame_positions(duration=4, fps=25)) == 100
    with pytest.raises(ValueError, match="at least 2 frames"):
        zoom.frame_positions(duration=0.05, fps=10)


@pytest.mark.parametrize("out", [(320, 180), (180, 180)], ids=["same-aspect", "square"])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_face_on_screen_grows_for_in_shrinks_for_out_and_stays_in_view(direction, out):
    """Also in a square output of a wide frame, whose centred crop would miss a face at the edge."""
    frame = (640, 360)
    face = np.array([[565.0, 40.0], [585.0, 60.0]])  # a small face near the top-right corner
    sizes = []
    for p in np.linspace(0, 1, 20):
        tight = zoom.tightness(p, direction=direction, easing="ease-in-out")
        view = zoom.camera_view(frame_size=frame, out_size=out, target=face.mean(0), tight=tight, zoom=zoom.zoom_factor(tight, max_zoom=8))
        assert 0 <= view.x0 and view.x1 <= 640 + 1e-9 and 0 <= view.y0 and view.y1 <= 360 + 1e-9
        corners = face @ zoom.view_matrix(view, out)[:, :2].T + zoom.view_matrix(view, out)[:, 2]
        assert corners.min() >= -1 and corners[:, 0].max() <= out[0] and corners[:, 1].max() <= out[1]
        sizes.append(corners[1, 1] - corners[0, 1])
    steps = np.diff(sizes)
    assert np.all(steps > 0) if direction == "in" else np.all(steps < 0)
    assert max(sizes) / min(sizes) == pytest.approx(8, rel=1e-6)


def test_wide_view_is_exactly_the_resized_frame():
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 2)
    view = zoom.wide_view((320, 240), (160, 120))
    np.testing.assert_array_equal(zoom.render_view(frame, view, (160, 120)), cv2.resize(frame, (160, 120), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(zoom.render_view(frame, zoom.wide_view((320, 240), (320, 240)), (320, 240)), frame)
    enlarged = zoom.render_view(frame, view, (640, 480))
    assert psnr(enlarged, cv2.resize(frame, (640, 480), interpolation=cv2.INTER_CUBIC)) > 40
    # A different aspect crops the frame's middle rather than squashing it.
    square = zoom.wide_view((320, 240), (100, 100))
    assert (square.x0, square.y0, square.x1, square.y1) == (40, 0, 280, 240)


def test_detail_fades_in_with_magnification_without_a_pop():
    assert zoom.detail_weight(1.0, wide_magnification=0.5) == 0
    assert zoom.detail_weight(2.0, wide_magnification=0.5) == 1
    assert zoom.detail_weight(4.0, wide_magnification=4.0) == 0  # a source smaller than the output starts as itself
    # Render a zoom whose "super-resolved face" is black: consecutive frames change smoothly as it takes over.
    h, w = 96, 128
    frame = np.full((h, w, 3), 200, np.uint8)
    spot = Spot(1, np.array([44.0, 28.0, 84.0, 68.0]), np.array([[64 / 40, 0, -44 * 64 / 40], [0, 64 / 40, -28 * 64 / 40]]))
    face = np.zeros((64, 64, 3), np.uint8)
    wide_m = zoom.magnification(zoom.wide_view((w, h), (w, h)), (w, h))
    frames, weights = [], []
    for tight in np.linspace(0, 1, 60):
        zf = zoom.zoom_factor(tight, max_zoom=3)
        view = zoom.camera_view(frame_size=(w, h), out_size=(w, h), target=(64, 48), tight=tight, zoom=zf)
        weight = zoom.detail_weight(zoom.magnification(view, (w, h)), wide_magnification=wide_m)
        image = zoom.render_view(frame, view, (w, h))
        frames.append(zoom.blend_detail(image, face, zoom.face_to_output(spot.matrix, view, (w, h)), weight=weight))
        weights.append(weight)
    assert weights[0] == 0 and weights[-1] == 1 and np.all(np.diff(weights) >= 0)
    centre = [f[40:56, 56:72].astype(float).mean() for f in frames]  # the middle of the face on screen
    assert centre[0] == 200 and centre[-1] < 5  # the face took over completely...
    assert np.abs(np.diff(centre)).max() < 15  # ...by steps, never a jump (a hard switch is a 200-level jump)


class _SpyBackend(ClassicalBackend):
    """The classical backend, returning a numbered state per call and recording what it is handed."""

    stateful = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.received = []

    def super_resolve(self, lr, states, *, seeds, gaps=None):
        self.received.append([None if s is None else int(s["n"]) for s in states])
        result = super().super_resolve(lr, states, seeds=seeds)
        result.states = [{"n": torch.tensor(len(self.received))} for _ in states]
        return result


def test_each_zoom_frame_warm_starts_from_the_previous_one():
    backend = _SpyBackend(in_size=16, out_size=64)
    camera = ZoomCamera(backend, sr_cfg=SRConfig(fidelity=0.0), frame_size=(64, 64), out_size=(64, 64), max_zoom=4,
                        composite_cfg=CompositeConfig(), seed=1)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    spot = whole_spot(64, 64, backend.out_size)
    camera.render(frames[0], spot, 0.0)  # the wide view shows no SR face: nothing to super-resolve
    assert backend.received == []
    for frame in frames:
        camera.render(frame, spot, 1.0)
    camera.render(frames[-1], spot, 0.9)  # the same input again: its face is reused, not searched again
    assert backend.received == [[None], [1], [2]]


def test_choose_track_by_size_index_point_and_id():
    def spot(track, x0, y0, size):
        return Spot(track, np.array([x0, y0, x0 + size, y0 + size], float), np.eye(2, 3))

    faces = [[], [spot(7, 300, 50, 40), spot(3, 20, 60, 30)], [spot(7, 302, 50, 40), spot(3, 22, 60, 30), spot(9, 150, 10, 90)]]
    kw = dict(source="clip.mp4", min_face=20)
    assert choose_track(faces, Choice(), **kw) == 9  # the largest face, even if it appears later
    assert choose_track(faces, Choice(face=0), **kw) == 3  # left to right on the first frame with faces
    assert choose_track(faces, Choice(face=1), **kw) == 7
    assert choose_track(faces, Choice(at=(310, 60)), **kw) == 7
    assert choose_track(faces, Choice(track=9), **kw) == 9
    with pytest.raises(Exception, match=r"--face 2: clip.mp4 has 2 face\(s\).*#1 \(track 7\) box \(300,50\)-\(340,90\)"):
        choose_track(faces, Choice(face=2), **kw)
    with pytest.raises(Exception, match="--at 5,5: no face's box holds that point"):
        choose_track(faces, Choice(at=(5, 5)), **kw)
    with pytest.raises(Exception, match="its tracks are 3, 7, 9"):
        choose_track(faces, Choice(track=4), **kw)
    with pytest.raises(Exception, match="no face found in clip.mp4.*--whole"):
        choose_track([[], []], Choice(), **kw)


# --- the command, end to end ------------------------------------------------------------------


def test_zoom_picture_frame_count_first_frame_and_growing_face(tmp_path, portrait, detector):
    out = tmp_path / "frames"
    assert main(["-q", "zoom", str(portrait), "-o", str(out), "--size", "128x128", "--duration", "1", "--fps", "6",
                 "--easing", "linear", "--max-zoom", "2.5"]) == 0
    frames = read_frames(out)
    assert len(frames) == 6  # duration x fps
    source = read_picture(portrait).frames[0]
    np.testing.assert_array_equal(frames[0], cv2.resize(source, (128, 128), interpolation=cv2.INTER_AREA))
    heights = _face_heights(detector, frames)
    assert np.all(np.diff(heights) > 0), heights
    assert heights[-1] / heights[0] == pytest.approx(2.5, rel=0.15)


def test_zoom_out_to_gif_shrinks_the_face(tmp_path, portrait, detector):
    out = tmp_path / "out.gif"
    assert main(["-q", "zoom", str(portrait), "-o", str(out), "--direction", "out", "--size", "128x128",
                 "--duration", "0.75", "--fps", "8", "--easing", "linear", "--max-zoom", "2.5"]) == 0
    gif = read_picture(out)
    assert len(gif.frames) == 6 and sum(gif.durations) == pytest.approx(0.75)  # GIF delays are whole 1/100 s...
    assert gif.durations == pytest.approx([0.125] * 6, abs=0.0051)  # ...rounded on the timeline, so they do not drift
    heights = _face_heights(detector, gif.frames)
    assert np.all(np.diff(heights) < 0), heights


def test_zoom_picks_the_face_asked_for(tmp_path, detector):
    picture = render(background(240, 320, seed=3), [Face(cx=90, cy=120, width=70), Face(cx=240, cy=110, width=40)])
    path = tmp_path / "two.png"
    Image.fromarray(picture).save(path)
    heights = {}
    for name, extra in [("largest", []), ("right", ["--face", "1"]), ("at", ["--at", "240,110"])]:
        out = tmp_path / name
        assert main(["-q", "zoom", str(path), "-o", str(out), "--duration", "0.25", "--fps", "8", "--max-zoom", "2"] + extra) == 0
        last = read_frames(out)[-1]
        found = detector.detect([last])[0]
        best = int(np.argmax(found.scores))
        x0, y0, x1, y1 = found.boxes[best]
        assert abs((x0 + x1) / 2 - 160) < 40  # the camera ends on the target...
        heights[name] = y1 - y0
    assert heights["largest"] > 1.4 * heights["right"]  # ...which is the big face by default, the small one when asked
    assert heights["at"] == pytest.approx(heights["right"], rel=0.05)


def test_zoom_at_a_point_with_no_face_heads_for_the_point(tmp_path, caplog):
    from pipeline.config import load_config
    from pipeline.creative.targets import POINT_TRACK
    from pipeline.creative.zoom import POINT_MAX_ZOOM, ZoomSettings, zoom_picture

    picture = render(background(240, 320, seed=5), [Face(cx=80, cy=120, width=70)])
    path = tmp_path / "scene.png"
    Image.fromarray(picture).save(path)
    out = tmp_path / "frames"
    settings = ZoomSettings(duration=0.5, fps=4, size=(160, 120))
    summary = zoom_picture(path, out, cfg=load_config(), settings=settings, choice=Choice(at=(250, 60)), progress=False)
    assert summary["track"] == POINT_TRACK and summary["max_zoom"] == POINT_MAX_ZOOM
    assert summary["sr_calls"] == 0  # no face there: nothing is super-resolved, the view is only enlarged
    assert "zooming into the point itself" in caplog.text
    frames = read_frames(out)
    assert len(frames) == 2
    # The last view is centred on the point: 320/4 x 240/4 source pixels around (250, 60), enlarged.
    expected = cv2.resize(picture[30:90, 210:290], (160, 120), interpolation=cv2.INTER_CUBIC)
    assert psnr(frames[-1], expected) > 30
    assert psnr(frames[0], cv2.resize(picture, (160, 120), interpolation=cv2.INTER_AREA)) > 40  # it starts wide
    # A point on the face still picks the face (and super-resolves it).
    closer = ZoomSettings(duration=0.5, fps=4, size=(160, 120), max_zoom=4)  # 2 output px per source px: SR detail shows
    replace = load_config(overrides=["sr.fidelity=0"])  # (at fidelity 1 this 128-px model holds no more than the face's pixels)
    summary = zoom_picture(path, tmp_path / "face", cfg=replace, settings=closer, choice=Choice(at=(80, 120)), progress=False)
    assert summary["track"] != POINT_TRACK and summary["sr_calls"] > 0


def test_zoom_video_keeps_every_frame_timestamp_and_audio(tmp_path, sample_clip):
    out = tmp_path / "zoom.mp4"
    assert main(["-q", "zoom", str(sample_clip), "-o", str(out), "--size", "320x180", "--max-zoom", "3",
                 "--set", "video.preset=ultrafast", "--set", "detect.every=8"]) == 0
    times_in, images_in = video_frames(sample_clip)
    times_out, images_out = video_frames(out)
    assert times_out == pytest.approx(times_in)
    assert audio_packets(out) == audio_packets(sample_clip)
    first = cv2.resize(images_in[0], (320, 180), interpolation=cv2.INTER_AREA)
    assert psnr(images_out[0], first) > 30  # the first frame is the wide view
    assert psnr(images_out[-1], cv2.resize(images_in[-1], (320, 180), interpolation=cv2.INTER_AREA)) < 20  # the last is zoomed


def test_zoom_errors_teach_and_leave_no_output(tmp_path, capsys, sample_clip):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(blank)
    cases = [
        (["zoom", str(blank), "-o", str(tmp_path / "a.mp4")], "no face found"),
        (["zoom", str(blank), "-o", str(tmp_path / "a.png")], "a zoom is an animation"),
        (["zoom", str(sample_clip), "-o", str(tmp_path / "a.mp4"), "--fps", "10"], "--fps is for pictures"),
        (["zoom", str(sample_clip), "-o", str(tmp_path / "a.mp4"), "--duration", "9"], "longer than the video"),
        (["zoom", str(blank), "-o", str(tmp_path / "a.mp4"), "--size", "big"], "--size expects WIDTHxHEIGHT"),
        (["zoom", str(blank), "-o", str(tmp_path / "a.mp4"), "--at", "170,20"], "--at 170,20 is outside the 160x120 input"),
        (["zoom", str(sample_clip), "-o", str(tmp_path / "a.mp4"), "--at", "5,-1"], "--at 5,-1 is outside the"),
    ]
    for argv, message in cases:
        assert main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wall.png"]


def test_a_one_frame_video_is_refused_with_what_to_do(tmp_path, capsys):
    from synth import make_video

    clip = make_video(tmp_path / "still.mp4", frames=1)
    assert main(["-q", "zoom", str(clip), "-o", str(tmp_path / "z.mp4")]) == 2
    assert "video of 1 frame(s)" in capsys.readouterr().err
    assert not (tmp_path / "z.mp4").exists()
    # three frames 5 ms apart: a frame count estimated from duration x rate would say 1
    from fractions import Fraction

    short = make_video(tmp_path / "short.mkv", frames=3, pts=[0, 5, 10], time_base=Fraction(1, 1000), audio=())
    assert main(["-q", "zoom", str(short), "-o", str(tmp_path / "s.mp4"), "--whole"]) == 0
    assert len(video_frames(tmp_path / "s.mp4")[0]) == 3


def test_zoom_whole_sprite_starts_from_the_sprite(tmp_path):
    sprite = np.zeros((16, 16, 3), np.uint8)
    sprite[4:12, 4:12] = (240, 180, 60)
    Image.fromarray(sprite).save(tmp_path / "sprite.png")
    assert main(["-q", "zoom", str(tmp_path / "sprite.png"), "-o", str(tmp_path / "f"), "--duration", "0.5", "--fps", "8"]) == 0
    frames = read_frames(tmp_path / "f")
    assert len(frames) == 4 and frames[0].shape == (512, 512, 3)  # a 16x16 picture is enlarged, taken whole
    enlarged = cv2.resize(sprite, (512, 512), interpolation=cv2.INTER_CUBIC)
    assert psnr(frames[0], enlarged) > 30


def test_zoom_of_an_animated_gif_keeps_it_playing(tmp_path):
    red, blue = np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)
    red[:], blue[:] = (220, 20, 20), (20, 20, 220)
    images = [Image.fromarray(red), Image.fromarray(blue)]
    images[0].save(tmp_path / "blink.gif", save_all=True, append_images=images[1:], duration=250, loop=0)
    out = tmp_path / "zoom.mp4"
    assert main(["-q", "zoom", str(tmp_path / "blink.gif"), "-o", str(out), "--duration", "1", "--fps", "8"]) == 0
    times, frames = video_frames(out)
    assert times == pytest.approx([k / 8 for k in range(8)])
    shown = ["red" if f[256, 256, 0] > f[256, 256, 2] else "blue" for f in frames]
    assert shown == ["red", "red", "blue", "blue"] * 2  # 0.25 s each, looped while the camera moves


def test_a_folder_of_pictures_gives_a_folder_of_zooms_and_skips_bad_files(portrait, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(portrait.read_bytes())
    (folder / "b.png").write_bytes(portrait.read_bytes())
    out = tmp_path / "zooms"
    argv = ["-q", "zoom", str(folder), "-o", str(out), "--format", "gif", "--size", "96x96", "--duration", "0.5", "--fps", "4"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.gif", "b.gif"]
    assert len(read_picture(out / "a.gif").frames) == 2  # duration x fps
    (folder / "c.png").write_bytes(b"not a picture")
    assert main(argv) == 2  # the bad file is skipped and reported; the others are written
    assert not (out / "c.gif").exists() and (out / "b.gif").exists()


def test_a_damaged_video_s_warning_is_said_once(tmp_path):
    """zoom reads a video twice (the target's path, then the render): the damage is one line, not two."""
    import subprocess
    import sys

    from synth import make_video, write_bytes

    root = Path(__file__).resolve().parent.parent
    src = make_video(tmp_path / "in.mkv", frames=30, width=160, height=120)
    cut = write_bytes(tmp_path / "cut.mkv", src.read_bytes()[: src.stat().st_size // 2])
    done = subprocess.run([sys.executable, str(root / "run_pipeline.py"), "-q", "zoom", str(cut), "-o", str(tmp_path / "z.mp4"), "--whole"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged input" in lines[0], lines

"""Pictures in and out: alpha over a background, animated GIFs with their timing, atomic outputs."""

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputError, UserError
from pipeline.media.animation import GifWriter, PngFolderWriter, open_animation
from pipeline.media.stills import _flatten, is_picture, list_pictures, output_kind, parse_colour, read_frames, read_picture, write_image
from synth import video_frames


def _sprite_frames(n=3, size=16):
    """Pixel-art frames: few colours, so a GIF holds them exactly."""
    frames = []
    for i in range(n):
        f = np.zeros((size, size, 3), np.uint8)
        f[:] = (30, 60, 90)
        f[2 + i : 8 + i, 3:12] = (250, 200, 40)
        f[10:13, 4 + i : 9 + i] = (200, 30, 30)
        frames.append(f)
    return frames


def _save_gif(path, frames, durations_ms):
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations_ms, loop=0)
    return path


def test_parse_colour_names_hex_and_triples():
    assert parse_colour("white") == (255, 255, 255)
    assert parse_colour("#00ff80") == (0, 255, 128)
    assert parse_colour("#f00") == (255, 0, 0)
    assert parse_colour("10, 20,30") == (10, 20, 30)
    with pytest.raises(UserError, match="'pink' is not one of"):
        parse_colour("pink")
    with pytest.raises(UserError):
        parse_colour("1,2,300")


def test_rgba_png_is_composited_over_the_background(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[:8, :, 3] = 255  # top half opaque
    rgba[8:, :8, 3] = 0  # bottom-left transparent
    rgba[8:, 8:, 3] = 128  # bottom-right half transparent
    Image.fromarray(rgba).save(tmp_path / "emoji.png")
    picture = read_picture(tmp_path / "emoji.png", background=(0, 0, 255))
    assert not picture.animated and picture.frames[0].shape == (16, 16, 3) and picture.frames[0].dtype == np.uint8
    image = picture.frames[0]
    assert image[0, 0].tolist() == [200, 100, 0]
    assert image[15, 0].tolist() == [0, 0, 255]
    a = 128 / 255
    assert np.abs(image[15, 15].astype(float) - [200 * a, 100 * a, 255 * (1 - a)]).max() <= 1
    # a palette whose colours carry alpha, with no "transparency" entry (as Pillow reads some paletted
    # files: TGA did up to Pillow 11.2); made in memory, since no writer keeps it so in every Pillow
    paletted = Image.fromarray(rgba).quantize(4)
    assert paletted.mode == "P" and paletted.palette.mode == "RGBA" and "transparency" not in paletted.info
    flat = _flatten(paletted, (0, 0, 255))
    assert flat[0, 0].tolist() == [200, 100, 0] and flat[15, 0].tolist() == [0, 0, 255]


def test_animated_gif_frames_and_delays_are_read(tmp_path):
    frames = _sprite_frames(3)
    picture = read_picture(_save_gif(tmp_path / "s.gif", frames, [100, 250, 40]))
    assert picture.animated and len(picture.frames) == 3
    assert picture.durations == pytest.approx([0.1, 0.25, 0.04])
    for got, want in zip(picture.frames, frames):
        np.testing.assert_array_equal(got, want)


def test_gif_writer_keeps_every_frame_its_delay_and_its_colours(tmp_path):
    frames = _sprite_frames(3)
    frames.insert(2, frames[1].copy())  # an identical frame must not be merged away
    path = tmp_path / "out.gif"
    with GifWriter(path, width=16, height=16, time_base=Fraction(1, 1000), frame_duration=0.3) as out:
        for frame, pts in zip(frames, [0, 100, 350, 390]):
            out.write(frame, pts)
    back = read_picture(path)
    assert len(back.frames) == 4
    assert back.durations == pytest.approx([0.1, 0.25, 0.04, 0.3])
    for got, want in zip(back.frames, frames):
        np.testing.assert_array_equal(got, want)  # <= 256 colours survive quantisation exactly


def test_gif_writer_quantises_photos_closely(tmp_path):
    from pipeline.media.sample import astronaut

    photo = np.ascontiguousarray(astronaut()[::4, ::4])  # [128, 128, 3]
    path = tmp_path / "photo.gif"
    with GifWriter(path, width=128, height=128, time_base=Fraction(1, 10)) as out:
        out.write(photo, 0)
    (got,) = read_picture(path).frames
    assert np.abs(got.astype(float) - photo).mean() < 6


def test_failed_writes_leave_nothing(tmp_path):
    frames = _sprite_frames(2)
    for path, make in [
        (tmp_path / "a.gif", lambda p: GifWriter(p, width=16, height=16, time_base=Fraction(1, 10))),
        (tmp_path / "frames", lambda p: PngFolderWriter(p, width=16, height=16)),
    ]:
        with pytest.raises(RuntimeError):
            with make(path) as out:
                out.write(frames[0], 0)
                raise RuntimeError("interrupted")
        assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary files either


def test_png_folder_replaces_its_own_frames_but_no_other_folder(tmp_path):
    frames = _sprite_frames(3)
    target = tmp_path / "frames"
    for count in (3, 2):  # a second run with fewer frames leaves no stale frame behind
        with PngFolderWriter(target, width=16, height=16) as out:
            for i in range(count):
                out.write(frames[i], i)
        assert len(read_frames(target)) == count
    np.testing.assert_array_equal(read_frames(target)[1], frames[1])
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="already exists"):
        PngFolderWriter(mine, width=16, height=16)
    assert (mine / "holiday.jpg").exists()


def test_output_kind_from_the_name(tmp_path):
    assert output_kind(tmp_path / "a.mp4") == "video"
    assert output_kind(tmp_path / "a.MKV") == "video"
    assert output_kind(tmp_path / "a.gif") == "gif"
    assert output_kind(tmp_path / "a.png") == "still"
    assert output_kind(tmp_path / "frames") == "frames"
    assert output_kind(f"{tmp_path}/frames.d/") == "frames"
    with pytest.raises(UserError, match="cannot tell what to write"):
        output_kind(tmp_path / "a.avi2")


def test_video_animation_output_is_written_at_the_given_rate(tmp_path):
    frames = [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(6)]
    with open_animation(tmp_path / "a.mp4", width=48, height=32, time_base=Fraction(1, 8), rate=Fraction(8)) as out:
        for i, f in enumerate(frames):
            out.write(f, i)
    times, images = video_frames(tmp_path / "a.mp4")
    assert times == pytest.approx([i / 8 for i in range(6)])


def test_write_image_and_bad_inputs(tmp_path):
    image = _sprite_frames(1)[0]
    write_image(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_picture(tmp_path / "x.png").frames[0], image)
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(InputError, match="cannot read .*notes.png as a picture"):
        read_picture(tmp_path / "notes.png")
    with pytest.raises(InputError, match="input not found"):
        read_picture(tmp_path / "missing.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no pictures"):
        list_pictures(empty)


def test_a_photos_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = (250, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write
    Image.fromarray(image).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    (upright,) = read_picture(tmp_path / "phone.jpg").frames
    assert upright.shape == (40, 20, 3)
    assert upright[5, 10, 0] > 200 and upright[35, 10, 0] < 50  # the red half is now on top


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    (frame,) = read_picture(tmp_path / "deep.png").frames
    np.testing.assert_allclose(frame[..., 0], grey / 257.0, atol=0.51)
    assert (frame[..., 0] == frame[..., 2]).all()


def test_pictures_are_known_by_their_content_when_the_suffix_says_nothing(tmp_path):
    Image.fromarray(_sprite_frames(1)[0]).save(tmp_path / "photo.heic", format="JPEG")  # misnamed, as phones' exports are
    Image.fromarray(_sprite_frames(1)[0]).save(tmp_path / "noname", format="PNG")
    (tmp_path / "notes.txt").write_text("not a picture")
    assert is_picture(tmp_path / "photo.heic") and is_picture(tmp_path / "noname") and is_picture(tmp_path / "a.avif")
    assert not is_picture(tmp_path / "notes.txt") and not is_picture(tmp_path / "clip.mp4")
    (tmp_path / "clip.m2v").write_bytes(b"\x00\x00\x01\xb3" + bytes(64))  # an MPEG video stream: Pillow identifies it
    (tmp_path / "elementary").write_bytes(b"\x00\x00\x01\xb3" + bytes(64))
    assert not is_picture(tmp_path / "clip.m2v") and not is_picture(tmp_path / "elementary")


def test_pillow_warnings_go_to_the_log(tmp_path, caplog, monkeypatch):
    """A picture over Pillow's size limit (here lowered) warns; the warning is one log line, not
    Python's two-line warning on stderr."""
    import warnings

    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 64x48 = 3072: over it, under twice it (an error)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would fail the read
        read_picture(tmp_path / "big.png")
    assert "big.png: Image size (3072 pixels) exceeds limit" in caplog.text

"""Zoom animations (`facezoom zoom`, parsed in `pipeline/commands/zoom.py`): a camera zooming into (or out of) a face, the model supplying the detail.

Input: a picture (PNG with alpha, JPEG, WebP...), an animated GIF (it keeps playing, looped,
while the camera moves) or a video (it keeps playing: every frame is kept at its timestamp and
its audio is copied into video outputs). Output: video (.mp4 and friends), .gif, or a folder
of PNG frames (see `pipeline.media.stills.output_kind`).

Steps, per input:
1. read the frames; find and track the faces (`pipeline.creative.targets`), pick the target;
2. per output frame: the camera's tightness from the path position (`pipeline.creative.camera`), the
   view, and — where the view has run out of source pixels — the target's super-resolved face
   blended in. Each frame's super-resolution warm-starts from the previous frame's state (the
   target is one track); an input identical to the previous frame's reuses its face;
3. write atomically.
"""

from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction

import numpy as np

from pipeline.errors import UserError

log = logging.getLogger(__name__)

PICTURE_DURATION = 4.0  # s: a zoom of a picture long enough to watch, short enough to loop
PICTURE_FPS = 25.0
SMALL_PICTURE = 256  # px: pictures whose long side is smaller are enlarged for the output...
ENLARGED_SIDE = 512  # ...to this long side, so a 16x16 sprite does not make a 16x16 animation
POINT_MAX_ZOOM = 4.0  # default zoom into a free point (--at with no face): there is no face size to fill the view with


@dataclasses.dataclass(frozen=True)
class ZoomSettings:
    direction: str = "in"  # in, out, inout
    duration: float | None = None  # s; None = PICTURE_DURATION for pictures, the whole video for videos
    fps: float | None = None  # frames per second of a picture's zoom; None = PICTURE_FPS; videos keep theirs
    easing: str = "ease-in-out"  # starts and stops gently; linear moves at one speed
    max_zoom: float | None = None  # None = the face fills FACE_FILL of the tight view's height
    size: tuple[int, int] | None = None  # output (width, height); None = the input's (small pictures enlarged)
    whole: bool = False  # the whole picture is the face input (no detection)

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise UserError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.easing not in EASINGS:
            raise UserError(f"--easing must be one of {', '.join(EASINGS)}, got {self.easing!r}")
        if self.duration is not None and not 0 < self.duration <= 3600:
            raise UserError(f"--duration must be in (0, 3600] seconds, got {self.duration:g}")
        if self.fps is not None and not 1 <= self.fps <= 120:
            raise UserError(f"--fps must be in 1..120, got {self.fps:g}")
        if self.max_zoom is not None and not 1 <= self.max_zoom <= 256:
            raise UserError(f"--max-zoom must be in 1..256 (1 = no zoom), got {self.max_zoom:g}")


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H), each 16..8192."""
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        w, h = (int(p) for p in parts)
        if 16 <= w <= 8192 and 16 <= h <= 8192:
            return w, h
    raise UserError(f"--size expects WIDTHxHEIGHT in pixels, each 16..8192, e.g. --size 512x512; got {text!r}")


def default_size(width: int, height: int) -> tuple[int, int]:
    """The input's size; pictures smaller than SMALL_PICTURE on their long side are enlarged."""
    long_side = max(width, height)
    if long_side >= SMALL_PICTURE:
        return width, height
    scale = ENLARGED_SIDE / long_side
    return max(16, round(width * scale)), max(16, round(height * scale))


class ZoomCamera:
    """Renders one zoom's frames: the view, then the target's super-resolved face blended in.

    The target is one track: each super-resolution starts from the state the previous one
    returned (PULSE: its latents), so successive frames show the same invented face.

    Fidelity (`planner`, `pipeline/stages/fidelity.py`): at the default 1 the view is the real
    picture until the camera magnifies the face past what its source pixels hold; from there
    the model adds only the detail above the face's resolution, faded in by `detail_weight`. At
    0 the model's face replaces the real one as the camera closes in.
    """

    def __init__(self, backend, *, sr_cfg, frame_size, out_size, max_zoom: float, composite_cfg, seed: int):
        from pipeline.creative.camera import magnification, wide_view

        self.backend, self.frame_size, self.out_size, self.max_zoom = backend, frame_size, out_size, max_zoom
        from pipeline.stages.fidelity import EffectiveTracker, FidelityPlanner

        self.planner = FidelityPlanner.for_run(sr_cfg, 1, out_size=backend.out_size, any_input_size=backend.any_input_size)
        self.effective, self.sr_cfg = EffectiveTracker(), sr_cfg
        self.composite_cfg, self.seed = composite_cfg, seed
        self.wide_magnification = magnification(wide_view(frame_size, out_size), out_size)
        self.state = None
        self.sr_calls = 0
        self._last: tuple | None = None  # (low-res input, the model's face for it [1, 3, S, S])

    def render(self, image: np.ndarray, spot, tight: float) -> np.ndarray:
        """The output frame for source `image` at tightness `tight`, zooming to `spot` (a `targets.Spot`)."""
        from pipeline.creative import camera as zoom

        if image.shape[1::-1] != tuple(self.frame_size):
            raise UserError(f"frame size changed mid-stream from {self.frame_size} to {image.shape[1::-1]}; "
                            "zoom needs frames of one size (re-encode the input at a fixed size)")
        zf = zoom.zoom_factor(tight, max_zoom=self.max_zoom)
        centre = ((spot.box[0] + spot.box[2]) / 2, (spot.box[1] + spot.box[3]) / 2)
        view = zoom.camera_view(frame_size=self.frame_size, out_size=self.out_size, target=centre, tight=tight, zoom=zf)
        out = zoom.render_view(image, view, self.out_size)
        mag = zoom.magnification(view, self.out_size)
        weight = zoom.detail_weight(mag, wide_magnification=self.wide_magnification)
        if weight > 0 and spot.matrix is not None:  # a free point (--at with no face there) has no face to add
            from pipeline.stages.align import warp_face
            from pipeline.stages.fidelity import effective_px, native_px

            crop = warp_face(image, spot.matrix, self.backend.out_size)
            native = native_px(spot.matrix, self.backend.out_size)
            plan = self.planner(native, self.effective(spot.track_id, effective_px(crop, native), native), scale=mag)
            if not plan.keep:  # else the view still shows all the model could add
                face = self._face(image, crop, spot, plan)
                out = zoom.blend_detail(out, face, zoom.face_to_output(spot.matrix, view, self.out_size), weight=weight, cfg=self.composite_cfg)
        return out

    def _face(self, image: np.ndarray, crop: np.ndarray, spot, plan) -> np.ndarray:
        """The model's face (fidelity 0) or the detail to add (`pipeline/stages/fidelity.py`): step 2
        on a one-face request, the target's track state carried from frame to frame."""
        import torch

        from pipeline.creative.targets import face_input
        from pipeline.stages.superres import SRRequest, pastes, run_batch

        lr, _ = face_input(self.backend, image, spot.matrix, pre_blur=self.sr_cfg.pre_blur, size=plan.in_size)
        if self._last is not None and torch.equal(lr, self._last[0]):
            # The same input as the last frame (an animation's frame shown again): its warm start would
            # return the same face. Its paste follows this frame's plan.
            return pastes(self.backend, self._last[1], [crop], [plan])[0][0]
        request = SRRequest.make(self.sr_cfg, crops=[crop], states=[self.state], seeds=[self.seed], plans=[plan], inputs=lr)
        request.keep_images = True
        result = run_batch(self.backend, request)
        self.state = result.states[0]
        self.sr_calls += 1
        self._last = (lr, result.images[0][None])
        return result.faces[0]


def _target_spots(frames, *, backend, cfg, whole: bool, choice, source: str, progress: bool, total: int | None):
    """Per frame, the target's `Spot` (and its track id): detected and tracked, the whole picture,
    or the point `--at` names when no face's box holds it."""
    from tqdm import tqdm

    from pipeline.creative import targets

    if whole:
        out = []
        for frame in frames:
            h, w = frame.shape[:2]
            out.append(targets.whole_spot(w, h, backend.out_size))
        return out, targets.WHOLE_TRACK
    with tqdm(total=total, unit="frame", desc="finding faces", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        faces = targets.find_faces(frames, cfg=cfg, crop_size=backend.out_size, framing=backend.framing, chunk=cfg.engine.chunk, progress=bar.update)
    if choice.at is not None and targets.face_at(faces, choice.at) is None:
        x, y = choice.at
        log.warning("no face's box holds --at %g,%g in %s: zooming into the point itself, enlarged by plain resampling "
                    "(detail is invented for faces only)", x, y, source)
        return [targets.point_spot(x, y)] * len(faces), targets.POINT_TRACK
    track = targets.choose_track(faces, choice, source=source, min_face=cfg.detect.min_face)
    return targets.follow(faces, track), track


def _max_zoom(settings: ZoomSettings, spots, frame_size, out_size) -> float:
    from pipeline.creative.camera import auto_max_zoom, wide_view

    if settings.max_zoom is not None:
        return settings.max_zoom
    if spots and spots[0].matrix is None:
        return POINT_MAX_ZOOM
    height = float(np.median([s.box[3] - s.box[1] for s in spots]))
    return auto_max_zoom(height, wide_height=wide_view(frame_size, out_size).height)


def zoom_picture(input_path, output_path, *, cfg, settings: ZoomSettings, choice, background=(255, 255, 255), progress: bool = True) -> dict:
    """A zoom of a still picture or an animated GIF (looped while the camera moves); returns a summary."""
    from tqdm import tqdm

    from pipeline.creative import targets
    from pipeline.media.animation import open_animation
    from pipeline.media.stills import read_picture
    from pipeline.stages.superres import create_backend
    from pipeline.creative.camera import frame_positions, tightness

    if settings.duration is not None and settings.duration > 600:
        raise UserError(f"--duration {settings.duration:g} is over 600 s for a picture; that many frames is a video's job")
    fps = settings.fps or PICTURE_FPS
    try:
        positions = frame_positions(duration=settings.duration or PICTURE_DURATION, fps=fps)
    except ValueError as err:
        raise UserError(f"--duration x --fps: {err}") from None
    picture = read_picture(input_path, background=background)
    h, w = picture.frames[0].shape[:2]
    if any(f.shape != picture.frames[0].shape for f in picture.frames):
        raise UserError(f"{input_path}: frames of different sizes; zoom needs frames of one size")
    if choice.at is not None:
        targets.check_point(choice.at, w, h)
    backend = create_backend(cfg.sr)
    whole = settings.whole or targets.takes_as_is(picture.frames[0], backend)
    spots, track = _target_spots(picture.frames, backend=backend, cfg=cfg, whole=whole, choice=choice,
                                 source=str(input_path), progress=progress, total=len(picture.frames))
    out_size = settings.size or default_size(w, h)
    max_zoom = _max_zoom(settings, spots, (w, h), out_size)
    rate = Fraction(fps).limit_denominator(1001)
    starts = np.concatenate([[0.0], np.cumsum(picture.durations)[:-1]])  # each source frame's start, s
    loop = float(sum(picture.durations))
    camera = ZoomCamera(backend, sr_cfg=cfg.sr, frame_size=(w, h), out_size=out_size, max_zoom=max_zoom,
                        composite_cfg=_composite_cfg(cfg, whole), seed=_seed(cfg, track))
    with open_animation(output_path, width=out_size[0], height=out_size[1], time_base=1 / rate, rate=rate, video_cfg=cfg.video) as out, \
            tqdm(total=len(positions), unit="frame", desc="zoom", disable=not progress, dynamic_ncols=True) as bar:
        for k, p in enumerate(positions):
            source = int(np.searchsorted(starts, (k / float(rate)) % loop, side="right") - 1) if picture.animated else 0
            tight = tightness(p, direction=settings.direction, easing=settings.easing)
            out.write(camera.render(picture.frames[source], spots[source], tight), k)
            bar.update(1)
    return {"frames": len(positions), "max_zoom": max_zoom, "track": track, "sr_calls": camera.sr_calls, "fps": float(rate)}


def zoom_video(input_path, output_path, *, cfg, settings: ZoomSettings, choice, progress: bool = True) -> dict:
    """A zoom over a playing video: every frame kept at its timestamp, audio copied to video outputs."""
    from tqdm import tqdm

    from pipeline.media.reader import VideoReader
    from pipeline.media.animation import open_animation
    from pipeline.stages.superres import create_backend
    from pipeline.creative.targets import check_point
    from pipeline.creative.camera import tightness

    if settings.fps is not None:
        raise UserError("--fps is for pictures: a video keeps its own frames and timestamps (and so its sync with the audio)")
    # 1. First pass: every frame's time, and the target on every frame.
    times: list[float] = []
    with VideoReader(input_path, threads=cfg.video.decode_threads) as reader:
        w, h, total = reader.width, reader.height, reader.frame_count
        if reader.stream.frames:  # the container's own count (frame_count may be an estimate); checked exactly below
            _check_frames(input_path, reader.stream.frames)
        if settings.duration is not None and total and reader.rate:  # the container's word, checked exactly below
            _check_duration(settings.duration, (total - 1) / float(reader.rate))
        if choice.at is not None:
            check_point(choice.at, w, h)
        backend = create_backend(cfg.sr)  # after the input proved readable: a backend may load (or fetch) weights

        def images():
            for frame in reader:
                times.append(frame.seconds)
                yield frame.image

        spots, track = _target_spots(images(), backend=backend, cfg=cfg, whole=settings.whole, choice=choice,
                                     source=str(input_path), progress=progress, total=total)
    _check_frames(input_path, len(times))
    length = times[-1] - times[0]
    if settings.duration is not None and len(times) > 1:
        _check_duration(settings.duration, length)
    span = settings.duration or length
    out_size = settings.size or (w, h)
    max_zoom = _max_zoom(settings, spots, (w, h), out_size)
    camera = ZoomCamera(backend, sr_cfg=cfg.sr, frame_size=(w, h), out_size=out_size, max_zoom=max_zoom,
                        composite_cfg=_composite_cfg(cfg, settings.whole), seed=_seed(cfg, track))
    # 2. Second pass: render and write each frame at its own timestamp (a damaged input's warning was said by the first).
    written = 0
    with VideoReader(input_path, threads=cfg.video.decode_threads, warn=False) as reader, \
            open_animation(output_path, width=out_size[0], height=out_size[1], time_base=reader.time_base, rate=reader.rate,
                           video_cfg=cfg.video, audio_from=input_path) as out, \
            tqdm(total=len(times), unit="frame", desc="zoom", disable=not progress, dynamic_ncols=True) as bar:
        for frame in reader:
            i = min(frame.index, len(spots) - 1)
            p = (frame.seconds - times[0]) / span if span > 0 else 1.0
            tight = tightness(p, direction=settings.direction, easing=settings.easing)
            out.write(camera.render(frame.image, spots[i], tight), frame.pts)
            written += 1
            bar.update(1)
        rate = reader.rate
    return {"frames": written, "max_zoom": max_zoom, "track": track, "sr_calls": camera.sr_calls, "fps": float(rate or 0)}


def _check_frames(path, count: int) -> None:
    if count < 2:
        raise UserError(f"{path} is a video of {count} frame(s): there is nothing to play while the camera moves; "
                        "save the frame as a picture (.png) and zoom into that")


def _check_duration(duration: float, length: float) -> None:
    if duration > length + 1e-3:
        raise UserError(f"--duration {duration:g} is longer than the video ({length:.2f} s from its first frame to its last); "
                        f"give at most {length:.2f}, or leave it out to zoom over the whole video")


def _composite_cfg(cfg, whole: bool):
    # A whole picture is all face: paste its square, not the face ellipse.
    return dataclasses.replace(cfg.composite, scale=1, mask="square") if whole else dataclasses.replace(cfg.composite, scale=1)


def _seed(cfg, track: int) -> int:
    from pipeline.stages.scheduler import crop_seed

    return crop_seed(cfg.sr.seed, track, 0)


# `pipeline.creative.camera.DIRECTIONS` and `EASINGS`, spelled out so that registering imports no OpenCV.
DIRECTIONS = ("in", "out", "inout")
EASINGS = ("linear", "ease-in-out")



"""The enhance loop (`facezoom enhance`, parsed in `pipeline/commands/enhance.py`): super-resolve, shrink back, again, N times.

The loop from the blog that made face super-resolution zooms popular: feeding a model its own
output again and again makes features emerge (eyes appeared in 3 of 10 iterations there). Each
pass shrinks the result back to the model's input size with the backend's *own* downscaler,
never a generic resize, so the next pass sees what the model was built for. `--pre-blur` makes
the first input with an up-then-down resize (the blog's 128 -> 16 trick: a softer input leaves
the model room to invent). `--samples K` runs K chains from different seeds side by side.

Inputs: a face photo (its largest face, or the one named; detected, tracked and aligned as in
the video pipeline), any picture taken whole (`--whole`: sprites, emoji, textures), a 16x16
picture (taken as it is), a PNG with alpha (over `--background`), an animated GIF (every frame
enhanced, each frame's passes warm-starting from the previous frame's, so the invented face
stays the same one; it comes out animated with its own timing), or a folder of these (a batch).

Outputs: a grid picture (rows: samples; columns: the input as the model saw it, then each
iteration), an animation of the iterations (.gif, video or PNG frames), or both (`--grid`).
"""

from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.errors import UserError

log = logging.getLogger(__name__)

GAP = 4  # px between the pictures of a grid or strip
GAP_COLOUR = (127, 127, 127)


def loop_seed(seed: int, sample: int, iteration: int) -> int:
    """The seed of pass `iteration` of chain `sample` (independent streams for every pair)."""
    return int(np.random.SeedSequence([seed, sample, iteration]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclasses.dataclass
class LoopResult:
    outputs: list  # per iteration: [B, 3, S, S] float32 in [-1, 1]
    states: list  # per iteration: one TrackState (or None) per crop, for the same pass on the next frame


def enhance_loop(backend, lr, *, sr_cfg, iterations: int, seeds: Sequence[Sequence[int]], states: Sequence[Sequence] | None = None,
                 on_iteration: Callable[[], None] | None = None) -> LoopResult:
    """Super-resolve `lr` `[B, 3, in, in]` (float32 in [-1, 1]), shrink each result back with
    `backend.downscale`, super-resolve that, `iterations` times: each pass is step 2 on a request
    (`run_batch`) whose faces are replaced whole.

    seeds: per iteration, one seed per crop. states: per iteration, the states the same pass
    returned for the previous frame of each crop's animation (warm starts), or None (cold).
    """
    import torch

    from pipeline.stages.fidelity import replacement
    from pipeline.stages.superres import SRRequest, run_batch

    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    b = lr.shape[0]
    outputs, new_states = [], []
    faces: list = [None] * b  # the first pass has the low-res input only
    for i in range(iterations):
        request = SRRequest.make(sr_cfg, crops=faces, states=states[i] if states is not None else [None] * b, seeds=seeds[i],
                                 plans=[replacement(backend.in_size)] * b, inputs=lr if i == 0 else None)
        request.pre_blur = False  # the first pass's input is blurred already (sr.pre_blur); the next ones shrink the model's faces as they are
        request.keep_images = True  # each pass's faces are the next pass's crops
        result = run_batch(backend, request)
        faces = [face.clamp(-1, 1) for face in result.images]  # [3, S, S] each: the next pass's crops (shrunk by its downscaler)
        outputs.append(torch.stack(faces))
        new_states.append(result.states)
        if on_iteration is not None:
            on_iteration()
    return LoopResult(outputs, new_states)


@dataclasses.dataclass
class Enhanced:
    """The loop's pictures for one input."""

    inputs: list[np.ndarray]  # per frame: [S, S, 3] uint8, the first low-res input enlarged (nearest) to the face size
    results: list[list[list[np.ndarray]]]  # [frame][sample][iteration]: [S, S, 3] uint8
    durations: list[float]  # per frame, seconds (animated inputs)
    caption: str = ""  # what the grid says under its pictures: who made the faces, and that they are invented

    @property
    def animated(self) -> bool:
        return len(self.inputs) > 1


def enhance_picture(picture, backend, *, cfg, iterations: int, samples: int, pre_blur: bool, whole: bool, choice, progress: bool = True) -> Enhanced:
    """Run the loop on every frame of a `stills.Picture`: K chains of N passes per frame."""
    import cv2
    from tqdm import tqdm

    from pipeline.creative import targets
    from pipeline.stages.superres import to_images

    frames = picture.frames
    # 1. The face on every frame, and its low-res input.
    if whole or targets.takes_as_is(frames[0], backend):
        spots = [targets.whole_spot(f.shape[1], f.shape[0], backend.out_size) for f in frames]
    else:
        faces = targets.find_faces(frames, cfg=cfg, crop_size=backend.out_size, framing=backend.framing, chunk=cfg.engine.chunk)
        track = targets.choose_track(faces, choice, source=str(picture.path), min_face=cfg.detect.min_face)
        spots = targets.follow(faces, track)
    size = backend.out_size
    seeds = [[loop_seed(cfg.sr.seed, k, i) for k in range(samples)] for i in range(iterations)]
    # 2. Per frame, K chains at once (in batches of sr.batch_size), warm-started along the animation.
    inputs, results = [], []
    states: list[list] | None = None  # [iteration][sample]
    batch = max(1, cfg.sr.batch_size)
    with tqdm(total=len(frames) * iterations * -(-samples // batch), unit="pass", desc=f"enhance {picture.path.name}",
              disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for frame, spot in zip(frames, spots):
            lr, _ = targets.face_input(backend, frame, spot.matrix, pre_blur=pre_blur)  # [1, 3, in, in]
            keep = _keeper(backend, frame, spot.matrix, cfg.sr)
            shown = to_images(lr)[0]
            inputs.append(cv2.resize(shown, (size, size), interpolation=cv2.INTER_NEAREST))
            per_sample: list[list[np.ndarray]] = [[] for _ in range(samples)]
            next_states: list[list] = [[] for _ in range(iterations)]
            for start in range(0, samples, batch):
                ks = range(start, min(samples, start + batch))
                loop = enhance_loop(
                    backend, lr.repeat(len(ks), 1, 1, 1), sr_cfg=cfg.sr, iterations=iterations,
                    seeds=[[seeds[i][k] for k in ks] for i in range(iterations)],
                    states=None if states is None else [[states[i][k] for k in ks] for i in range(iterations)],
                    on_iteration=lambda: bar.update(1),
                )
                for i, out in enumerate(loop.outputs):
                    for k, image in zip(ks, to_images(keep(out))):
                        per_sample[k].append(image)
                    next_states[i].extend(loop.states[i])
            states = next_states  # stateless backends return None states: every pass starts cold
            results.append(per_sample)
    return Enhanced(inputs, results, list(picture.durations), caption=invention_caption(backend, cfg.sr))


def invention_caption(backend, sr_cfg) -> str:
    """The grid's label for a model that invents: the first column is its input, the rest what it invented
    ('' for the classical backend, whose enlargements invent nothing)."""
    if backend.name == "classical":
        return ""
    model = f"sr.backend={backend.name}" + (f", {sr_cfg.generator}" if sr_cfg.generator else "")
    return f"left: the {backend.in_size}x{backend.in_size} input; right: faces INVENTED by {model}, not the person pictured"


def captioned(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with `text` written under it, wrapped to its width: `[H + h, W, 3] uint8`."""
    import cv2

    if not text:
        return image
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.32, 1
    width = image.shape[1] - 2 * GAP
    lines: list[str] = []
    for word in text.split():
        line = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(line, font, scale, thick)[0][0] <= width:
            lines[-1] = line
        else:
            lines.append(word)
    step = cv2.getTextSize("Ag", font, scale, thick)[0][1] + 5
    band = np.empty((step * len(lines) + GAP, image.shape[1], 3), np.uint8)
    band[:] = GAP_COLOUR
    for i, line in enumerate(lines):
        cv2.putText(band, line, (GAP, step * (i + 1) - 2), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return np.concatenate([image, band], axis=0)


def _keeper(backend, frame: np.ndarray, matrix: np.ndarray, sr_cfg):
    """What each pass's faces become for the picture: the model's faces whole (fidelity 0, this
    command's default: the loop's point is the model's own invention), or, with `sr.fidelity`
    above 0, the source's face up to the kept resolution and the model's detail above it
    (`pipeline/stages/fidelity.py`). The loop itself always runs on the model's faces."""
    if not sr_cfg.fidelity:
        return lambda faces: faces
    import torch

    from pipeline.stages.align import warp_face
    from pipeline.stages.fidelity import FidelityPlanner, effective_px, keep_source, native_px
    from pipeline.stages.superres import to_tensor

    size = backend.out_size
    aligned = warp_face(frame, matrix, size)
    native = native_px(matrix, size)
    plan = FidelityPlanner.for_run(sr_cfg, 1, out_size=size, any_input_size=False)(native, effective_px(aligned, native))
    crop = to_tensor(backend, [aligned])

    def keep(faces: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return keep_source(backend, crop.expand(len(faces), -1, -1, -1), faces.to(backend.device), [plan.kept_px] * len(faces))

    return keep


def strip(images: Sequence[np.ndarray], *, gap: int = GAP) -> np.ndarray:
    """Images of one height side by side, `gap` px apart: `[H, sum(W) + gaps, 3] uint8`."""
    h = images[0].shape[0]
    spacer = np.empty((h, gap, 3), np.uint8)
    spacer[:] = GAP_COLOUR
    parts = [images[0]]
    for image in images[1:]:
        parts += [spacer, image]
    return np.concatenate(parts, axis=1)


def grid(rows: Sequence[Sequence[np.ndarray]], *, gap: int = GAP) -> np.ndarray:
    """Rows of images stacked, `gap` px apart."""
    lines = [strip(r, gap=gap) for r in rows]
    spacer = np.empty((gap, lines[0].shape[1], 3), np.uint8)
    spacer[:] = GAP_COLOUR
    parts = [lines[0]]
    for line in lines[1:]:
        parts += [spacer, line]
    return np.concatenate(parts, axis=0)


def grid_frames(enhanced: Enhanced) -> list[np.ndarray]:
    """Per input frame, the grid: a row per sample, the input then each iteration."""
    return [captioned(grid([[shown, *chain] for chain in chains]), enhanced.caption) for shown, chains in zip(enhanced.inputs, enhanced.results)]


def animation_frames(enhanced: Enhanced) -> list[np.ndarray]:
    """A still's iterations (input, 1, 2, ...), or an animation's frames (last iteration); samples side by side."""
    if enhanced.animated:
        return [strip([chain[-1] for chain in chains]) for chains in enhanced.results]
    chains = enhanced.results[0]
    return [strip([enhanced.inputs[0]] * len(chains))] + [strip([chain[i] for chain in chains]) for i in range(len(chains[0]))]


def animated_into_still(path: Path) -> UserError:
    """The error for an output that names one picture when the input is animated."""
    return UserError(f"{path.name!r} names a single picture, but the input is animated; name it .gif, a video or a folder")


def write_output(path: Path, frames: list[np.ndarray], *, durations: list[float] | None, fps: float) -> None:
    """One picture (a still path) or an animation (timed by `durations`, else `fps`)."""
    from pipeline.media.animation import open_animation
    from pipeline.media.stills import output_kind, write_image

    if output_kind(path) == "still":
        if len(frames) != 1:
            raise animated_into_still(path)
        write_image(path, frames[0])
        return
    h, w = frames[0].shape[:2]
    if durations is not None:  # an animation's own timing, in milliseconds
        time_base, rate = Fraction(1, 1000), None
        pts = np.concatenate([[0], np.cumsum(np.round(np.asarray(durations) * 1000))[:-1]]).astype(int)
    else:
        rate = Fraction(fps).limit_denominator(1001)
        time_base, pts = 1 / rate, np.arange(len(frames))
    last = durations[-1] if durations is not None else None
    with open_animation(path, width=w, height=h, time_base=time_base, rate=rate, last_duration=last) as out:
        for frame, t in zip(frames, pts):
            out.write(frame, int(t))


def write_enhanced(enhanced: Enhanced, output: Path, *, grid_path: Path | None, fps: float) -> None:
    """`output` (a picture: the grid; an animation: the iterations, or an animated input's frames) and `grid_path`."""
    from pipeline.media.stills import output_kind

    for path in (output, grid_path):  # refuse before writing anything, so no output is left half-done
        if path is not None and enhanced.animated and output_kind(path) == "still":
            raise animated_into_still(path)
    timing = enhanced.durations if enhanced.animated else None
    if output_kind(output) == "still" and not enhanced.animated:
        write_output(output, grid_frames(enhanced), durations=None, fps=fps)
    else:
        write_output(output, animation_frames(enhanced), durations=timing, fps=fps)
    if grid_path is not None:
        try:
            write_output(grid_path, grid_frames(enhanced), durations=timing, fps=fps)
        except BaseException:  # all of a run's outputs or none: the output goes with the grid
            import shutil

            shutil.rmtree(output) if output.is_dir() else output.unlink(missing_ok=True)
            raise



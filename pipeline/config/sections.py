"""The settings of every stage: one frozen dataclass per stage, composed by `pipeline.config`.

They live together, apart from the stages' code, so that loading a config (and so parsing the
command line) imports no heavy library: no torch, av, cv2 or scipy. Each stage module imports
its own section from here. A `__post_init__` raises `ValueError` for a value out of range;
`pipeline/config/load.py` turns that into a one-line error naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


# ---- the settings of pipeline/media/writer.py

# Encoder names a user may give, and the options that carry `crf` and `preset` to each.
CODECS = {
    "libx264": {"crf": "crf", "preset": "preset"},
    "libx265": {"crf": "crf", "preset": "preset"},
    "libvpx-vp9": {"crf": "crf", "preset": "cpu-used"},
    "libsvtav1": {"crf": "crf", "preset": "preset"},
    "mpeg4": {"crf": None, "preset": None},
}


ALIASES = {"h264": "libx264", "hevc": "libx265", "h265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}


WEBM_CODECS = ("libvpx-vp9", "libsvtav1")  # of CODECS, what a WebM file can hold


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


# `video.preset` for the encoders whose speed is a number: SVT-AV1's preset (0 slowest and best ..
# 13 fastest) and libvpx-vp9's cpu-used (0 .. 8). An x264 name means the same trade there, so one
# preset (`--config fast`'s veryfast, the default medium) works whatever the codec; medium is each
# encoder's everyday setting (SVT-AV1's 8: real-time-ish on a laptop; VP9's 4: libvpx's advice for
# good-quality files). A number is passed as it is.
NUMERIC_PRESETS = {"libsvtav1": range(0, 14), "libvpx-vp9": range(0, 9)}
NAMED_SPEEDS = {  # x264 name -> {encoder: its number}
    "ultrafast": {"libsvtav1": 13, "libvpx-vp9": 8}, "superfast": {"libsvtav1": 12, "libvpx-vp9": 8},
    "veryfast": {"libsvtav1": 11, "libvpx-vp9": 7}, "faster": {"libsvtav1": 10, "libvpx-vp9": 6},
    "fast": {"libsvtav1": 9, "libvpx-vp9": 5}, "medium": {"libsvtav1": 8, "libvpx-vp9": 4},
    "slow": {"libsvtav1": 6, "libvpx-vp9": 3}, "slower": {"libsvtav1": 4, "libvpx-vp9": 2},
    "veryslow": {"libsvtav1": 2, "libvpx-vp9": 1},
}


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    codec: str = "libx264"  # the most widely playable encoder; also libx265/hevc, libvpx-vp9/vp9, libsvtav1/av1
    crf: int = 18  # visually near-lossless for x264; lower = better and bigger
    preset: str = "medium"  # an x264 name (any encoder: see NAMED_SPEEDS), or SVT-AV1's 0-13 / VP9's cpu-used 0-8
    pix_fmt: str = "yuv420p"  # what every player decodes
    decode_threads: int = 0  # 0 = let FFmpeg use every core
    strict: bool = False  # a damaged input is an error (exit 2, nothing written) instead of a warning

    def __post_init__(self):
        codec = ALIASES.get(self.codec, self.codec)
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join([*CODECS, *ALIASES])}; got {self.codec!r}")
        object.__setattr__(self, "codec", codec)
        if not 0 <= self.crf <= 63:
            raise ValueError(f"crf must be in 0..63, got {self.crf}")
        preset = str(self.preset).strip()
        object.__setattr__(self, "preset", preset)
        numbers = NUMERIC_PRESETS.get(codec)
        if preset not in X264_PRESETS and not (numbers is not None and preset.isdigit() and int(preset) in numbers):
            also = f", or a number {numbers.start}..{numbers.stop - 1}" if numbers is not None else \
                " (numbers are for libsvtav1, 0..13, and libvpx-vp9, 0..8)"
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}{also} for {codec}; got {self.preset!r}")
        if self.pix_fmt not in ("yuv420p", "yuv422p", "yuv444p"):
            raise ValueError(f"pix_fmt must be one of yuv420p, yuv422p, yuv444p; got {self.pix_fmt!r}")
        if not 0 <= self.decode_threads <= 256:
            raise ValueError(f"decode_threads must be in 0..256 (0 = automatic), got {self.decode_threads}")

    def encoder_preset(self, codec: str) -> str | None:
        """`preset` as the encoder `codec` reads it (None: it takes none): an x264 name for x264 and
        x265, a number for SVT-AV1 and VP9 (an x264 name turned into its speed there). `codec` may
        differ from `self.codec`: a WebM output encodes VP9 in place of a codec WebM cannot hold."""
        if CODECS[codec]["preset"] is None:
            return None
        numbers = NUMERIC_PRESETS.get(codec)
        if numbers is None:
            return self.preset if self.preset in X264_PRESETS else "medium"
        if self.preset in X264_PRESETS:
            return str(NAMED_SPEEDS[self.preset][codec])
        return str(min(int(self.preset), numbers.stop - 1))


# ---- the settings of pipeline/stages/detect.py

@dataclasses.dataclass(frozen=True)
class DetectConfig:
    every: int = 5  # detect every k-th frame: 5x less MTCNN than k=1, same recall and ids (benchmarks/detect_every.py)
    # every n-th detection frame scans the whole frame; on those between, each face the flow
    # followed is checked by O-net alone on the square it saw when found (moved with the face), and
    # MTCNN searches around lost or overlapping faces only (FaceDetector.near): a still face gets the
    # very box a full scan gives it, for a tenth of a scan's time. A new face waits up to every x
    # full_every frames: on benchmarks/real_footage.py's clips, 2 gives the recall, ids and
    # jitter of 1; 3 missed one of the 1080p crowd's 16 people for good.
    full_every: int = 2
    working_size: int = 640  # longest side detection runs at (0 = native); MTCNN's cost grows with pixels
    # source px: smaller faces are not looked for (fewer pyramid levels). MTCNN's default; a 20 px
    # face's FFHQ crop is ~40 px, more than a 16x16 input. At working_size the floor is 12 working px.
    min_face: int = 20
    # P-, R-, O-net score thresholds. MTCNN's own O-net 0.7 let a helmet through on the built-in sample
    # (scored 0.76; real faces score > 0.99 there), and a false face gets replaced: 0.9 is stricter.
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9)
    # image-pyramid step; MTCNN's is 0.709. 0.6 has 2/3 of the pyramid's pixels: detection ~30% faster
    # with the same recall, ids and landmark error (benchmarks/detect_every.py --factor); larger = finer, slower
    factor: float = 0.6
    batch_size: int = 16  # frames per MTCNN call; bigger amortises the per-call overhead
    device: str = "auto"  # 'auto' = CUDA when present, else CPU
    # torch threads for MTCNN; 0 = half the cores left after the encoder's (1 on 2 cores). The same
    # count in every engine keeps detections, and so outputs, identical between them.
    threads: int = 0

    def __post_init__(self):
        if not 1 <= self.every <= 1000:
            raise ValueError(f"every must be in 1..1000 (detect on every k-th frame), got {self.every}")
        if not 1 <= self.full_every <= 1000:
            raise ValueError(f"full_every must be in 1..1000 (every n-th detection frame scans the whole frame), got {self.full_every}")
        if self.working_size != 0 and not 64 <= self.working_size <= 8192:
            raise ValueError(f"working_size must be 0 (native) or in 64..8192, got {self.working_size}")
        if not 8 <= self.min_face <= 4096:
            raise ValueError(f"min_face must be in 8..4096 source pixels, got {self.min_face}")
        if len(self.thresholds) != 3 or not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three numbers in (0, 1) for P-, R- and O-net, got {self.thresholds}")
        if not 0.5 <= self.factor <= 0.95:
            raise ValueError(f"factor must be in [0.5, 0.95], got {self.factor}")
        if not 0 <= self.threads <= 1024:
            raise ValueError(f"threads must be in 0..1024 (0 = automatic), got {self.threads}")
        if not 1 <= self.batch_size <= 1024:
            raise ValueError(f"batch_size must be in 1..1024, got {self.batch_size}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


# ---- the settings of pipeline/stages/track.py

@dataclasses.dataclass(frozen=True)
class TrackConfig:
    iou_match: float = 0.3  # least IoU of predicted box and detection to match (SORT's value)
    reacquire_distance: float = 1.0  # a hidden track matches a detection this many face widths away
    max_age: int = 30  # frames a track lives without a matching detection (~1 s at 30 fps of occlusion)
    min_hits: int = 1  # detections before a track is reported; 1 = at once (no first-frames lag)
    flow: bool = True  # follow faces with optical flow between detections; False = constant velocity
    flow_points: int = 40  # corners per face for the flow; more = steadier, slower
    flow_max_error: float = 1.0  # px of forward-backward error above which a flow point is dropped
    smooth: bool = True  # One Euro smoothing of the reported landmarks and box
    # One Euro settings, chosen on synthetic clips against ground truth: a still face's landmark
    # jitter drops 3-4x, a moving face lags by about 0.2% of its width.
    smooth_min_cutoff: float = 0.02  # cutoff at rest, cycles/frame: lower = steadier still faces
    smooth_beta: float = 10.0  # cutoff growth per face-width/frame of speed: higher = less lag
    smooth_d_cutoff: float = 0.2  # cutoff of the speed estimate, cycles/frame
    detection_gain: float = 0.3  # a followed face moves this part of the way to each new detection (1 = snaps to it; tests/test_temporal.py)
    fade: int = 4  # frames over which a face's paste fades in (a new face mid-shot) or out (lost, covered, implausible)
    reid_distance: float = 3.0  # a hidden track that looks like a detection (reid_similarity) takes it this many widths away
    reid_similarity: float = 0.8  # correlation of the aligned faces' appearance above which they are taken as one face
    cut_threshold: float = 27.0  # PySceneDetect ContentDetector score of a shot cut (its default; benchmarks/temporal.py); 0 = off
    cut_min_shot: int = 4  # frames: a second cut sooner than this after the last is a flash, not a cut

    def __post_init__(self):
        if not 0.0 < self.iou_match < 1.0:
            raise ValueError(f"iou_match must be in (0, 1), got {self.iou_match}")
        if not 0.0 <= self.reacquire_distance <= 10.0:
            raise ValueError(f"reacquire_distance must be in [0, 10] face widths, got {self.reacquire_distance}")
        if not 0 <= self.max_age <= 100_000:
            raise ValueError(f"max_age must be in 0..100000 frames, got {self.max_age}")
        if not 1 <= self.min_hits <= 100:
            raise ValueError(f"min_hits must be in 1..100, got {self.min_hits}")
        if not 4 <= self.flow_points <= 1000:
            raise ValueError(f"flow_points must be in 4..1000, got {self.flow_points}")
        if not 0.0 < self.flow_max_error <= 100.0:
            raise ValueError(f"flow_max_error must be in (0, 100] pixels, got {self.flow_max_error}")
        if not 0.0 < self.smooth_min_cutoff <= 0.5:
            raise ValueError(f"smooth_min_cutoff must be in (0, 0.5] cycles/frame, got {self.smooth_min_cutoff}")
        if not 0.0 <= self.smooth_beta <= 1000.0:
            raise ValueError(f"smooth_beta must be in [0, 1000], got {self.smooth_beta}")
        if not 0.0 < self.smooth_d_cutoff <= 0.5:
            raise ValueError(f"smooth_d_cutoff must be in (0, 0.5] cycles/frame, got {self.smooth_d_cutoff}")
        if not 0.0 < self.detection_gain <= 1.0:
            raise ValueError(f"detection_gain must be in (0, 1], got {self.detection_gain}")
        if not 1 <= self.fade <= 100:
            raise ValueError(f"fade must be in 1..100 frames (1 = no fade), got {self.fade}")
        if not 0.0 <= self.reid_distance <= 20.0:
            raise ValueError(f"reid_distance must be in [0, 20] face widths, got {self.reid_distance}")
        if not -1.0 <= self.reid_similarity <= 1.0:
            raise ValueError(f"reid_similarity must be in [-1, 1], got {self.reid_similarity}")
        if not 0.0 <= self.cut_threshold <= 255.0:
            raise ValueError(f"cut_threshold must be in [0, 255] (0 = no cut detection), got {self.cut_threshold}")
        if not 1 <= self.cut_min_shot <= 10_000:
            raise ValueError(f"cut_min_shot must be in 1..10000 frames, got {self.cut_min_shot}")


# ---- the settings of pipeline/stages/superres.py

BACKENDS = ("classical", "pulse", "ffsr", "restore")


@dataclasses.dataclass(frozen=True)
class SRConfig:
    backend: Literal["classical", "pulse", "ffsr", "restore"] = "classical"  # weight-free until weights are configured
    generator: str | None = None  # a registry name (`weights list`) or a local checkpoint path (restore: a face model file)
    device: str = "auto"  # 'auto' = CUDA when present, else CPU
    batch_size: int = 8  # crops per model call; bigger keeps a GPU busier
    in_size: int | Literal["auto"] = 16  # the low-res side the model sees; auto = each face's own resolution (16 up)
    out_size: int | None = None  # high-res face side; None = the backend's natural size
    steps: int = 100  # PULSE: optimisation steps for a cold start (the paper's budget)
    warm_steps: int = 20  # PULSE: steps for a frame warm-started from its track's previous one
    segment: int = 1  # PULSE: every N-th crop of a track is a keyframe (from the last keyframe); each segment chains from its own, beside the others (1 = one chain)
    eps: float = 2e-3  # PULSE's success threshold on the downscaling MSE ([0, 1] scale)
    temporal_weight: float = 0.0  # PULSE: lambda of the prior |w_t - w_{t-1}|^2 on warm frames
    temporal_blend: float = 0.0  # feed-forward (ffsr, restore): weight of the previous frame's output (0 = off)
    codeformer_w: float = 0.5  # restore with CodeFormer: its fidelity weight w, 0 = the model's own face, 1 = closest to the input (its default 0.5)
    pre_blur: bool = False  # up-then-down resize before the model's downscaler (gives room to invent)
    fidelity: float = 1.0  # 1 = keep all the source's detail, 0 = the model's face whole (enhance states its own default: 0)
    seed: int = 0  # base seed; each track's seed is derived from it and the track id

    def __post_init__(self):
        if not 1 <= self.batch_size <= 1024:
            raise ValueError(f"batch_size must be in 1..1024 crops, got {self.batch_size}")
        if self.in_size != "auto" and not 4 <= self.in_size <= 256:
            raise ValueError(f"in_size must be 'auto' or in 4..256, got {self.in_size}")
        if self.out_size is not None and not self.base_in_size < self.out_size <= 2048:
            raise ValueError(f"out_size must be in {self.base_in_size + 1}..2048 (larger than in_size), got {self.out_size}")
        if not 0.0 <= self.fidelity <= 1.0:
            raise ValueError(f"fidelity must be in 0..1 (or null for the command's default), got {self.fidelity}")
        if not 1 <= self.segment <= 1000:
            raise ValueError(f"segment must be in 1..1000 crops (1 = each frame starts from the previous one), got {self.segment}")
        for name in ("steps", "warm_steps"):
            if not 1 <= getattr(self, name) <= 100_000:
                raise ValueError(f"{name} must be in 1..100000 optimisation steps, got {getattr(self, name)}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1] (a mean squared error on the [0, 1] scale), got {self.eps}")
        if not 0 <= self.temporal_weight <= 1000:
            raise ValueError(f"temporal_weight must be in [0, 1000] (0 = off; past that the prior alone decides), got {self.temporal_weight}")
        if not 0 <= self.temporal_blend < 1:
            raise ValueError(f"temporal_blend must be in [0, 1), got {self.temporal_blend}")
        if not 0 <= self.codeformer_w <= 1:
            raise ValueError(f"codeformer_w must be in [0, 1] (CodeFormer's fidelity weight), got {self.codeformer_w}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in 0..{2**63 - 1} (a 64-bit seed), got {self.seed}")

    @property
    def base_in_size(self) -> int:
        """The backend's own input side: `in_size`, or 16 (the floor) for auto."""
        return AUTO_IN_FLOOR if self.in_size == "auto" else self.in_size


AUTO_IN_FLOOR = 16  # sr.in_size=auto never feeds a model less than this (PULSE's and PFSR's own size)


# ---- the settings of pipeline/stages/composite.py

UPSCALE_MODES = ("linear", "cubic", "lanczos")  # cv2's INTER_LINEAR, INTER_CUBIC, INTER_LANCZOS4


@dataclasses.dataclass(frozen=True)
class CompositeConfig:
    scale: Literal[1, 2, 4] = 1  # output frame size / input frame size
    upscale: Literal["linear", "cubic", "lanczos"] = "cubic"  # how the frame around the faces is upscaled
    mask: Literal["ellipse", "square"] = "ellipse"  # ellipse: the face only; square: the whole crop (non-faces)
    feather: float = 0.1  # width of the mask's soft edge, as a fraction of the crop side
    color_match: bool = False  # SR outputs downscale to their input, so colours already agree
    draw_boxes: bool = False  # debug: draw each face's box and track id
    side_by_side: bool = False  # before | after: the input (at the output scale) left of the result
    # A whole-frame SR model in place of `upscale` at scale 2 or 4 (models/frame_sr.py): a registry name
    # (`facezoom weights list`: RealESRGAN_x4plus, ...) or a .pth/.safetensors file spandrel reads; None = `upscale`.
    upscaler: str | None = None
    # Tiles bound the model's memory at any frame size: at 256 px cores one RealESRGAN_x4plus window needs ~0.5 GB
    # (float32, benchmarks/frame_sr.py); 0 = whole frames (no seams, but a 4K frame at 4x fits no GPU)
    upscaler_tile: int = 256
    upscaler_overlap: int = 16  # context around each core (Real-ESRGAN's tile_pad is 10); seams vanish once it covers the model's reach
    upscaler_batch: int = 4  # windows per model call, across the chunk's frames; more keeps a GPU busier

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The output frame's (width, height) for an input frame of `width` x `height`."""
        return width * self.scale * (2 if self.side_by_side else 1), height * self.scale

    def __post_init__(self):
        if self.scale not in (1, 2, 4):
            raise ValueError(f"scale must be 1, 2 or 4, got {self.scale!r}")
        if self.upscale not in UPSCALE_MODES:
            raise ValueError(f"upscale must be one of {', '.join(UPSCALE_MODES)}, got {self.upscale!r}")
        if self.mask not in ("ellipse", "square"):
            raise ValueError(f"mask must be 'ellipse' or 'square', got {self.mask!r}")
        if not 0.0 < self.feather <= 0.5:
            raise ValueError(f"feather must be in (0, 0.5] (a fraction of the crop side), got {self.feather}")
        if self.upscaler is not None and not str(self.upscaler).strip():
            raise ValueError("upscaler must name a registry entry or a model file (or be null for `upscale`), got ''")
        if self.upscaler_tile != 0 and not 16 <= self.upscaler_tile <= 8192:
            raise ValueError(f"upscaler_tile must be 0 (whole frames) or in 16..8192 input pixels, got {self.upscaler_tile}")
        if not 0 <= self.upscaler_overlap <= 512:
            raise ValueError(f"upscaler_overlap must be in 0..512 input pixels, got {self.upscaler_overlap}")
        if not 1 <= self.upscaler_batch <= 256:
            raise ValueError(f"upscaler_batch must be in 1..256 windows, got {self.upscaler_batch}")


# ---- the settings of pipeline/engines/local.py

@dataclasses.dataclass(frozen=True)
class EngineConfig:
    engine: Literal["local", "ray"] = "local"  # one process (starts at once), or Ray actors (scales out)
    chunk: int = 8  # frames handed to the face stages at once (detection batches over them)
    ray_address: str | None = None  # None = start an embedded local Ray; else join this cluster ('auto' too)
    sr_actors: int = 1  # super-resolution actors in the pool
    num_gpus: float | None = None  # GPUs per SR actor; None = 1 if the cluster has enough GPUs, else 0 (CPU)
    sr_threads: int = 0  # torch threads per SR actor; 0 = the node's cores shared out among the actors
    sr_resources: dict[str, float] = dataclasses.field(default_factory=dict)  # custom Ray resources per SR actor
    max_frames_in_flight: int = 32  # backpressure: frames decoded but not yet encoded
    max_restarts: int = 3  # times a dead SR actor is restarted before the job fails
    dashboard: bool = False  # Ray's dashboard costs memory and a port; off unless asked for
    videos_in_parallel: int = 1  # a folder input: videos processed at once, their crops sharing the SR actors
    shared_storage: bool = False  # every node sees the driver's files: decode, track and encode may run on any node

    def __post_init__(self):
        if not 1 <= self.chunk <= 1024:
            raise ValueError(f"chunk must be in 1..1024 frames, got {self.chunk}")
        if not 1 <= self.sr_actors <= 1024:
            raise ValueError(f"sr_actors must be in 1..1024, got {self.sr_actors}")
        if self.num_gpus is not None and not 0 <= self.num_gpus <= 64:
            raise ValueError(f"num_gpus must be in [0, 64] GPUs per SR actor (or null for automatic), got {self.num_gpus}")
        if not 0 <= self.sr_threads <= 1024:
            raise ValueError(f"sr_threads must be in 0..1024 (0 = automatic), got {self.sr_threads}")
        if not all(0 <= v <= 1e6 for v in self.sr_resources.values()):
            raise ValueError(f"sr_resources amounts must be in [0, 1e6] per SR actor, got {self.sr_resources}")
        if not self.chunk <= self.max_frames_in_flight <= 10_000:
            raise ValueError(
                f"max_frames_in_flight must be in {self.chunk} (chunk)..10000 frames (each one held in memory), "
                f"got {self.max_frames_in_flight}"
            )
        if not 0 <= self.max_restarts <= 1000:
            raise ValueError(f"max_restarts must be in 0..1000, got {self.max_restarts}")
        if not 1 <= self.videos_in_parallel <= 64:
            raise ValueError(f"videos_in_parallel must be in 1..64 (each holds max_frames_in_flight frames), got {self.videos_in_parallel}")


# ---- the settings of pipeline/live/loop.py

@dataclasses.dataclass(frozen=True)
class LiveConfig:
    budget_ms: float = 150.0  # p95 latency target, read to output: feels live at 30 fps, room for one detection frame
    adapt: bool = True  # over budget, spend fewer SR steps and detect less often (see pipeline/live/budget.py)
    max_detect_every: int = 15  # adaptation stops at a detection every 15 frames: a new face shows within 0.5 s at 30 fps
    open_timeout: float = 10.0  # s to connect and see video; RTSP cameras can take a few seconds to answer
    read_timeout: float = 5.0  # s without data before the source counts as dropped; a live source sends many frames a second
    reconnect: float = 0.0  # s to keep reopening a dropped network source; 0 = stop with an error at once
    # torch threads for the face stages (the detector's too, unless detect.threads is set); 0 = torch's default. The reader, recorder and preview threads need
    # the other cores, and OpenMP threads on a busy machine stall each other: MTCNN on a 640x480 frame took
    # ~70 ms with 1 thread and 1-3 s with 2 on a loaded 2-core machine.
    torch_threads: int = 1

    def __post_init__(self):
        if not 1 <= self.budget_ms <= 60_000:
            raise ValueError(f"budget_ms must be in 1..60000 ms, got {self.budget_ms:g}")
        if not 1 <= self.max_detect_every <= 1000:
            raise ValueError(f"max_detect_every must be in 1..1000 frames, got {self.max_detect_every}")
        if not 0 < self.open_timeout <= 600:
            raise ValueError(f"open_timeout must be in (0, 600] s, got {self.open_timeout:g}")
        if not 0 < self.read_timeout <= 600:
            raise ValueError(f"read_timeout must be in (0, 600] s, got {self.read_timeout:g}")
        if not 0 <= self.reconnect <= 86_400:
            raise ValueError(f"reconnect must be in 0..86400 s (0 = off), got {self.reconnect:g}")
        if not 0 <= self.torch_threads <= 1024:
            raise ValueError(f"torch_threads must be in 0..1024 (0 = torch's default), got {self.torch_threads}")

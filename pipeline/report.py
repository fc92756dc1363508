"""What a run reports: the `detections`, `faces` and `tracks` of `--report R.json`, and its writing.

Entries are kept as small tuples and turned into JSON-ready dicts at the end. They are only
collected when a report was asked for, since they grow with the video's length.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from pipeline.errors import UserError

if TYPE_CHECKING:
    from pipeline.stages.faces import FaceCrop, FrameDetections
    from pipeline.stages.track import TrackRecord


# The busy seconds a video run reports, per stage, in every engine. Stages run side by side (the
# encoder on its own thread or actor, Ray's actors at once), so they add up to more than the wall time.
# frame_sr: composite.upscaler's model; detect_ahead: the whole-frame scans the local engine runs on
# its detection thread, beside detect_track (which waits for them only where they are late)
STAGES = ("setup", "decode", "detect_track", "detect_ahead", "sr", "frame_sr", "composite", "encode")


def run_report(*, input_path, output_path, engine: str, backend: str, frames_in: int, frames_out: int,
               frames_expected: int | None, damage: str | None, wall_seconds: float, first_frame_seconds: float | None,
               stage_seconds: dict[str, float], sr_actors: list, video_actors: dict, faces: dict[str, Any]) -> dict[str, Any]:
    """A video run's report, the same keys and meanings for every engine.

    frames_in: frames decoded; frames_expected: what the container declares or its duration
    implies; sr_actors / video_actors: where Ray placed its actors (the local engine: none);
    faces: `FaceReport.to_dict()`.
    """
    unknown = set(stage_seconds) - set(STAGES)
    if unknown:
        raise ValueError(f"stage_seconds: unknown stages {sorted(unknown)}; the stages are {STAGES}")
    return {
        "input": str(input_path),
        "output": str(output_path),
        "engine": engine,
        "backend": backend,
        "sr_actors": sr_actors,
        "video_actors": video_actors,
        "frames_in": frames_in,
        "frames_out": frames_out,
        "frames_expected": frames_expected,
        "warnings": [damage] if damage else [],
        "wall_seconds": round(wall_seconds, 3),
        "first_frame_seconds": None if first_frame_seconds is None else round(first_frame_seconds, 3),
        "stage_seconds": {stage: round(stage_seconds.get(stage, 0.0), 3) for stage in STAGES},
        **faces,
    }


def write_report(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path`, atomically (a temporary file beside it, then a rename)."""
    report = ReportFile(path)
    report.commit(data)


class ReportFile:
    """A run's JSON report, reserved before the run and written with its other outputs.

    Creating it makes the temporary file beside `path` at once, so a report that cannot be
    written (a read-only folder, /proc, no such folder) fails before the run does any work.
    `commit(data, together=[...])` writes it and moves it into place; if that fails (a full
    disk), the run's other outputs named in `together` are deleted too: a run leaves all of its
    outputs or none. `discard()` removes the reservation (the run failed).
    """

    def __init__(self, path: Path):
        from pipeline.media.files import temp_path_beside

        self.path = Path(path)
        self._tmp: Path | None = temp_path_beside(self.path)

    def commit(self, data: dict[str, Any], *, together: tuple[Path, ...] = ()) -> None:
        from pipeline.media.files import no_room_reason

        try:
            self._tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(self._tmp, self.path)
            self._tmp = None
        except OSError as err:
            self.discard()
            for other in together:
                Path(other).unlink(missing_ok=True)
            also = f"; {', '.join(map(str, together))} removed too, so the run leaves all of its outputs or none" if together else ""
            raise UserError(f"cannot write the report {self.path}: {no_room_reason(err) or err.strerror}{also}") from None

    def discard(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def _r(values, digits: int = 2) -> list:
    return [round(float(v), digits) for v in values]


class FaceReport:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._detections: list[dict[str, Any]] = []
        self._faces: list[dict[str, Any]] = []
        self._tracks: list[TrackRecord] = []
        self._cuts: list[int] = []

    def add_cuts(self, cuts: Iterable[int]) -> None:
        """Shot cuts: the first frame of each new shot (kept even with the face entries off: a list of numbers)."""
        self._cuts.extend(int(c) for c in cuts)

    def add_detections(self, frames: Iterable[FrameDetections]) -> None:
        if not self.enabled:
            return
        for item in frames:
            d = item.detections
            self._detections.append(
                {
                    "frame": item.frame_index,
                    "boxes": [_r(b) for b in d.boxes],
                    "scores": _r(d.scores, 4),
                    "landmarks": [[_r(p) for p in lm] for lm in d.landmarks],
                }
            )

    def add_face(self, crop: FaceCrop, *, consistency: float, success: bool, steps: int, in_size: int, kept_px: float, model_ran: bool,
                 keyframe: bool = True) -> None:
        if not self.enabled:
            return
        self._faces.append(
            {
                "frame": crop.frame_index,
                "track_id": crop.track_id,
                "box": _r(crop.box),
                "detected": crop.detected,
                "weight": round(crop.weight, 3),
                "native_px": round(crop.native_px, 1),
                "effective_px": round(crop.effective_px, 1),
                "in_size": in_size,
                "kept_px": round(kept_px, 1),
                "model_ran": model_ran,
                "consistency": round(consistency, 6),
                "success": success,
                "steps": steps,
                "keyframe": keyframe,
            }
        )

    def add_tracks(self, records: Iterable[TrackRecord]) -> None:
        self._tracks.extend(records)

    def to_dict(self) -> dict[str, Any]:
        tracks = sorted(self._tracks, key=lambda t: t.track_id)
        faces = sorted(self._faces, key=lambda f: (f["frame"], f["track_id"]))
        return {
            "detections": sorted(self._detections, key=lambda d: d["frame"]),
            "faces": faces,
            "tracks": [{"id": t.track_id, "first_frame": t.first_frame, "last_frame": t.last_frame} for t in tracks],
            "cuts": sorted(self._cuts),
            "faces_reaching_eps": sum(f["success"] for f in faces),
            "faces_model_ran": sum(f["model_ran"] for f in faces),  # 0: every face kept its own pixels
        }

"""The crop scheduler: which face crops go to the super-resolution backend together.

A stateful backend (PULSE's warm starts) makes each track a chain of searches, each starting
from the state its parent crop committed. The scheduler cuts that chain the way a video codec
cuts a stream into groups of pictures, so one track can use many actors and fill batches:

    track crops:  K0 a b c K1 d e f K2 g ...      (sr.segment = 4; K = keyframe)
    parent:       -  K0 a b K0 K1 d e K1 K2       (the state each crop starts from)

- A track's crops are numbered as they are added; every `segment`-th one (the first included)
  is a keyframe. A keyframe's parent is the previous keyframe (the first starts cold); any
  other crop's parent is the crop before it, within its segment.
- A crop may run once its parent is committed. So the keyframes run ahead, one at a time, and
  behind them every segment is a short chain of its own: one crop of each segment may run at
  once, in one batch or spread over actors. With `segment = 1` this is the plain chain.
- Nothing is shared between segments but their keyframes, so no crop waits for frames after
  it: the schedule works on a stream, with one chunk of frames in hand.
- A stateless backend has no chain: every crop may run at once, batches fill in frame order.

Which crops run together: any crops whose parents are committed, keyframes first (the next
segment waits for them), then the oldest frames, so that whole frames finish (and can be
written) early. A shot cut ends every track (the tracker gives the new shot new ids), so the
first crop after a cut is a new track's first keyframe: a cold start. A batch that fails (say,
its Ray actor died) is handed back with `retry`; its crops run again from the very states they
were given, so nothing is lost and nothing committed is computed twice. Both engines use the
scheduler; the states are plain tensors, so they travel with the crops to whichever actor is free.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Sequence

from models.backends.base import TrackState


@dataclasses.dataclass
class CropJob:
    """One face crop waiting for super-resolution."""

    frame_index: int
    track_id: int
    seed: int
    payload: Any  # what the engine needs to run it: the aligned crop, or a Ray object ref
    # Set by the scheduler:
    position: int = 0  # its number among its track's crops
    keyframe: bool = True
    anchored: bool = False  # its parent is committed: `start` is known and it may run
    start: TrackState | None = None  # the state it starts from (None: cold)
    gap: int = 1  # frames from its parent's frame to its own (what a warm start has to cover)


@dataclasses.dataclass
class Batch:
    jobs: list[CropJob]
    states: list[TrackState | None]  # the state each job starts from (None: cold start)
    gaps: list[int]  # per job: frames between it and the crop its state came from (1 for a cold start)


def crop_seed(base_seed: int, track_id: int, frame_index: int) -> int:
    """A seed that depends only on (base seed, track, frame): the same in every engine and run."""
    digest = hashlib.blake2b(f"{base_seed}:{track_id}:{frame_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # fits a signed 64-bit torch seed


def scheduler_for(sr_cfg, *, stateful: bool, keyframes: bool) -> "CropScheduler":
    """The scheduler for a backend (its `stateful` and `keyframes` attributes) under these `sr`
    settings: `sr.segment` where the backend's states allow keyframes, else the plain chain."""
    return CropScheduler(stateful=stateful, batch_size=sr_cfg.batch_size, segment=sr_cfg.segment if keyframes else 1)


@dataclasses.dataclass
class _Track:
    queue: list[CropJob] = dataclasses.field(default_factory=list)  # added, not yet dispatched, in frame order
    added: int = 0  # crops added so far
    last_frame: int = -1
    states: dict[int, tuple[TrackState | None, int]] = dataclasses.field(default_factory=dict)  # committed (state, frame), with children still to add
    in_flight: int = 0
    ended: bool = False


class CropScheduler:
    """Batches crops across tracks and along them (see the module's doc for the schedule).

    Contract: `add` a track's crops in increasing frame order; call `commit` with the states the
    backend returned for a batch from `next_batch`, or `retry` if it failed; call `end_track`
    when the tracker says a track is over (its states are dropped once its last crop is done).
    """

    def __init__(self, *, stateful: bool, batch_size: int, segment: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if segment < 1:
            raise ValueError(f"segment must be >= 1, got {segment}")
        self.stateful = stateful
        self.batch_size = batch_size
        self.segment = segment if stateful else 1  # no chain, no keyframes
        self._tracks: dict[int, _Track] = {}
        self._in_flight = 0

    def _parent(self, position: int) -> int | None:
        if position == 0:
            return None
        return position - self.segment if position % self.segment == 0 else position - 1

    def _children(self, position: int) -> list[int]:
        within = [] if (position + 1) % self.segment == 0 else [position + 1]
        return within + ([position + self.segment] if position % self.segment == 0 else [])

    def add(self, job: CropJob) -> None:
        track = self._tracks.setdefault(job.track_id, _Track())
        if job.frame_index <= track.last_frame:
            raise ValueError(f"track {job.track_id}: crop of frame {job.frame_index} added after frame {track.last_frame}")
        job.position, job.keyframe = track.added, track.added % self.segment == 0
        track.added, track.last_frame = track.added + 1, job.frame_index
        parent = self._parent(job.position)
        if not self.stateful or parent is None:
            job.anchored, job.start = True, None
        elif parent in track.states:
            job.anchored, (job.start, parent_frame) = True, track.states[parent]
            job.gap = job.frame_index - parent_frame
            if all(child < track.added for child in self._children(parent)):
                del track.states[parent]  # every crop that starts from it has it
        track.queue.append(job)

    def next_batch(self, limit: int | None = None) -> Batch | None:
        """Up to `batch_size` (and `limit`) crops that may run now, or None if none may."""
        ready = [job for track in self._tracks.values() for job in track.queue if job.anchored]
        if not ready:
            return None
        ready.sort(key=lambda job: (self.stateful and not job.keyframe, job.frame_index, job.track_id))
        jobs = ready[: min(self.batch_size, limit or self.batch_size)]
        for job in jobs:
            track = self._tracks[job.track_id]
            track.queue.remove(job)
            track.in_flight += 1
        self._in_flight += len(jobs)
        return Batch(jobs=jobs, states=[job.start for job in jobs], gaps=[job.gap for job in jobs])

    def commit(self, batch: Batch, states: Sequence[TrackState | None]) -> None:
        """The batch ran: each crop's new state goes to the crops that start from it."""
        if len(states) != len(batch.jobs):
            raise ValueError(f"got {len(states)} states for a batch of {len(batch.jobs)} crops")
        for job, state in zip(batch.jobs, states):
            track = self._tracks[job.track_id]
            track.in_flight -= 1
            if self.stateful:
                children = self._children(job.position)
                for waiting in track.queue:
                    if waiting.position in children:
                        waiting.anchored, waiting.start, waiting.gap = True, state, waiting.frame_index - job.frame_index
                if any(child >= track.added for child in children):
                    track.states[job.position] = (state, job.frame_index)  # for a child not added yet
            self._forget_if_done(job.track_id)
        self._in_flight -= len(batch.jobs)

    def retry(self, batch: Batch) -> None:
        """The batch failed: put its crops back, to run again from the same states."""
        for job in batch.jobs:
            track = self._tracks[job.track_id]
            track.in_flight -= 1
            track.queue.append(job)
            track.queue.sort(key=lambda j: j.frame_index)
        self._in_flight -= len(batch.jobs)

    def end_track(self, track_id: int) -> None:
        if track_id in self._tracks:
            self._tracks[track_id].ended = True
            self._forget_if_done(track_id)

    def _forget_if_done(self, track_id: int) -> None:
        track = self._tracks[track_id]
        if track.ended and not track.queue and not track.in_flight:
            del self._tracks[track_id]

    @property
    def ready(self) -> int:
        """Crops that could be dispatched right now."""
        return sum(job.anchored for track in self._tracks.values() for job in track.queue)

    @property
    def pending(self) -> int:
        """Crops added but not yet dispatched."""
        return sum(len(track.queue) for track in self._tracks.values())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def tracks(self) -> int:
        """Tracks held: alive, or ended with crops still to run."""
        return len(self._tracks)

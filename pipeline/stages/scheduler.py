"""The crop scheduler: which face crops go to the super-resolution backend together.

Warm starts make each track a chain: frame t's latent search starts from frame t-1's result,
so a track's crops run strictly in frame order, one at a time. Crops of different tracks are
independent and are batched together, up to the batch size, oldest frames first so that whole
frames finish (and can be written) as early as possible. For a stateless backend every crop is
independent and batches simply fill in frame order.

The scheduler keeps each track's last committed state. A batch that fails (say, its Ray actor
died) is handed back with `retry`, and its crops run again from the same committed states:
nothing is lost and nothing committed is computed twice. Both engines use it; the state is
plain tensors, so it travels with the crop to whichever actor is free.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import deque
from typing import Any, Sequence

from models.backends.base import TrackState


@dataclasses.dataclass
class CropJob:
    """One face crop waiting for super-resolution."""

    frame_index: int
    track_id: int
    seed: int
    payload: Any  # what the engine needs to run it: the aligned crop, or a Ray object ref


@dataclasses.dataclass
class Batch:
    jobs: list[CropJob]
    states: list[TrackState | None]  # the committed state of each job's track (None: cold start)


def crop_seed(base_seed: int, track_id: int, frame_index: int) -> int:
    """A seed that depends only on (base seed, track, frame): the same in every engine and run."""
    digest = hashlib.blake2b(f"{base_seed}:{track_id}:{frame_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # fits a signed 64-bit torch seed


class CropScheduler:
    """Batches crops, keeping each track's crops in frame order when the backend is stateful.

    Contract: `add` a track's crops in increasing frame order; call `commit` with the states the
    backend returned for a batch from `next_batch`, or `retry` if it failed; call `end_track`
    when the tracker says a track is over (its state is dropped once its last crop is done).
    """

    def __init__(self, *, stateful: bool, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.stateful = stateful
        self.batch_size = batch_size
        self._queues: dict[int, deque[CropJob]] = {}  # track id -> crops not yet dispatched
        self._busy: set[int] = set()  # tracks with a crop in flight (stateful backends only)
        self._states: dict[int, TrackState | None] = {}  # track id -> last committed state
        self._ended: set[int] = set()
        self._in_flight = 0

    def add(self, job: CropJob) -> None:
        queue = self._queues.setdefault(job.track_id, deque())
        if queue and queue[-1].frame_index >= job.frame_index:
            raise ValueError(
                f"track {job.track_id}: crop of frame {job.frame_index} added after frame {queue[-1].frame_index}"
            )
        queue.append(job)

    def next_batch(self, limit: int | None = None) -> Batch | None:
        """Up to `batch_size` (and `limit`) crops that may run now, or None if none may."""
        ready = [tid for tid, q in self._queues.items() if q and tid not in self._busy]
        if not ready:
            return None
        size = min(self.batch_size, limit or self.batch_size)
        jobs: list[CropJob] = []
        if self.stateful:  # at most one crop per track: the next needs this one's state
            ready.sort(key=lambda tid: self._queues[tid][0].frame_index)
            for tid in ready[:size]:
                jobs.append(self._queues[tid].popleft())
                self._busy.add(tid)
        else:  # any crops, oldest frames first
            heads = sorted(ready, key=lambda tid: self._queues[tid][0].frame_index)
            while heads and len(jobs) < size:
                tid = min(heads, key=lambda t: self._queues[t][0].frame_index)
                jobs.append(self._queues[tid].popleft())
                if not self._queues[tid]:
                    heads.remove(tid)
        self._in_flight += len(jobs)
        return Batch(jobs=jobs, states=[self._states.get(job.track_id) for job in jobs])

    def commit(self, batch: Batch, states: Sequence[TrackState | None]) -> None:
        """The batch ran: remember each track's new state and release its next crop."""
        if len(states) != len(batch.jobs):
            raise ValueError(f"got {len(states)} states for a batch of {len(batch.jobs)} crops")
        for job, state in zip(batch.jobs, states):
            self._states[job.track_id] = state
            self._busy.discard(job.track_id)
            self._forget_if_done(job.track_id)
        self._in_flight -= len(batch.jobs)

    def retry(self, batch: Batch) -> None:
        """The batch failed: put its crops back at the front, to run again from the same states."""
        for job in reversed(batch.jobs):
            self._queues.setdefault(job.track_id, deque()).appendleft(job)
            self._busy.discard(job.track_id)
        self._in_flight -= len(batch.jobs)

    def end_track(self, track_id: int) -> None:
        self._ended.add(track_id)
        self._forget_if_done(track_id)

    def _forget_if_done(self, track_id: int) -> None:
        if track_id in self._ended and not self._queues.get(track_id) and track_id not in self._busy:
            self._queues.pop(track_id, None)
            self._states.pop(track_id, None)
            self._ended.discard(track_id)

    @property
    def ready(self) -> int:
        """Crops that could be dispatched right now."""
        if self.stateful:
            return sum(1 for tid, q in self._queues.items() if q and tid not in self._busy)
        return self.pending

    @property
    def pending(self) -> int:
        """Crops added but not yet dispatched."""
        return sum(len(q) for q in self._queues.values())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def tracks_with_state(self) -> int:
        return len(self._states)

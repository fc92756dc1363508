"""The crop scheduler keeps warm-start chains in order, batches across tracks, and survives failures."""

import pytest
import torch

from pipeline.stages.scheduler import CropJob, CropScheduler, crop_seed


def job(frame, track):
    return CropJob(frame_index=frame, track_id=track, seed=crop_seed(0, track, frame), payload=(frame, track))


def drain(scheduler, run):
    """Run every batch to completion with `run(batch) -> states`; returns the batches' job keys."""
    order = []
    while (batch := scheduler.next_batch()) is not None:
        order.append([(j.frame_index, j.track_id) for j in batch.jobs])
        scheduler.commit(batch, run(batch))
    return order


def test_stateful_backend_gets_one_crop_per_track_per_batch_in_frame_order():
    s = CropScheduler(stateful=True, batch_size=8)
    for frame in range(3):
        for track in (1, 2):
            s.add(job(frame, track))
    order = drain(s, lambda b: [{"w": torch.tensor([j.frame_index])} for j in b.jobs])
    assert order == [[(0, 1), (0, 2)], [(1, 1), (1, 2)], [(2, 1), (2, 2)]]


def test_each_crop_starts_from_its_tracks_previous_state():
    s = CropScheduler(stateful=True, batch_size=4)
    for frame in range(4):
        s.add(job(frame, 7))
    seen = []

    def run(batch):
        seen.append([None if st is None else int(st["w"]) for st in batch.states])
        return [{"w": torch.tensor(j.frame_index)} for j in batch.jobs]

    drain(s, run)
    assert seen == [[None], [0], [1], [2]]  # a cold start, then each frame warm from the last


def test_a_crop_is_not_dispatched_while_its_tracks_previous_crop_is_in_flight():
    s = CropScheduler(stateful=True, batch_size=4)
    s.add(job(0, 1))
    s.add(job(1, 1))
    first = s.next_batch()
    assert [j.frame_index for j in first.jobs] == [0]
    assert s.next_batch() is None
    s.commit(first, [None])
    assert [j.frame_index for j in s.next_batch().jobs] == [1]


def test_batch_size_is_respected_and_oldest_frames_go_first():
    s = CropScheduler(stateful=True, batch_size=2)
    s.add(job(5, 3))
    s.add(job(1, 1))
    s.add(job(2, 2))
    batch = s.next_batch()
    assert [(j.frame_index, j.track_id) for j in batch.jobs] == [(1, 1), (2, 2)]


def test_stateless_backend_batches_a_tracks_frames_together():
    s = CropScheduler(stateful=False, batch_size=3)
    for frame in range(4):
        s.add(job(frame, 1))
    s.add(job(0, 2))
    order = drain(s, lambda b: [None] * len(b.jobs))
    assert order == [[(0, 1), (0, 2), (1, 1)], [(2, 1), (3, 1)]]


def test_a_failed_batch_runs_again_from_the_same_committed_states():
    s = CropScheduler(stateful=True, batch_size=4)
    for frame in range(3):
        s.add(job(frame, 1))
    s.commit(s.next_batch(), [{"w": torch.tensor(10)}])
    failed = s.next_batch()
    assert int(failed.states[0]["w"]) == 10
    s.retry(failed)
    again = s.next_batch()
    assert [j.frame_index for j in again.jobs] == [1]
    assert int(again.states[0]["w"]) == 10
    assert s.in_flight == 1


def test_ended_tracks_release_their_state():
    s = CropScheduler(stateful=True, batch_size=4)
    s.add(job(0, 1))
    s.add(job(0, 2))
    s.end_track(1)
    drain(s, lambda b: [{"w": torch.zeros(1)} for _ in b.jobs])
    assert s.tracks_with_state == 1  # track 2 is still alive; track 1's state is gone


def test_crops_must_be_added_in_frame_order():
    s = CropScheduler(stateful=True, batch_size=4)
    s.add(job(3, 1))
    with pytest.raises(ValueError, match="frame 2 added after frame 3"):
        s.add(job(2, 1))


def test_seeds_depend_only_on_base_track_and_frame():
    assert crop_seed(0, 1, 2) == crop_seed(0, 1, 2)
    assert len({crop_seed(0, 1, 2), crop_seed(1, 1, 2), crop_seed(0, 2, 2), crop_seed(0, 1, 3)}) == 4
    assert 0 <= crop_seed(123, 456, 789) < 2**63

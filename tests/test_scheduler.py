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
    assert s.tracks == 1  # track 2 is still alive; track 1's state is gone


def test_crops_must_be_added_in_frame_order():
    s = CropScheduler(stateful=True, batch_size=4)
    s.add(job(3, 1))
    with pytest.raises(ValueError, match="frame 2 added after frame 3"):
        s.add(job(2, 1))


def test_seeds_depend_only_on_base_track_and_frame():
    assert crop_seed(0, 1, 2) == crop_seed(0, 1, 2)
    assert len({crop_seed(0, 1, 2), crop_seed(1, 1, 2), crop_seed(0, 2, 2), crop_seed(0, 1, 3)}) == 4
    assert 0 <= crop_seed(123, 456, 789) < 2**63


# Keyframe segments (sr.segment): keyframes chain from keyframes; each segment is a chain of its own.

def frame_state(batch):
    """A stand-in backend: each crop's new state names its frame."""
    return [{"w": torch.tensor(j.frame_index)} for j in batch.jobs]


def starts(batch):
    return {j.frame_index: None if st is None else int(st["w"]) for j, st in zip(batch.jobs, batch.states)}


def test_keyframes_run_ahead_and_segments_run_side_by_side():
    s = CropScheduler(stateful=True, batch_size=8, segment=4)
    for frame in range(10):
        s.add(job(frame, 1))
    rounds = []
    while (batch := s.next_batch()) is not None:
        assert s.next_batch() is None  # all that may run was in the batch
        rounds.append(starts(batch))
        s.commit(batch, frame_state(batch))
    assert rounds == [
        {0: None},  # the first keyframe, cold
        {4: 0, 1: 0},  # keyframe 4 from keyframe 0, the segment's next crop from it too
        {8: 4, 2: 1, 5: 4},  # keyframes first, then the oldest frames
        {3: 2, 6: 5, 9: 8},
        {7: 6},
    ]


def test_each_segment_chains_from_its_keyframe():
    s = CropScheduler(stateful=True, batch_size=8, segment=3)
    for frame in range(7):
        s.add(job(frame, 1))
    seen = {}

    def run(batch):
        seen.update(starts(batch))
        return [{"w": torch.tensor(100 + j.frame_index)} for j in batch.jobs]

    drain(s, run)
    assert seen == {0: None, 1: 100, 2: 101, 3: 100, 4: 103, 5: 104, 6: 103}


def test_crops_added_after_their_parent_ran_are_ready_at_once():
    s = CropScheduler(stateful=True, batch_size=8, segment=4)
    s.add(job(0, 1))
    batch = s.next_batch()
    s.commit(batch, frame_state(batch))
    s.add(job(1, 1))  # the next chunk's crops arrive after keyframe 0 is done
    s.add(job(2, 1))
    assert s.ready == 1
    assert starts(s.next_batch()) == {1: 0}


def test_segments_spread_over_two_actors_and_survive_a_failed_batch():
    s = CropScheduler(stateful=True, batch_size=8, segment=4)
    for frame in range(8):
        s.add(job(frame, 1))
    first = s.next_batch()
    s.commit(first, frame_state(first))
    a = s.next_batch(limit=1)  # two actors share the two ready crops; the keyframe goes first
    b = s.next_batch(limit=1)
    assert starts(a) == {4: 0} and starts(b) == {1: 0}
    s.retry(b)  # b's actor died: its crop runs again from keyframe 0's state
    s.commit(a, frame_state(a))
    again = s.next_batch()
    assert starts(again) == {1: 0, 5: 4}
    assert s.in_flight == 2


def test_a_cut_starts_a_new_track_with_a_cold_keyframe():
    s = CropScheduler(stateful=True, batch_size=8, segment=4)
    for frame in range(3):
        s.add(job(frame, 1))
    s.end_track(1)  # a shot cut at frame 3: the tracker ends every track and starts new ids
    s.add(job(3, 2))
    seen = {}

    def run(batch):
        seen.update({(j.track_id, j.frame_index): st for j, st in zip(batch.jobs, starts(batch).values())})
        return frame_state(batch)

    drain(s, run)
    assert seen == {(1, 0): None, (1, 1): 0, (1, 2): 1, (2, 3): None}
    assert s.tracks == 1


def test_segment_has_no_effect_on_stateless_backends():
    s = CropScheduler(stateful=False, batch_size=8, segment=4)
    for frame in range(5):
        s.add(job(frame, 1))
    assert [j.frame_index for j in s.next_batch().jobs] == [0, 1, 2, 3, 4]


def test_a_long_track_holds_only_the_states_its_next_crops_need():
    s = CropScheduler(stateful=True, batch_size=8, segment=4)
    for frame in range(0, 400, 8):  # a stream: crops arrive a chunk at a time and run before the next chunk
        for f in range(frame, frame + 8):
            s.add(job(f, 1))
        drain(s, frame_state)
        assert len(s._tracks[1].states) <= 2  # the last keyframe's and the last crop's


def test_each_crop_says_how_many_frames_its_start_is_from_it():
    s = CropScheduler(stateful=True, batch_size=8, segment=4)
    for frame in (0, 1, 2, 3, 5, 9):  # frame 4 has no crop (the face was covered): the next keyframe is frame 5
        s.add(job(frame, 1))
    gaps = {}

    def run(batch):
        gaps.update({j.frame_index: g for j, g in zip(batch.jobs, batch.gaps)})
        return frame_state(batch)

    drain(s, run)
    assert gaps == {0: 1, 1: 1, 2: 1, 3: 1, 5: 5, 9: 4}  # keyframe 5 starts from keyframe 0; 9 (in 5's segment) from 5

"""The Ray engine: same frames as the local engine, survives a dead actor, honours resources."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.engines import run
from synth import audio_packets, make_video, psnr, video_frames

ROOT = Path(__file__).resolve().parent.parent
FAST = ["video.preset=ultrafast", "engine.chunk=4", "engine.max_frames_in_flight=12", "sr.batch_size=4"]


@pytest.fixture(scope="module")
def local_output(sample_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.mp4"
    report = run(sample_clip, out, cfg=load_config(overrides=FAST), progress=False)
    return out, report


def assert_same_video(a, b):
    times_a, frames_a = video_frames(a)
    times_b, frames_b = video_frames(b)
    assert times_a == times_b
    assert len(frames_a) == len(frames_b)
    for i, (x, y) in enumerate(zip(frames_a, frames_b)):
        assert np.array_equal(x, y), f"frame {i} differs"


@pytest.mark.slow
def test_ray_output_equals_local_output(ray_session, sample_clip, local_output, tmp_path):
    out = tmp_path / "ray.mp4"
    cfg = load_config(overrides=[*FAST, "engine.engine=ray", "engine.sr_actors=2"])
    report = run(sample_clip, out, cfg=cfg, progress=False)
    assert report["engine"] == "ray" and report["frames_out"] == local_output[1]["frames_out"]
    assert report["tracks"] == local_output[1]["tracks"]
    assert len(report["faces"]) == len(local_output[1]["faces"]) > 0
    assert_same_video(out, local_output[0])
    assert audio_packets(out) == audio_packets(sample_clip)
    # One report for every engine: the same keys, stages and counts (placement and timings aside).
    local = local_output[1]
    assert list(report) == list(local) and list(report["stage_seconds"]) == list(local["stage_seconds"])
    assert all(report["stage_seconds"][s] > 0 for s in ("decode", "detect_track", "composite", "encode"))
    same = ("frames_in", "frames_out", "frames_expected", "warnings", "backend", "detections", "faces", "tracks", "cuts",
            "faces_reaching_eps", "faces_model_ran")
    assert {k: report[k] for k in same} == {k: local[k] for k in same}
    assert report["frames_in"] == report["frames_out"] == len(video_frames(sample_clip)[0])
    assert local["sr_actors"] == [] and len(report["sr_actors"]) == 2


class KillOnce:
    """Kills the SR actor that ran the second batch, once; Ray restarts it."""

    def __init__(self, ray):
        self.ray, self.killed = ray, 0

    def after_batch(self, actor, batch_number):
        if batch_number == 2 and not self.killed:
            self.ray.kill(actor, no_restart=False)
            self.killed += 1


@pytest.mark.slow
def test_killed_sr_actor_is_restarted_and_every_frame_is_written_once(ray_session, sample_clip, local_output, tmp_path):
    from pipeline.engines.ray import run_video_ray

    out = tmp_path / "ray.mp4"
    hooks = KillOnce(ray_session)
    cfg = load_config(overrides=[*FAST, "engine.engine=ray", "engine.sr_actors=1"])
    report = run_video_ray(sample_clip, out, cfg=cfg, progress=False, hooks=hooks)
    assert hooks.killed == 1
    assert report["frames_out"] == local_output[1]["frames_out"]
    assert sorted((f["frame"], f["track_id"]) for f in report["faces"]) == sorted(
        (f["frame"], f["track_id"]) for f in local_output[1]["faces"]
    )
    assert_same_video(out, local_output[0])


class Interrupt:
    def after_batch(self, actor, batch_number):
        raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupt_leaves_no_output_and_no_partial_file(ray_session, sample_clip, tmp_path):
    from pipeline.engines.ray import run_video_ray

    out = tmp_path / "ray.mp4"
    cfg = load_config(overrides=[*FAST, "engine.engine=ray"])
    with pytest.raises(KeyboardInterrupt):
        run_video_ray(sample_clip, out, cfg=cfg, progress=False, hooks=Interrupt())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_declared_resources_reach_the_sr_actors(ray_session, sample_clip, tmp_path):
    cfg = load_config(overrides=[*FAST, "engine.engine=ray", "engine.sr_actors=2", "engine.sr_resources={accel: 1}"])
    report = run(sample_clip, tmp_path / "o.mp4", cfg=cfg, progress=False)
    assert [a["resources"].get("accel") for a in report["sr_actors"]] == [1.0, 1.0]


def test_resources_the_cluster_lacks_are_a_clear_error_not_a_hang(ray_session, sample_clip, tmp_path):
    cfg = load_config(overrides=[*FAST, "engine.engine=ray", "engine.num_gpus=1"])
    with pytest.raises(UserError, match="need 1 GPU in all but the Ray cluster has 0"):
        run(sample_clip, tmp_path / "o.mp4", cfg=cfg, progress=False)
    cfg = load_config(overrides=[*FAST, "engine.engine=ray", "engine.sr_actors=3", "engine.sr_resources={accel: 1}"])
    with pytest.raises(UserError, match="need 3 accel"):
        run(sample_clip, tmp_path / "o.mp4", cfg=cfg, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_run_removes_its_partial_output_whatever_its_encoder_is_doing(ray_session, tmp_path):
    """The driver kills the encoder and removes the file itself: the encoder may be gone (a signal to
    the whole process group, as `timeout` and service managers send, stops Ray's workers too) or
    busy behind chunks whose faces are still to come (asked to drop it, it was waited for 30 s,
    and the file was left)."""
    import ray

    from pipeline.engines import ray as ray_engine

    @ray.remote
    class Busy:
        def write(self):
            import time
            time.sleep(120)

    partial = tmp_path / ".out.x.partial.mp4"
    partial.write_bytes(b"header")
    started = ray_engine._Started()
    encoder = Busy.remote()
    encoder.write.remote()
    started.actors.append(encoder)
    started.partials.add(partial)
    ray_engine._stop(started)
    assert list(tmp_path.iterdir()) == [] and started.actors == [] and not started.partials


@pytest.mark.slow
def test_an_actor_set_up_error_reaches_the_driver_as_itself(ray_session, tmp_path):
    """The encoder actor cannot open the output (WebM cannot hold AAC): the driver gets the
    UserError itself, one line for the CLI, not a dead actor's traceback; no file is left."""
    src = make_video(tmp_path / "in.mp4", frames=6, audio=("aac",))
    cfg = load_config(overrides=[*FAST, "engine.engine=ray"])
    with pytest.raises(UserError, match="cannot hold the input's aac audio"):
        run(src, tmp_path / "o.webm", cfg=cfg, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["in.mp4"]


TWO_NODES = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from pipeline.config import load_config
    from pipeline.engines import run

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"slot": 1}})
    cluster.add_node(num_cpus=1, resources={"slot": 1})
    cluster.wait_for_nodes()
    cfg = load_config(overrides=[
        "video.preset=ultrafast", "engine.engine=ray", f"engine.ray_address={cluster.address}",
        "engine.sr_actors=2", "engine.sr_resources={slot: 1}", "engine.chunk=4",
    ])
    report = run(sys.argv[1], sys.argv[2], cfg=cfg, progress=False)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]} if ray.is_initialized() else None
    print(json.dumps({"sr_nodes": [a["node"] for a in report["sr_actors"]], "frames": report["frames_out"]}))
    cluster.shutdown()
    """
)


@pytest.mark.slow
def test_two_node_cluster_runs_sr_actors_on_both_nodes(sample_clip, tmp_path):
    # Its own process: a driver can be connected to one Ray cluster only, and the session's is taken.
    result = subprocess.run(
        [sys.executable, "-c", TWO_NODES, str(sample_clip), str(tmp_path / "o.mp4")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(set(data["sr_nodes"])) == 2
    assert data["frames"] == len(video_frames(tmp_path / "o.mp4")[0])


@pytest.mark.slow
def test_keyframe_segments_give_the_same_video_in_both_engines(ray_session, sample_clip, tmp_path):
    """`sr.segment`: one face's crops spread over two SR actors; every engine, every placement
    of the batches, gives the same frames (to the last bits of float sums), each face reported once with its role."""
    from synth import tiny_stylegan2_checkpoint

    checkpoint = tiny_stylegan2_checkpoint(tmp_path / "tiny.pth")
    pulse = [*FAST, "sr.backend=pulse", f"sr.generator={checkpoint}", "sr.out_size=32", "sr.steps=4", "sr.warm_steps=2",
             "sr.segment=3", "sr.fidelity=0"]
    local = run(sample_clip, tmp_path / "local.mp4", cfg=load_config(overrides=pulse), progress=False)
    ray_run = run(sample_clip, tmp_path / "ray.mp4", cfg=load_config(overrides=[*pulse, "engine.engine=ray", "engine.sr_actors=2"]),
                  progress=False)
    # Same frames and timestamps; pixels as close as float sums allow: a convolution's result
    # depends in its last bits on the batch it runs in, and the two engines batch differently.
    times_ray, frames_ray = video_frames(tmp_path / "ray.mp4")
    times_local, frames_local = video_frames(tmp_path / "local.mp4")
    assert times_ray == times_local
    worst = min(psnr(a, b) for a, b in zip(frames_ray, frames_local, strict=True))
    assert worst > 40, worst
    key = lambda face: (face["frame"], face["track_id"])  # noqa: E731
    assert [(key(f), f["keyframe"]) for f in sorted(ray_run["faces"], key=key)] == [
        (key(f), f["keyframe"]) for f in sorted(local["faces"], key=key)]
    assert len({key(f) for f in local["faces"]}) == len(local["faces"]) > 6
    for track in {f["track_id"] for f in local["faces"]}:
        roles = [f["keyframe"] for f in sorted(local["faces"], key=key) if f["track_id"] == track]
        assert roles == [i % 3 == 0 for i in range(len(roles))]


@pytest.mark.slow
def test_a_folder_on_ray_runs_videos_side_by_side_on_one_sr_pool(ray_session, sample_clip, tmp_path, capsys, caplog, monkeypatch):
    import shutil

    from pipeline.engines.ray_pool import SRPool
    from pipeline.engines.ray_video import VideoJob
    from run_pipeline import main

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_clip, src / "sample.mp4")
    make_video(src / "a.mp4", frames=5)
    make_video(src / "b.mkv", frames=7)
    (src / "broken.mp4").write_bytes(b"not a video")
    pools, active, most, skipped = [], [], [0], []
    real_pool, real_start, real_finish = SRPool.start, VideoJob.start.__func__, VideoJob.finish

    def start(cls, *args, **kwargs):
        started = args[5]
        before = list(started.actors)
        try:
            video = real_start(cls, *args, **kwargs)
        except Exception:
            skipped.append(started.actors == before)  # the skipped video's actors are stopped at once
            raise
        active.append(video)
        most[0] = max(most[0], len(active))
        return video

    def finish(self, started):
        active.remove(self)
        return real_finish(self, started)

    monkeypatch.setattr(SRPool, "start", classmethod(lambda cls, *a, **k: (pools.append(1), real_pool.__func__(cls, *a, **k))[1]))
    monkeypatch.setattr(VideoJob, "start", classmethod(start))
    monkeypatch.setattr(VideoJob, "finish", finish)
    out = tmp_path / "out"
    sets = [a for o in [*FAST, "engine.videos_in_parallel=2", "engine.sr_actors=2"] for a in ("--set", o)]
    assert main(["-q", "video", str(src), "-o", str(out), "--engine", "ray", *sets]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["facezoom: error: 1 of 4 videos were skipped (see the warnings above)"]
    assert any("skipped" in r.getMessage() and "broken.mp4" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv", "sample.mp4"]
    assert len(video_frames(out / "a.mp4")[0]) == 5 and len(video_frames(out / "b.mkv")[0]) == 7
    assert video_frames(out / "sample.mp4")[0] == video_frames(sample_clip)[0]
    assert audio_packets(out / "sample.mp4") == audio_packets(sample_clip)
    assert pools == [1] and most[0] == 2  # one SR pool (the models loaded once), two videos at a time
    assert skipped == [True]


CLUSTER_FOLDER = textwrap.dedent(
    """
    import json, sys
    from ray.cluster_utils import Cluster
    from pipeline.config import load_config
    from pipeline.engines.ray import run_videos_ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    jobs = [(path, path.replace(".mp4", f".out.mp4")) for path in sys.argv[1:]]
    result = {}
    for shared in ("false", "true"):
        cfg = load_config(overrides=[
            "video.preset=ultrafast", "engine.engine=ray", f"engine.ray_address={cluster.address}", "engine.chunk=4",
            "engine.videos_in_parallel=2", f"engine.shared_storage={shared}",
        ])
        reports = run_videos_ray([(i, o.replace(".out", f".{shared}")) for i, o in jobs], cfg=cfg, progress=False)
        result[shared] = {"nodes": [sorted(set(r["video_actors"].values())) for r in reports],
                          "frames": [r["frames_out"] for r in reports], "head": cluster.head_node.node_id}
    print(json.dumps(result))
    cluster.shutdown()
    """
)


@pytest.mark.slow
def test_on_a_cluster_with_shared_storage_videos_run_on_every_node(sample_clip, tmp_path):
    # Its own process: a driver can be connected to one Ray cluster only, and the session's is taken.
    clips = [make_video(tmp_path / f"v{i}.mp4", frames=9) for i in range(2)]
    result = subprocess.run([sys.executable, "-c", CLUSTER_FOLDER, *map(str, clips)],
                            capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["false"]["frames"] == data["true"]["frames"] == [9, 9]
    for shared in ("false", "true"):
        for i in range(2):
            assert len(video_frames(tmp_path / f"v{i}.{shared}.mp4")[0]) == 9
    assert all(nodes == [data["false"]["head"]] for nodes in data["false"]["nodes"])  # the driver's node: its files
    assert len({node for nodes in data["true"]["nodes"] for node in nodes}) == 2  # spread over both nodes


def test_tracked_chunks_reach_the_scheduler_in_frame_order_whatever_order_they_arrive(monkeypatch):
    """`ray.wait` may hand one tracker's results back out of order; the scheduler must not see that."""
    from collections import deque
    from types import SimpleNamespace

    import pipeline.engines.ray_video as ray_video
    from pipeline.stages.chunk import SRStep, TrackedChunk
    from pipeline.stages.superres import BackendInfo

    cfg = load_config(overrides=["sr.segment=1"])
    video = ray_video.VideoJob.__new__(ray_video.VideoJob)
    video.step = SRStep(cfg, BackendInfo("pulse", 16, 64, "ffhq", stateful=True, keyframes=False, any_input_size=False, device="cpu"))
    video.chunks = deque(ray_video._Chunk(n, frames_ref=None, count=4) for n in range(3))
    monkeypatch.setattr(ray_video, "get", lambda ref: ref)  # the "refs" below are the results themselves

    def tracked(n):
        return TrackedChunk([[SimpleNamespace(frame_index=f, track_id=1)] for f in range(4 * n, 4 * n + 4)], [], [])

    video.on_tracked(tracked(2), video.chunks[2])
    video.on_tracked(tracked(1), video.chunks[1])
    assert [c.pending for c in video.chunks] == [0, 0, 0] and not any(c.ready for c in video.chunks)
    video.on_tracked(tracked(0), video.chunks[0])
    assert [c.pending for c in video.chunks] == [4, 4, 4]
    order = []
    while (batch := video.step.scheduler.next_batch()) is not None:
        order += [j.frame_index for j in batch.jobs]
        video.step.scheduler.commit(batch, [{"w": 0}] * len(batch.jobs))
    assert order == list(range(12))

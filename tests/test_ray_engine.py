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
from synth import audio_packets, make_video, video_frames

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
    of the batches, gives the same frames, and each face is reported once with its role."""
    from synth import tiny_stylegan2_checkpoint

    checkpoint = tiny_stylegan2_checkpoint(tmp_path / "tiny.pth")
    pulse = [*FAST, "sr.backend=pulse", f"sr.generator={checkpoint}", "sr.out_size=32", "sr.steps=4", "sr.warm_steps=2",
             "sr.segment=3", "sr.fidelity=0"]
    local = run(sample_clip, tmp_path / "local.mp4", cfg=load_config(overrides=pulse), progress=False)
    ray_run = run(sample_clip, tmp_path / "ray.mp4", cfg=load_config(overrides=[*pulse, "engine.engine=ray", "engine.sr_actors=2"]),
                  progress=False)
    assert_same_video(tmp_path / "ray.mp4", tmp_path / "local.mp4")
    key = lambda face: (face["frame"], face["track_id"])  # noqa: E731
    assert sorted(ray_run["faces"], key=key) == sorted(local["faces"], key=key)
    assert len({key(f) for f in local["faces"]}) == len(local["faces"]) > 6
    for track in {f["track_id"] for f in local["faces"]}:
        roles = [f["keyframe"] for f in sorted(local["faces"], key=key) if f["track_id"] == track]
        assert roles == [i % 3 == 0 for i in range(len(roles))]

"""Step 2 (super-resolving faces) is written once: every engine and command makes its requests with
`SRRequest.make` and runs them with `run_batch`, so a request field added there reaches all of them."""

import re
from pathlib import Path

import pytest

import pipeline.stages.chunk as chunk
import pipeline.stages.superres as superres
from pipeline.stages.superres import SRRequest

ROOT = Path(__file__).resolve().parents[1]


def _calls(pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in ROOT.glob("pipeline/**/*.py") if re.search(pattern, p.read_text())}


def test_requests_are_made_and_run_in_one_place():
    assert _calls(r"\bSRRequest\(") == set()  # built only by SRRequest.make
    assert _calls(r"SRRequest\.make\(") == {"pipeline/stages/chunk.py", "pipeline/creative/zoom.py", "pipeline/creative/enhance.py"}
    assert _calls(r"\brun_batch\(") == {"pipeline/stages/superres.py", "pipeline/stages/chunk.py", "pipeline/engines/ray_actors.py",
                                        "pipeline/creative/zoom.py", "pipeline/creative/enhance.py"}
    assert _calls(r"\bsolve\(|\.super_resolve\(") == {"pipeline/stages/superres.py"}  # the backend is called by run_batch only
    # The Ray driver sends each request whole: one argument, not its fields.
    pool = (ROOT / "pipeline/engines/ray_pool.py").read_text()
    assert re.findall(r"\.run\.remote\(([^)]*)\)", pool) == ["request"]


@pytest.mark.slow
def test_a_field_added_in_make_reaches_the_video_zoom_and_enhance_runs(monkeypatch, sample_clip, tmp_path):
    """A stand-in for a new request field, filled in `SRRequest.make` from the settings (here: from
    sr.seed), is seen by every `run_batch` of a video run, a zoom and an enhance loop."""
    from run_pipeline import main

    real_make, real_run, seen = SRRequest.make.__func__, superres.run_batch, []

    def make(cls, sr_cfg, **fields):
        request = real_make(cls, sr_cfg, **fields)
        request.probe = sr_cfg.seed
        return request

    def run_batch(backend, request):
        seen.append(request.probe)
        return real_run(backend, request)

    monkeypatch.setattr(SRRequest, "make", classmethod(make))
    monkeypatch.setattr(superres, "run_batch", run_batch)
    monkeypatch.setattr(chunk, "run_batch", run_batch)
    picture = tmp_path / "face.png"
    assert main(["-q", "sample", "-o", str(picture)]) == 0
    fast = ["--set", "video.preset=ultrafast", "-w", "0"]
    runs = {
        7: ["video", str(sample_clip), "-o", str(tmp_path / "v.mp4"), *fast],
        8: ["zoom", str(picture), "-o", str(tmp_path / "z.mp4"), "--duration", "0.5", "--fps", "6", *fast],
        9: ["enhance", str(picture), "-o", str(tmp_path / "e.png"), "--iterations", "2", "--samples", "1"],
    }
    for seed, args in runs.items():
        seen.clear()
        assert main(["-q", *args, "--set", f"sr.seed={seed}"]) == 0
        assert seen and set(seen) == {seed}, (args[0], seen)

"""The Ray engine's pool of super-resolution actors: started once per run, shared by its videos.

The driver (`pipeline/engines/ray.py`) offers each free actor a batch (`dispatch`): one
`SRRequest` made by a video's `SRStep`, carrying everything the batch needs, its crops as object
refs. State travels with the request, so any actor can take any track; an actor that dies costs
only its batches (`on_death`), which run again from the same states.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import ray

from pipeline.engines.ray_actors import SRActor, get
from pipeline.errors import RunAborted, UserError
from pipeline.stages.scheduler import Batch
from pipeline.stages.superres import BackendInfo

log = logging.getLogger(__name__)

BATCHES_PER_ACTOR = 2  # one running, one waiting: the next batch's transfer hides behind compute
RESTART_POLL = 0.1  # s between batches offered to an SR actor that Ray is restarting


def _sr_options(cfg) -> dict[str, Any]:
    """Resources for each SR actor, checked against the cluster so nothing waits forever."""
    available = ray.cluster_resources()
    actors = cfg.sr_actors
    gpus = cfg.num_gpus
    if gpus is None:  # automatic: a GPU per actor where the cluster has them, else the CPU
        gpus = min(1.0, available.get("GPU", 0) / actors) if available.get("GPU", 0) else 0.0
    needs = {"GPU": gpus * actors, **{k: v * actors for k, v in cfg.sr_resources.items()}}
    for name, amount in needs.items():
        if amount > available.get(name, 0) + 1e-9:
            raise UserError(
                f"{actors} SR actor(s) need {amount:g} {name} in all but the Ray cluster has "
                f"{available.get(name, 0):g}; lower engine.sr_actors, engine.num_gpus or engine.sr_resources"
            )
    cpus = min(1.0, available.get("CPU", 1) / actors)
    return {"num_cpus": cpus, "num_gpus": gpus, "resources": dict(cfg.sr_resources), "max_restarts": cfg.max_restarts}


@dataclasses.dataclass
class SRPool:
    """The SR actors every video of the run shares, with their load and deaths."""

    actors: list
    backend: BackendInfo  # what every actor runs
    placement: list[dict[str, Any]]  # per SR actor: its node, device and resources (the report's `sr_actors`)
    cfg: Any
    hooks: Any = None
    load: dict[int, int] = dataclasses.field(default_factory=dict)
    deaths: dict[int, int] = dataclasses.field(default_factory=dict)  # per SR actor: deaths seen
    last_death: dict[int, int] = dataclasses.field(default_factory=dict)  # per SR actor: dispatches up to this number failed with it
    dispatched: int = 0
    batches_done: int = 0

    @classmethod
    def start(cls, cfg, started, hooks=None) -> "SRPool":
        """Start the SR actors (`started` keeps them, to be stopped on any exit) and wait for their weights."""
        threads = cfg.engine.sr_threads or max(1, (os.cpu_count() or 2) // (cfg.engine.sr_actors + 1))
        options = _sr_options(cfg.engine)
        actors = [SRActor.options(**options).remote(cfg.sr, cfg.composite, threads) for _ in range(cfg.engine.sr_actors)]
        started.actors += actors
        get([a.ready.remote() for a in actors])  # weights loaded
        infos = get([a.info.remote() for a in actors])
        pool = cls(actors, infos[0][0], [placement for _, placement in infos], cfg, hooks)
        pool.load = {id(a): 0 for a in actors}
        return pool

    def dispatch(self, videos: list, waiting: dict) -> None:
        """First one job to each idle actor, shared out evenly, then a second, queued job each, so an
        actor never waits for the driver. A chunk's frames for the frame model go first (frames are
        independent: any actor takes any chunk); then face batches, videos taking turns: the one
        with most ready crops first."""
        for slot in range(BATCHES_PER_ACTOR):
            free = [a for a in self.actors if self.load[id(a)] == slot]
            for n, actor in enumerate(free):
                video = next((v for v in videos if v.to_upscale), None)
                if video is not None:
                    chunk = video.to_upscale.popleft()
                    seconds_ref, images_ref = actor.upscale.remote(chunk.frames_ref)
                    self._sent(waiting, seconds_ref, video, "upscaled", actor, chunk, images_ref)
                    continue
                video = max(videos, key=lambda v: v.step.ready, default=None)
                if video is None or not video.step.ready:
                    return
                ready = sum(v.step.ready for v in videos)
                batch, request = video.step.next(limit=-(-ready // (len(free) - n)))
                summary_ref, faces_ref = actor.run.remote(request)  # its crops are object refs: the actor fetches their pixels
                self._sent(waiting, summary_ref, video, "sr", actor, batch, faces_ref)

    def _sent(self, waiting: dict, ref, video, kind: str, actor, work, result_ref) -> None:
        self.dispatched += 1
        waiting[ref] = (video, kind, Dispatch(actor, work, result_ref, self.dispatched))
        self.load[id(actor)] += 1

    def returned(self, ctx: "Dispatch") -> None:
        self.load[id(ctx.actor)] -= 1

    def after_batch(self, actor) -> None:
        self.batches_done += 1
        if self.hooks is not None:
            self.hooks.after_batch(actor, self.batches_done)

    def on_death(self, ctx: "Dispatch", err: Exception) -> None:
        """A batch failed because its actor died; past `max_restarts` deaths, drop the actor.

        One death fails every batch the actor held; they count as one: a failed batch sent
        before the last counted death's failures belongs to that death. A batch refused while
        Ray restarts the actor (`ActorUnavailableError`) is no new death: it runs again a moment later.
        """
        key = id(ctx.actor)
        if isinstance(err, ray.exceptions.ActorUnavailableError):
            time.sleep(RESTART_POLL)  # not a busy loop of refused batches while the actor comes back
            return
        if ctx.number > self.last_death.get(key, 0):
            self.deaths[key] = self.deaths.get(key, 0) + 1
            self.last_death[key] = self.dispatched
        if self.deaths[key] > self.cfg.engine.max_restarts and ctx.actor in self.actors:
            self.actors.remove(ctx.actor)  # Ray has given up restarting it
            if not self.actors:
                cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise RunAborted(f"every super-resolution actor died more than engine.max_restarts={self.cfg.engine.max_restarts} "
                                f"times (last: {cause}); an actor that runs out of memory dies this way: lower sr.batch_size "
                                "or engine.sr_actors, or raise engine.max_restarts") from None
            log.warning("a super-resolution actor keeps dying; going on with %d", len(self.actors))
        else:
            what = f"its {len(ctx.work.jobs)} crops run" if isinstance(ctx.work, Batch) else "a chunk's frames run through the frame model"
            log.warning("a super-resolution actor died; %s again", what)


@dataclasses.dataclass
class Dispatch:
    """A job out on an SR actor: a batch of faces, or a chunk of frames for the frame model."""

    actor: Any
    work: Any  # the `Batch`, or the chunk (`ray_video._Chunk`)
    result_ref: Any  # the faces to paste, or the upscaled frames
    number: int  # dispatch order, to tell one death from the next

"""Elastic GRPO: the pool controller borrows GPUs from a running job and gives them back.

Contract (pools/actuators.py, `RayActorTraining`): a job J is steered through the named Ray
actor `r1p-train-J` in namespace `r1platform` with `current_gpus() -> int`,
`checkpoint_and_shrink(gpus)` and `grow(gpus, pool)`. J is the job's `run_name`.

How a resize happens:
1. The controller calls `checkpoint_and_shrink(g)` or `grow(g, pool)`; the actor only records
   the request (latest wins).
2. Trainer rank 0 takes the request at the next step boundary (one actor call per step) and
   `decide`s what it means for this job. A no-op request is dropped there.
3. The workers write the normal checkpoint at that step, report it (Ray Train persists it
   before registering it), and return: `trainer.fit()` ends cleanly.
4. The driver (`run_fits`) sees the resize in the final report, logs a `resize` event line in
   metrics.jsonl, tells the actor what the job now holds, and starts a new trainer with the
   new worker count / pool. Ray Train restores the checkpoint registry (same run name and
   storage path), so the new workers resume from that checkpoint: model, optimizer, RNG and
   data position. A target below one worker pauses the job: nothing is held (engines that
   hold a GPU are stopped too) until a `grow` arrives.

GPU accounting: one train worker = one GPU (a `pool:P` unit on the simulated CPU fleet) on the
job's `train_pool`; a rollout engine counts one GPU when it holds one (GPU mode, or a
`pool:`/`accelerator_type:` unit on the simulated fleet) and is fixed: resizes move only the
train workers. `current_gpus()` drops only after the release and rises once the new workers
run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from r1platform.contracts.actors import NAMESPACE
from r1platform.contracts.actors import training_actor_name as actor_name

__all__ = ["NAMESPACE", "actor_name"]

RESIZE_KEY = "r1p_resize"  # key of the final Ray Train report when fit ends for a resize


# ---------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class Request:
    kind: Literal["shrink", "grow"]
    gpus: int
    pool: str | None = None
    at: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(d["kind"], int(d["gpus"]), d.get("pool"), float(d.get("at", 0.0)))


@dataclass(frozen=True)
class Resize:
    kind: Literal["shrink", "grow"]
    workers_before: int
    workers_after: int  # 0 = pause
    pool_before: str | None
    pool_after: str | None
    gpus_before: int
    gpus_after: int
    requested_gpus: int
    requested_at: float = 0.0

    @property
    def reason(self) -> str:
        if self.workers_after == 0:
            return "pause"
        if self.kind == "shrink":
            return "reclaim"
        return "grow" if self.pool_after == self.pool_before else "move"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Resize:
        return cls(**json.loads(text))


def engine_gpus(mode: str, count: int, accelerator_type: str | None, pool: str | None) -> int:
    """GPUs the rollout engines hold (see rollout.engine_actor_options)."""
    if mode == "gpu" or pool or accelerator_type:
        return count
    return 0


def job_gpus(workers: int, engines: int) -> int:
    """GPUs the job holds: nothing while paused (engines that hold one are stopped too)."""
    return workers + engines if workers > 0 else 0


def plan_workers(gpus: int, engines: int, prompts_per_step: int) -> int:
    """Most train workers that fit in `gpus` next to the engines and split the step's prompts
    evenly; 0 when not even one fits (the job pauses)."""
    for w in range(min(gpus - engines, prompts_per_step), 0, -1):
        if prompts_per_step % w == 0:
            return w
    return 0


def decide(
    req: Request, *, workers: int, pool: str | None, engines: int, prompts_per_step: int
) -> Resize | None:
    """What a request means for a job running `workers` workers on `pool` (0 = paused).

    Shrink never grows and grow never shrinks on the same pool; a grow naming another pool
    moves every worker there. None: nothing to do (the request is dropped)."""
    before = job_gpus(workers, engines)
    if req.kind == "shrink":
        if workers == 0 or req.gpus >= before:
            return None
        new_pool = pool
        after = min(plan_workers(req.gpus, engines, prompts_per_step), workers)
    else:
        new_pool = req.pool or pool
        after = plan_workers(req.gpus, engines, prompts_per_step)
        if new_pool == pool:
            after = max(after, workers)
        if after == 0:
            return None
    if after == workers and new_pool == pool:
        return None
    return Resize(
        req.kind, workers, after, pool, new_pool, before, job_gpus(after, engines), req.gpus,
        req.at,
    )  # fmt: skip


# ---------------------------------------------------------------------------- control actor


class JobControl:
    """The named control actor `r1p-train-J`. Holds what the job uses now, the pending
    request, and the pool; never acts itself (the trainer polls it)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.start(0, None)

    def start(self, gpus: int, pool: str | None) -> None:
        self.gpus, self.pool, self.state = int(gpus), pool, "starting"
        self.request: dict[str, Any] | None = None
        # A shrink the trainer has taken but not yet reported done (it is checkpointing): a
        # restarted controller must still see it in flight, or it finds a plain running job
        # and, once that job pauses, lends its GPUs straight back while serving takes them.
        self.taken: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []

    # -- the controller's side (pools.actuators.RayActorTraining)
    def current_gpus(self) -> int:
        return self.gpus

    def checkpoint_and_shrink(self, gpus: int) -> None:
        self.request = {"kind": "shrink", "gpus": int(gpus), "pool": None, "at": time.time()}

    def grow(self, gpus: int, pool: str) -> None:
        self.request = {"kind": "grow", "gpus": int(gpus), "pool": pool, "at": time.time()}

    # -- the job's side
    def take_request(self) -> dict[str, Any] | None:
        req, self.request = self.request, None
        if req and req.get("kind") == "shrink":
            self.taken = req
        return req

    def set_held(self, gpus: int, pool: str | None, state: str) -> None:
        self.gpus, self.pool, self.state = int(gpus), pool, state
        self.taken = None  # whatever was taken is done (or was a no-op) once the job reports
        self.history.append({"t": time.time(), "gpus": int(gpus), "pool": pool, "state": state})

    def status(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "gpus": self.gpus,
            "pool": self.pool,
            "state": self.state,
            "pending": self.request or self.taken,
            "history": list(self.history),
        }


def control_actor(job: str) -> Any:
    """Get or create the job's control actor (job-scoped: it ends with the driver)."""
    import ray

    cls = ray.remote(num_cpus=0, max_concurrency=4)(JobControl)
    return cls.options(name=actor_name(job), namespace=NAMESPACE, get_if_exists=True).remote(job)


class ControlClient:
    """Trainer rank 0's side of the control actor: reports what the job holds once the
    workers run, and turns a pending request into a `Resize` (JSON) at a step boundary.

    Losing the actor never stops training: the job just is not elastic from then on."""

    def __init__(self, cfg: dict[str, Any] | None, *, world: int, prompts_per_step: int) -> None:
        import ray

        self.actor = None
        self.world, self.prompts_per_step = world, prompts_per_step
        if not cfg:
            return
        self.engines, self.pool = int(cfg["engines"]), cfg.get("pool")
        try:
            self.actor = ray.get_actor(cfg["name"], namespace=NAMESPACE)
            held = job_gpus(world, self.engines)
            ray.get(self.actor.set_held.remote(held, self.pool, "running"), timeout=30)
        except Exception as err:  # elastic control must never stop training
            self._lost(err)

    def _lost(self, err: BaseException) -> None:
        from r1platform.training.console import note

        note(f"grpo: control actor unavailable ({type(err).__name__}); not elastic now")
        self.actor = None

    def poll(self) -> str | None:
        if self.actor is None:
            return None
        import ray

        try:
            raw = ray.get(self.actor.take_request.remote(), timeout=30)
        except Exception as err:  # the same: train on without it
            self._lost(err)
            return None
        if not raw:
            return None
        rz = decide(
            Request.from_dict(raw),
            workers=self.world,
            pool=self.pool,
            engines=self.engines,
            prompts_per_step=self.prompts_per_step,
        )
        return rz.to_json() if rz else None


# ---------------------------------------------------------------------------- the fit loop


@dataclass
class FitOutcome:
    status: str
    error: str | None
    checkpoint: str | None
    resizes: list[dict[str, Any]]


def append_event(path: Path, event: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(event) + "\n")


def run_fits(
    s: Any,
    *,
    make_trainer: Callable[[Any, list[Any]], Any],
    start_engines: Callable[[], list[Any]],
    stop_engines: Callable[[list[Any]], None],
    engines: list[Any],
    engine_units: int,
    metrics_path: Path,
    latest_checkpoint: Callable[[], str | None],
    root_message: Callable[[BaseException], str],
    poll_s: float = 0.5,
) -> FitOutcome:
    """fit → (resize? rebuild with the new worker count/pool and resume : done).

    `make_trainer(settings, engines)` builds a TorchTrainer for those settings. Takes over
    `engines` (already started) and stops whatever engines run when it returns or raises."""
    import ray

    workers, pool = s.num_workers, s.train_pool
    resizes: list[dict[str, Any]] = []
    budget = s.time_limit_s
    ctl = None
    try:
        ctl = control_actor(s.run_name)
        ray.get(ctl.start.remote(job_gpus(workers, engine_units), pool))
        while True:
            run_s = s.model_copy(update={"num_workers": workers, "train_pool": pool,
                                         "time_limit_s": budget})  # fmt: skip
            t_fit = time.perf_counter()
            try:
                result = make_trainer(run_s, engines).fit()
            except Exception as err:  # TrainingFailedError wraps the worker's exception
                return FitOutcome("FAILED", root_message(err), latest_checkpoint(), resizes)
            if budget is not None:
                budget = max(1e-3, budget - (time.perf_counter() - t_fit))
            raw = (result.metrics or {}).get(RESIZE_KEY)
            if not raw:
                ck = result.checkpoint.path if result.checkpoint else None
                return FitOutcome("SUCCEEDED", None, ck, resizes)
            rz = Resize.from_json(raw)
            step = int(result.metrics["step"])
            ck = result.checkpoint.path if result.checkpoint else latest_checkpoint()
            if rz.workers_after == 0 and engine_units:
                stop_engines(engines)
                engines = []
            event = {
                "event": "resize",
                "step": step,
                "reason": rz.reason,
                "gpus_before": rz.gpus_before,
                "gpus_after": rz.gpus_after,
                "workers_before": rz.workers_before,
                "workers_after": rz.workers_after,
                "pool_before": rz.pool_before,
                "pool_after": rz.pool_after,
                "requested_gpus": rz.requested_gpus,
                "checkpoint": ck,
                "release_s": round(time.time() - rz.requested_at, 3) if rz.requested_at else None,
            }
            append_event(metrics_path, event)
            resizes.append(event)
            # The train workers are gone (fit returned): the release is done. Reported
            # after the event is logged, so whoever sees the GPUs drop also finds the record.
            if rz.gpus_after < rz.gpus_before:
                ray.get(
                    ctl.set_held.remote(
                        rz.gpus_after,
                        rz.pool_after,
                        "paused" if rz.workers_after == 0 else "resizing",
                    )
                )
            print(
                f"grpo: resize at step {step} ({rz.reason}): {rz.workers_before} -> "
                f"{rz.workers_after} workers, {rz.gpus_before} -> {rz.gpus_after} GPUs "
                f"on {rz.pool_after}, checkpoint {ck}",
                flush=True,
            )
            workers, pool = rz.workers_after, rz.pool_after
            while workers == 0:  # paused: wait for a grow
                raw_req = ray.get(ctl.take_request.remote())
                nxt = (
                    decide(Request.from_dict(raw_req), workers=0, pool=pool,
                           engines=engine_units, prompts_per_step=s.prompts_per_step)
                    if raw_req else None
                )  # fmt: skip
                if nxt is None:
                    time.sleep(poll_s)
                    continue
                event = {"event": "resize", "step": step, "reason": "resume",
                         "gpus_before": 0, "gpus_after": nxt.gpus_after, "workers_before": 0,
                         "workers_after": nxt.workers_after, "pool_before": pool,
                         "pool_after": nxt.pool_after, "requested_gpus": nxt.requested_gpus,
                         "checkpoint": ck, "release_s": None}  # fmt: skip
                append_event(metrics_path, event)
                resizes.append(event)
                print(f"grpo: resuming from step {step} with {nxt.workers_after} workers on "
                      f"{nxt.pool_after}", flush=True)  # fmt: skip
                workers, pool = nxt.workers_after, nxt.pool_after
                if not engines:
                    engines = start_engines()
    finally:
        stop_engines(engines)
        if ctl is not None:
            ray.get(ctl.set_held.remote(0, pool, "finished"))

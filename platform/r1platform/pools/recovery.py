"""A restarted controller rebuilds its memory from the cluster before its first cycle.

The loop keeps what it asked for in `demand.Memory` (which pool each job runs in, reclaims
and lends in flight, when serving last rose). A controller that is killed loses all of it, and
a fresh one that trusts an empty memory can over-commit a pool: it does not know which pool a
job's GPUs are in, so it counts them nowhere and scales serving into GPUs the job still holds
while it checkpoints. The cluster still knows everything that matters, so `recover` reads it:

- each job's control actor (`JobState`): the GPUs it holds, its pool, its state (`running`,
  `resizing`, `paused`) and the request it has not taken yet;
- Serve's replica targets and each deployment's layout (placement-group bundles).

and turns it into memory, with one `recover` decision per item so the record says what the new
controller found. The half-done action is then completed or rolled back by the normal loop:

- a reclaim the job has not carried out yet becomes a pending shrink again: the job checkpoints
  and releases as asked, serving takes the GPUs only once they are released, and a request the
  job lost is asked again after shrink_timeout_s. It is not cancelled: the job may already be
  writing its checkpoint, and a reclaim is cheaper to finish than to undo;
- a lend the job has not taken up yet becomes a pending grow again (counted as the job's, and
  rolled back after grow_timeout_s if never taken up);
- a job paused by a reclaim keeps its pool and the time it paused, so the next lend (after the
  lend cooldown, as if nothing had happened) resumes it where it ran;
- running replicas keep the TP x PP Serve built them with (the planner pins it);
- every deployment that serves is treated as risen just now: the new controller cannot know
  when the last rise was, and serving comes first, so nothing scales down for one cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .demand import Memory

Pair = tuple[str, str]


@dataclass(frozen=True)
class JobState:
    """What a job's control actor says about it (training.elastic.JobControl.status)."""

    gpus: int
    pool: str | None
    state: str  # starting | running | resizing | paused | finished
    pending: dict[str, Any] | None = None  # {"kind": shrink|grow, "gpus", "pool", "at"}
    since: float | None = None  # when it entered `state` (None: unknown)

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> JobState:
        history = status.get("history") or []
        since = float(history[-1]["t"]) if history else None
        return cls(
            int(status.get("gpus") or 0),
            status.get("pool"),
            str(status.get("state") or "starting"),
            status.get("pending"),
            since,
        )


@dataclass(frozen=True)
class Found:
    """One thing the new controller found and adopted: a `recover` decision."""

    target: str
    pool: str | None
    before: int
    after: int
    reason: str
    acts: bool = False  # an action in flight that the new loop completes (vs. a plain state)


def rebuild(
    mem: Memory,
    jobs: Mapping[str, JobState],
    serving_now: Mapping[Pair, int],
    now: float,
    layouts: Mapping[Pair, tuple[int, int]] | None = None,
) -> list[Found]:
    """Fill `mem` from the cluster's state (see the module docstring); what was adopted."""
    found: list[Found] = []
    for job, js in sorted(jobs.items()):
        if js.state == "finished":
            continue
        req = js.pending or {}
        kind, want = req.get("kind"), int(req.get("gpus", 0))
        at = float(req.get("at") or now)
        pool = js.pool or req.get("pool")
        if pool:
            # Without it a fresh loop counts the job's GPUs in no pool: the over-commit.
            mem.job_pool[job] = pool
        if kind == "shrink" and js.gpus > want:
            mem.pending_shrink[job] = want
            mem.shrink_since[job] = at  # asked again once overdue, as before the restart
            mem.last_reclaim[job] = at
            what = "pause" if want == 0 else f"release down to {want}"
            found.append(
                Found(job, pool, js.gpus, want, f"reclaim in flight ({what}): completing it", True)
            )
        elif kind == "grow" and want > js.gpus:
            mem.pending_grow[job] = (want, at)
            mem.job_pool[job] = req.get("pool") or pool or ""
            found.append(
                Found(job, mem.job_pool[job], js.gpus, want, "lend in flight: waiting for it", True)
            )
        elif js.state == "paused" or (js.gpus == 0 and js.state == "resizing"):
            # Paused by a reclaim: the lend cooldown runs from when it paused, then a lend
            # resumes it (the job's own loop waits for exactly that grow).
            mem.last_reclaim[job] = js.since if js.since is not None else now
            why = "paused by a reclaim: resumed by the next lend"
            found.append(Found(job, pool, 0, 0, why, True))
        elif js.gpus:
            found.append(Found(job, pool, js.gpus, js.gpus, f"running ({js.state})"))
    for (dep, pool), n in sorted(serving_now.items()):
        if n > 0:
            mem.last_up[dep] = now
            if layouts and (dep, pool) in layouts:
                # Running replicas keep their TP x PP; a re-plan must count them as they are.
                mem.layout[(dep, pool)] = layouts[(dep, pool)]
            found.append(
                Found(dep, pool, n, n, "serving: no scale-down for one cooldown after a restart")
            )
    return found


def read_jobs(training: Any, names: list[str]) -> tuple[dict[str, JobState], dict[str, str]]:
    """Each job's state from its control actor; jobs not running are left out. An actuator
    without `job_state` (one that only reports GPUs) gives what it can: GPUs, no pool."""
    states: dict[str, JobState] = {}
    errors: dict[str, str] = {}
    for job in names:
        try:
            if hasattr(training, "job_state"):
                js = training.job_state(job)
            else:
                g = training.current_gpus(job)
                js = None if g is None else JobState(int(g), None, "running")
        except Exception as e:  # one unreachable actor must not stop the start
            errors[job] = f"{type(e).__name__}: {e}"
            continue
        if js is not None:
            states[job] = js
    return states, errors


def recover(ctl: Any) -> list[Any]:
    """Read the cluster and rebuild `ctl.mem` before the first cycle; record one `recover`
    decision per finding (the record and metrics say what a restart found). A failed read
    is one `recover` decision with its error (recover_before_start then tries again)."""
    from opentelemetry.trace import StatusCode

    from r1platform.telemetry import set_attributes

    from . import decisions as rec

    names = [j.name for j in ctl.workloads.training]
    with ctl.tracer.start_as_current_span("pools.recover") as span:
        now = ctl.clock()
        jobs, errors = read_jobs(ctl.training, names)
        layouts = None
        try:
            serving_now = ctl.serve.current_replicas()
            if hasattr(ctl.serve, "layouts"):
                layouts = ctl.serve.layouts()
        except Exception as e:  # Serve's API down: the first cycle retries the read
            errors["serving"] = f"{type(e).__name__}: {e}"
            serving_now = {}
        found = rebuild(ctl.mem, jobs, serving_now, now, layouts)
        ctx = span.get_span_context()
        trace_id = f"{ctx.trace_id:032x}" if ctx and ctx.trace_id else None

        def decision(target, pool, before, after, reason, error=None) -> rec.Decision:
            return rec.Decision(
                ts=now, cycle=ctl.mem.cycle, kind="recover", target=target, pool=pool, gpu=None,
                before=before, after=after, reason=reason, applied=error is None,
                trace_id=trace_id, error=error,
            )  # fmt: skip

        # The record names what a restart found half-done; the rest is on the span.
        out = [decision(f.target, f.pool, f.before, f.after, f.reason) for f in found if f.acts]
        for what, msg in sorted(errors.items()):
            out.append(decision(what, None, 0, 0, "could not read its state at start", msg))
        if errors:
            span.set_status(StatusCode.ERROR, "; ".join(f"{k}: {v}" for k, v in errors.items()))
        set_attributes(
            span,
            {
                "pending_shrink": ",".join(f"{k}={v}" for k, v in ctl.mem.pending_shrink.items()),
                "pending_grow": ",".join(f"{k}={v[0]}" for k, v in ctl.mem.pending_grow.items()),
                "job_pool": ",".join(f"{k}={v}" for k, v in ctl.mem.job_pool.items()),
                "serving": ",".join(f"{d}@{p}={n}" for (d, p), n in serving_now.items()),
                "found": "; ".join(f"{f.target}: {f.reason}" for f in found),
            },
        )
    ctl.record(out, None)
    return out


def recover_before_start(ctl: Any, sleep: Callable[[float], None] = time.sleep) -> list[Any]:
    """`recover` until every job and Serve could be read, backing off like the loop does
    (ctl.cfg.backoff_s). The loop must not start on a partial view: a job whose pool is
    unknown is counted in no pool, and serving would be scaled into the GPUs it holds."""
    failures = 0
    out: list[Any] = []
    while True:
        ds = recover(ctl)
        out += ds
        if not any(d.error for d in ds):
            return out
        failures += 1
        sleep(ctl.cfg.backoff_s(failures))

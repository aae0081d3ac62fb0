"""Reconcile loop: live load -> plan -> actions on Serve, the autoscaler and training.

The decision logic is pure (`target_rates`, `decide`); IO sits behind four small Protocols so
the same loop runs against Ray Serve / the Ray autoscaler / GRPO jobs, against in-memory fakes in
tests, and inside the simulator. Every cycle is one `pools.reconcile` span with `pools.plan`,
`pools.scale`, `pools.reclaim` and `pools.lend` children, and each action is appended to the
local decisions record.

Safety rules the logic enforces:
- serving never takes GPUs training still holds: it asks the job to checkpoint and shrink, and
  only uses those GPUs on a later cycle, after the job has released them;
- training is never killed: the only way down is request_checkpoint_and_shrink;
- hysteresis on the demand estimate and cooldowns on scale-down and on lending GPUs back keep
  load noise from flapping replicas or bouncing a job.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from opentelemetry.trace import StatusCode
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from r1platform.telemetry import get_tracer, set_attributes

from . import decisions as rec
from .errors import InfeasibleError, PoolsError
from .fleet import Fleet
from .plan_model import Plan, PlanRequest
from .planner import plan_one_layout
from .workloads import Workloads

TRACER = "r1platform.pools"


@dataclass(frozen=True)
class DeploymentLoad:
    ongoing: float  # requests in flight on replicas
    queued: float  # requests waiting for a replica
    request_rate: float  # arrivals per second, recent window


class LoadSource(Protocol):
    def read(self) -> dict[str, DeploymentLoad]: ...


class ServeActuator(Protocol):
    def current_replicas(self) -> dict[tuple[str, str], int]:
        """(deployment, pool) -> running replica target."""
        ...

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None: ...


class CapacityActuator(Protocol):
    def request(self, gpus_by_pool: Mapping[str, int]) -> None:
        """Ask the autoscaler to keep this many GPUs per pool (replaces the previous ask)."""
        ...


class TrainingActuator(Protocol):
    def current_gpus(self, job: str) -> int | None:
        """GPUs the job holds now; None when the job is not running at all (it is then left
        out of the plan: GPUs are lent only to jobs that can take them)."""
        ...

    def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
        """Checkpoint, then release GPUs down to `gpus` (0 = suspend after checkpoint).
        Asynchronous: current_gpus drops once the release has happened."""
        ...

    def grow(self, job: str, gpus: int, pool: str) -> None: ...


class ControllerConfig(BaseSettings):
    """Loop tuning; every field can be set from the environment as R1P_CONTROL_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="R1P_CONTROL_", extra="forbid")

    interval_s: float = Field(30.0, gt=0)
    headroom: float = Field(0.15, ge=0)  # plan for this much above the estimated rate
    # Re-target up when demand exceeds the target by this fraction ...
    up_threshold: float = Field(0.05, ge=0)
    down_threshold: float = Field(0.20, ge=0, lt=1)  # ... and down only when it falls this far
    down_cooldown_s: float = Field(300.0, ge=0)  # no scale-down sooner than this after a rise
    # Scale down only to the highest demand of this window (several metric export intervals).
    down_stabilization_s: float = Field(60.0, ge=0)
    lend_cooldown_s: float = Field(600.0, ge=0)  # no lending to a job this soon after a reclaim
    queue_drain_s: float = Field(30.0, gt=0)  # queued requests should drain within this time
    # Request rates are the counters' increase over this window (Prometheus rate()): longer
    # than the metrics export interval, short enough to see a burst within a cycle or two.
    rate_window_s: float = Field(30.0, gt=0)
    # Replicas take minutes to load weights, so provision for where a rising rate will be
    # this far ahead (linear trend of the last two reads); falling rates are not extrapolated.
    lookahead_s: float = Field(300.0, ge=0)
    # Keep this share of a pool's serving GPUs un-lent so small rises need no reclaim
    # (each reclaim costs the job a checkpoint and a restart).
    lend_reserve: float = Field(0.10, ge=0)
    # A lent grow the job has not taken up by then is given up (the job may be gone or its
    # workers unschedulable); until then the GPUs count as the job's.
    grow_timeout_s: float = Field(600.0, gt=0)
    plan_time_limit_s: float = Field(5.0, gt=0)
    # Take GPUs back from training only when that makes serving this much cheaper (or when
    # the free GPUs cannot carry the load): every reclaim costs a checkpoint and a restart.
    reclaim_tolerance: float = Field(0.05, ge=0)
    # Re-planning every cycle: a 0.1% optimality gap is far below load noise and 10x faster.
    mip_gap: float = Field(1e-3, ge=0)


@dataclass
class Memory:
    """What the loop remembers between cycles (the only mutable state of the policy)."""

    rates: dict[str, float] = field(default_factory=dict)
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (t, rate)
    wants: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # recent demand
    last_up: dict[str, float] = field(default_factory=dict)
    last_reclaim: dict[str, float] = field(default_factory=dict)
    pending_shrink: dict[str, int] = field(default_factory=dict)
    pending_grow: dict[str, tuple[int, float]] = field(default_factory=dict)  # (gpus, since)
    job_pool: dict[str, str] = field(default_factory=dict)
    layout: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    cycle: int = 0


def demand(load: DeploymentLoad, cfg: ControllerConfig, slope: float = 0.0) -> float:
    """Rate to provision for: arrivals (extrapolated over the lookahead when rising) plus what
    it takes to drain the queue, plus headroom."""
    # At most double: a step change is a burst, not a trend to extrapolate forever.
    rate = load.request_rate + min(max(slope, 0.0) * cfg.lookahead_s, load.request_rate)
    return (rate + load.queued / cfg.queue_drain_s) * (1 + cfg.headroom)


def target_rates(
    loads: Mapping[str, DeploymentLoad],
    mem: Memory,
    now: float,
    cfg: ControllerConfig,
    defaults: Mapping[str, float],
) -> dict[str, float]:
    """Hysteresis: move up at once when demand passes the band; move down only after the
    cooldown since the last rise, only to the highest demand seen over the last
    down_stabilization_s, and only when that is well below the target (Kubernetes HPA's
    scale-down stabilization: a metrics pipeline that exports every ~10 s shows steady load as
    dips and spikes, and a single dip must not release replicas)."""
    out = {}
    for name, default in defaults.items():
        prev = mem.rates.get(name)
        load = loads.get(name)
        slope = 0.0
        if load is not None and name in mem.seen and now > mem.seen[name][0]:
            t0, r0 = mem.seen[name]
            slope = (load.request_rate - r0) / (now - t0)
        want = demand(load, cfg, slope) if load is not None else default
        hist = [(t, w) for t, w in mem.wants.get(name, []) if now - t < cfg.down_stabilization_s]
        hist.append((now, want))
        mem.wants[name] = hist
        stable = max(w for _, w in hist)
        cooled = now - mem.last_up.get(name, -1e18) >= cfg.down_cooldown_s
        if prev is None or want > prev * (1 + cfg.up_threshold):
            out[name] = want
        elif cooled and stable < prev * (1 - cfg.down_threshold):
            out[name] = stable
        else:
            out[name] = prev
    return out


@dataclass(frozen=True)
class Action:
    kind: str  # scale | reclaim | lend
    target: str
    pool: str
    gpu: str
    before: int
    after: int
    reason: str


def decide(
    fleet: Fleet,
    p: Plan,
    serving_now: Mapping[tuple[str, str], int],
    training_now: Mapping[str, int],
    mem: Memory,
    now: float,
    cfg: ControllerConfig,
    priorities: Mapping[str, int] | None = None,
    mins: Mapping[str, int] | None = None,
) -> list[Action]:
    """Actions that move the cluster toward `p` without ever over-committing a pool."""
    gpu_of = {q.name: q.gpu for q in fleet.pools}
    cap = {q.name: q.gpus_capacity for q in fleet.pools}
    per_replica = {(o.deployment, o.pool): o.gpus_per_replica for o in p.options}
    for s in p.serving:  # the layout the plan chose wins over other TP options
        per_replica[(s.deployment, s.pool)] = s.gpus // max(s.replicas, 1)
    want_s = p.replicas()
    job_pool_plan = {t.job: t.pool for t in p.training}
    want_t = p.training_gpus()

    used = {q: 0 for q in cap}
    for (d, q), n in serving_now.items():
        if q in used:
            used[q] += n * per_replica.get((d, q), 1)
    for job, g in training_now.items():
        q = mem.job_pool.get(job) or job_pool_plan.get(job)
        if q in used:
            used[q] += g

    actions: list[Action] = []
    # 1. Serving scale-downs first: they free GPUs for scale-ups in the same cycle.
    keys = sorted(set(serving_now) | set(want_s))
    for d, q in keys:
        before, after = serving_now.get((d, q), 0), want_s.get((d, q), 0)
        if after < before:
            if now - mem.last_up.get(d, -1e18) < cfg.down_cooldown_s:
                continue
            actions.append(
                Action(
                    "scale",
                    d,
                    q,
                    gpu_of.get(q, "?"),
                    before,
                    after,
                    f"demand {mem.rates.get(d, 0):.2f} rps needs fewer replicas",
                )
            )
            used[q] -= (before - after) * per_replica.get((d, q), 1)
    # 2. Reclaim only what serving's scale-ups in a pool lack, lowest priority job first; a job
    #    left below its minimum is suspended (after its checkpoint) rather than crippled.
    need: dict[str, int] = defaultdict(int)
    for d, q in keys:
        before, after = serving_now.get((d, q), 0), want_s.get((d, q), 0)
        if after > before:
            need[q] += (after - before) * per_replica[(d, q)]
    prio = {j: pr for j, pr in (priorities or {}).items()}
    for q in sorted(need):
        short = need[q] - (cap[q] - used[q])
        if short > 0:
            # Take the reserve back too, so the next small rise needs no second reclaim.
            serving_q = sum(
                n * per_replica.get((d, pq), 1) for (d, pq), n in want_s.items() if pq == q
            )
            short += math.ceil(cfg.lend_reserve * serving_q)
        holders = sorted(
            (
                j
                for j, g in training_now.items()
                if g > 0 and (mem.job_pool.get(j) or job_pool_plan.get(j)) == q
            ),
            key=lambda j: (prio.get(j, 0), j),
        )
        for job in holders:
            if short <= 0:
                break
            before = training_now[job]
            if job in mem.pending_shrink:
                short -= before - mem.pending_shrink[job]
                continue
            after = max(before - short, 0)
            if after < (mins or {}).get(job, 1):
                after = 0
            short -= before - after
            actions.append(
                Action(
                    "reclaim",
                    job,
                    q,
                    gpu_of.get(q, "?"),
                    before,
                    after,
                    f"serving needs {need[q]} GPUs in {q}; checkpoint then release",
                )
            )
    # 3. Serving scale-ups, limited to GPUs free now (reclaimed GPUs arrive next cycle).
    for d, q in keys:
        before, after = serving_now.get((d, q), 0), want_s.get((d, q), 0)
        if after <= before:
            continue
        room = (cap[q] - used[q]) // per_replica[(d, q)]
        grant = min(after, before + max(room, 0))
        if grant > before:
            reason = f"demand {mem.rates.get(d, 0):.2f} rps"
            if grant < after:
                reason += f"; {after - grant} more replicas once training releases GPUs"
            actions.append(Action("scale", d, q, gpu_of[q], before, grant, reason))
            used[q] += (grant - before) * per_replica[(d, q)]
    # 4. Lend: grow jobs into what is still free, after the reclaim cooldown.
    for job in sorted(want_t):
        q = job_pool_plan[job]
        if training_now.get(job, 0) and mem.job_pool.get(job, q) != q:
            continue  # a running job never moves without a checkpoint; it stays where it is
        before = training_now.get(job, 0)
        after = want_t[job]
        if after <= before or job in mem.pending_shrink:
            continue  # `before` already counts a grow the job has not taken up yet
        if now - mem.last_reclaim.get(job, -1e18) < cfg.lend_cooldown_s:
            continue
        serving_q = sum(n * per_replica.get((d, pq), 1) for (d, pq), n in want_s.items() if pq == q)
        reserve = math.ceil(cfg.lend_reserve * serving_q)
        grant = min(after, before + max(cap[q] - used[q] - reserve, 0))
        if grant >= max(before + 1, (mins or {}).get(job, 1)):
            actions.append(
                Action(
                    "lend", job, q, gpu_of[q], before, grant, "idle serving GPUs lent to training"
                )
            )
            used[q] += grant - before
    return actions


def serving_cost(p: Plan, replicas: Mapping[tuple[str, str], int]) -> float:
    per = {(o.deployment, o.pool): o.replica_cost_per_hour for o in p.options}
    for s in p.serving:
        per[(s.deployment, s.pool)] = s.cost_per_hour / max(s.replicas, 1)
    return float(sum(n * per.get(k, 0.0) for k, n in replicas.items()))


class Controller:
    """One reconcile cycle per `step()`; `run()` repeats it every interval."""

    def __init__(
        self,
        fleet: Fleet | Callable[[], Fleet],
        workloads: Workloads,
        load: LoadSource,
        serve: ServeActuator,
        capacity: CapacityActuator,
        training: TrainingActuator,
        cfg: ControllerConfig | None = None,
        *,
        record_path: str | None = None,
        record: bool = True,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
    ) -> None:
        self._fleet = fleet
        self.workloads = workloads
        self.load, self.serve, self.capacity, self.training = load, serve, capacity, training
        self.cfg = cfg or ControllerConfig()
        self.mem = Memory()
        self.record_path, self.record = record_path, record
        self.clock, self.dry_run = clock, dry_run
        self.last_plan: Plan | None = None
        self.tracer = get_tracer(TRACER)

    def fleet(self) -> Fleet:
        return self._fleet() if callable(self._fleet) else self._fleet

    def step(self) -> list[rec.Decision]:
        now = self.clock()
        self.mem.cycle += 1
        fleet = self.fleet()
        with self.tracer.start_as_current_span("pools.reconcile") as root:
            loads = self.load.read()
            serving_now = self.serve.current_replicas()
            raw_gpus = {j.name: self.training.current_gpus(j.name) for j in self.workloads.training}
            absent = sorted(j for j, g in raw_gpus.items() if g is None)
            workloads = self.workloads
            if absent:
                workloads = workloads.model_copy(
                    update={"training": [j for j in workloads.training if j.name not in absent]}
                )
                set_attributes(root, {"jobs_not_running": ",".join(absent)})
            held_now = {j: int(g) for j, g in raw_gpus.items() if g is not None}
            for job, pending in list(self.mem.pending_shrink.items()):
                if held_now.get(job, 0) <= pending:
                    del self.mem.pending_shrink[job]  # the job checkpointed and released
            for job, (want, since) in list(self.mem.pending_grow.items()):
                if held_now.get(job, 0) >= want or now - since > self.cfg.grow_timeout_s:
                    del self.mem.pending_grow[job]  # taken up (or given up on)
            # A grow in flight counts as held: its GPUs are spoken for (no double booking).
            training_now = {
                j: max(g, self.mem.pending_grow.get(j, (0, 0.0))[0]) for j, g in held_now.items()
            }
            defaults = {w.name: w.request_rate for w in self.workloads.serving}
            prev_rates = dict(self.mem.rates)
            rates = target_rates(loads, self.mem, now, self.cfg, defaults)
            # Keep running replicas in place unless this deployment's target fell: scale-ups
            # add capacity where it is cheapest, and only scale-downs re-pack the placement.
            keep = {
                k: n
                for k, n in serving_now.items()
                if rates.get(k[0], 0.0) >= prev_rates.get(k[0], 0.0)
            }
            job_pools = {j: q for j, q in self.mem.job_pool.items() if training_now.get(j, 0)}
            self.mem.seen = {k: (now, v.request_rate) for k, v in loads.items()}
            for name, r in rates.items():
                if r > self.mem.rates.get(name, r - 1):
                    self.mem.last_up[name] = now
            self.mem.rates = rates

            with self.tracer.start_as_current_span("pools.plan") as ps:
                try:
                    pinned = {k: v for k, v in self.mem.layout.items() if serving_now.get(k, 0) > 0}
                    try:
                        p = self._plan(
                            fleet, workloads, rates, pinned, keep, job_pools, training_now, ps
                        )
                    except InfeasibleError:
                        # Headroom and lookahead are wishes; the measured load is the need.
                        raw = {k: v.request_rate for k, v in loads.items() if k in rates}
                        p = plan_one_layout(
                            PlanRequest(
                                fleet,
                                workloads,
                                rates={**rates, **raw},
                                pinned=pinned,
                                job_pools=job_pools,
                                time_limit_s=self.cfg.plan_time_limit_s,
                                mip_gap=self.cfg.mip_gap,
                            )
                        )
                        set_attributes(ps, {"degraded": "planned for measured load only"})
                except PoolsError as e:
                    set_attributes(ps, {"feasible": False, "reason": str(e)})
                    set_attributes(root, {"cycle": self.mem.cycle, "error": str(e)})
                    d = self._decision("plan", "fleet", None, None, 0, 0, str(e), None, None, root)
                    self._write([d])
                    return [d]
                set_attributes(
                    ps,
                    {
                        "feasible": True,
                        "method": p.solver.get("method", ""),
                        "solve_s": float(p.solver.get("time_s", 0.0)),
                        "cost_per_hour_after": p.cost_per_hour,
                        "rates": ",".join(f"{k}={v:.3f}" for k, v in sorted(rates.items())),
                    },
                )
            self.last_plan = p
            cost_before = serving_cost(p, serving_now)
            jobs = workloads.training
            actions = decide(
                fleet,
                p,
                serving_now,
                training_now,
                self.mem,
                now,
                self.cfg,
                {j.name: j.priority for j in jobs},
                {j.name: max(j.gpus.min, 1) for j in jobs},
            )
            for s_ in p.serving:
                self.mem.layout.setdefault((s_.deployment, s_.pool), (s_.tp, s_.pp))

            after = dict(serving_now)
            for a in actions:
                if a.kind == "scale":
                    after[(a.target, a.pool)] = a.after
            cost_after = serving_cost(p, after)
            out = []
            for a in actions:
                span = {"scale": "pools.scale", "reclaim": "pools.reclaim", "lend": "pools.lend"}[
                    a.kind
                ]
                with self.tracer.start_as_current_span(span) as s:
                    attrs = {
                        "pool": a.pool,
                        "gpu": a.gpu,
                        ("deployment" if a.kind == "scale" else "job"): a.target,
                        "before": a.before,
                        "after": a.after,
                        "reason": a.reason,
                        "cost_per_hour_before": cost_before,
                        "cost_per_hour_after": cost_after,
                        "dry_run": self.dry_run,
                    }
                    error = self._apply(a, now)
                    if error:
                        attrs["error"] = error
                        s.set_status(StatusCode.ERROR, error)
                    set_attributes(s, attrs)
                    out.append(
                        self._decision(
                            a.kind,
                            a.target,
                            a.pool,
                            a.gpu,
                            a.before,
                            a.after,
                            a.reason,
                            cost_before,
                            cost_after,
                            s,
                            error,
                        )
                    )
            self._request_capacity(fleet, p)
            set_attributes(
                root,
                {
                    "cycle": self.mem.cycle,
                    "actions": len(out),
                    "cost_per_hour_before": cost_before,
                    "cost_per_hour_after": cost_after,
                    "plan_cost_per_hour": p.cost_per_hour,
                },
            )
            self._write(out)
            return out

    def _plan(self, fleet, workloads, rates, pinned, keep, job_pools, training_now, span) -> Plan:
        req = PlanRequest(
            fleet,
            workloads,
            rates=rates,
            pinned=pinned,
            keep=keep,
            job_pools=job_pools,
            time_limit_s=self.cfg.plan_time_limit_s,
            mip_gap=self.cfg.mip_gap,
        )
        full = plan_one_layout(req)
        held: dict[str, int] = defaultdict(int)
        for job, g in training_now.items():
            q = self.mem.job_pool.get(job)
            if q and g:
                held[q] += g
        if not held:
            return full
        try:
            free = plan_one_layout(replace(req, held=held))
        except PoolsError:
            set_attributes(span, {"reclaim_needed": True})
            return full
        if free.cost_per_hour <= full.cost_per_hour * (1 + self.cfg.reclaim_tolerance) + 1e-9:
            set_attributes(
                span,
                {
                    "reclaim_avoided": True,
                    "reclaim_saving_per_hour": full.cost_per_hour - free.cost_per_hour,
                },
            )
            return free
        return full

    def _apply(self, a: Action, now: float) -> str | None:
        """Act; an actuator's failure is returned (recorded on the span and the decision), so
        one unreachable deployment or job cannot stop the loop for all the others."""
        if self.dry_run:
            return None
        try:
            if a.kind == "scale":
                self.serve.set_replicas(a.target, a.pool, a.after)
                if a.after > a.before:
                    self.mem.last_up[a.target] = now
            elif a.kind == "reclaim":
                self.training.request_checkpoint_and_shrink(a.target, a.after)
                self.mem.pending_shrink[a.target] = a.after
                self.mem.pending_grow.pop(a.target, None)
                self.mem.last_reclaim[a.target] = now
            else:
                self.training.grow(a.target, a.after, a.pool)
                self.mem.job_pool[a.target] = a.pool
                self.mem.pending_grow[a.target] = (a.after, now)
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return None

    def _request_capacity(self, fleet: Fleet, p: Plan) -> None:
        want = {u.pool: u.gpus_serving + u.gpus_training for u in p.pools}
        with self.tracer.start_as_current_span("pools.capacity") as s:
            set_attributes(s, {"gpus": ",".join(f"{k}={v}" for k, v in sorted(want.items()))})
            if not self.dry_run:
                self.capacity.request(want)

    def _decision(self, kind, target, pool, gpu, before, after, reason, cb, ca, span, error=None):
        ctx = span.get_span_context()
        return rec.Decision(
            ts=self.clock(),
            cycle=self.mem.cycle,
            kind=kind,
            target=target,
            pool=pool,
            gpu=gpu,
            before=before,
            after=after,
            reason=reason,
            cost_per_hour_before=cb,
            cost_per_hour_after=ca,
            applied=not self.dry_run and error is None,
            error=error,
            trace_id=f"{ctx.trace_id:032x}" if ctx and ctx.trace_id else None,
        )

    def _write(self, ds: list[rec.Decision]) -> None:
        if self.record:
            rec.append(ds, self.record_path)

    def run(
        self,
        *,
        once: bool = False,
        max_cycles: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        n = 0
        while True:
            started = time.monotonic()
            self.step()
            n += 1
            if once or (max_cycles is not None and n >= max_cycles):
                return
            sleep(max(self.cfg.interval_s - (time.monotonic() - started), 0.0))

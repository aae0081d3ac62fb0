"""The pieces of one reconcile cycle that need no IO: what an observation means for the
requests in flight, the plan request the demand implies, and the reclaim-avoiding plan choice.
The controller wires them to its actuators (see controller.Controller.step)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from opentelemetry import trace

from r1platform.telemetry import set_attributes

from .coldstart import lead_time_s
from .control_config import ControllerConfig
from .demand import Memory, observe_rates, target_rates
from .errors import PoolsError
from .fleet import Fleet
from .plan_model import Plan, PlanRequest
from .planner import plan_one_layout
from .protocols import DeploymentLoad
from .workloads import Workloads

Pair = tuple[str, str]


@dataclass
class Observation:
    """What the cluster looks like at the start of a cycle."""

    now: float
    fleet: Fleet
    workloads: Workloads  # training jobs that are not running are left out
    loads: dict[str, DeploymentLoad]
    serving_now: dict[Pair, int]
    training_now: dict[str, int]  # GPUs held, a grow in flight counted as held
    absent: list[str] = field(default_factory=list)  # jobs not running
    rolled_back: dict[str, tuple[int, int]] = field(default_factory=dict)  # job -> (offered, held)
    overdue: dict[str, int] = field(default_factory=dict)  # job -> shrink target to ask again
    forecast_error: float | None = None


@dataclass
class Planned:
    plan: Plan
    rates: dict[str, float]
    leads: dict[str, float] = field(default_factory=dict)  # cold start per deployment


@dataclass
class InFlight:
    training_now: dict[str, int]
    rolled_back: dict[str, tuple[int, int]]
    overdue: dict[str, int]


def settle_in_flight(
    held: Mapping[str, int], mem: Memory, now: float, cfg: ControllerConfig
) -> InFlight:
    """Given the GPUs each running job holds, forget the shrinks and grows that happened, roll
    back grows not taken up within grow_timeout_s and name shrinks overdue past
    shrink_timeout_s. A grow still in flight counts as held: its GPUs are spoken for."""
    overdue = {}
    for job, target in list(mem.pending_shrink.items()):
        if held.get(job, 0) <= target:
            del mem.pending_shrink[job]  # the job checkpointed and released
            mem.shrink_since.pop(job, None)
        elif now - mem.shrink_since.get(job, now) > cfg.shrink_timeout_s:
            overdue[job] = target
    rolled_back = {}
    for job, (want, since) in list(mem.pending_grow.items()):
        if held.get(job, 0) >= want:
            del mem.pending_grow[job]  # taken up
        elif now - since > cfg.grow_timeout_s:
            del mem.pending_grow[job]
            rolled_back[job] = (want, held.get(job, 0))
    training_now = {j: max(g, mem.pending_grow.get(j, (0, 0.0))[0]) for j, g in held.items()}
    return InFlight(training_now, rolled_back, overdue)


def plan_request(
    obs: Observation,
    mem: Memory,
    cfg: ControllerConfig,
    defaults: Mapping[str, float],
    surplus: Mapping[Pair, int] | None = None,
    leads: Mapping[str, float] | None = None,
    can_deploy: bool = True,
) -> PlanRequest:
    """The rates to provision for (hysteresis over the observed load; updates `mem`) and the
    plan request that keeps running replicas, layouts and jobs where they are. `surplus`: per
    D@P that runs more replicas than the last plan wanted (kept by decide while a move makes
    before it breaks, or through a cooldown), the count that plan wanted. `can_deploy` False:
    the Serve actuator can only set replica counts, so every D@P keeps the layout it was first
    given, running or not (a plan may not count replicas at a layout nothing can start)."""
    now = obs.now
    prev_rates = dict(mem.rates)
    leads = lead_times(obs, cfg) if leads is None else leads  # the caller's, when it has them
    observe_rates(obs.loads, mem, now, cfg, leads)
    rates = target_rates(obs.loads, mem, now, cfg, defaults, leads)
    # Keep running replicas in place unless this deployment's target fell: scale-ups add
    # capacity where it is cheapest, and only scale-downs re-pack the placement. Replicas the
    # last plan already gave up are no floor: kept as one, a make-before-break move would
    # keep its old replicas for good (the plan keeps its floors, so they never look surplus).
    keep = {
        k: min(n, (surplus or {}).get(k, n))
        for k, n in obs.serving_now.items()
        if rates.get(k[0], 0.0) >= prev_rates.get(k[0], 0.0)
    }
    job_pools = {j: q for j, q in mem.job_pool.items() if obs.training_now.get(j, 0)}
    for name, r in rates.items():
        if r > mem.rates.get(name, r - 1):
            mem.last_up[name] = now
    mem.rates = rates
    pinned = {
        k: v for k, v in mem.layout.items() if not can_deploy or obs.serving_now.get(k, 0) > 0
    }
    return PlanRequest(
        obs.fleet,
        obs.workloads,
        rates=rates,
        pinned=pinned,
        keep=keep,
        job_pools=job_pools,
        time_limit_s=cfg.plan_time_limit_s,
        mip_gap=cfg.mip_gap,
    )


def lead_times(obs: Observation, cfg: ControllerConfig) -> dict[str, float]:
    """Per deployment, the longest cold start over the GPU types it may start on: the pools it
    runs in now, or every pool of the fleet before it runs anywhere (scaling up may land on
    any of them)."""
    cat = obs.fleet.catalog
    all_pools = {q.name: q.gpu for q in obs.fleet.pools}
    out = {}
    for w in obs.workloads.serving:
        pools = {q for (d, q), n in obs.serving_now.items() if d == w.name and n > 0}
        gpus = {all_pools[q] for q in pools if q in all_pools} or set(all_pools.values())
        leads = [lead_time_s(w.model, cat[g], 1, cfg.storage_gbps) for g in gpus if g in cat]
        out[w.name] = max(leads, default=0.0)
    return out


def plan_avoiding_reclaim(
    req: PlanRequest,
    training_now: Mapping[str, int],
    job_pool: Mapping[str, str],
    tolerance: float,
    span: trace.Span = trace.INVALID_SPAN,
) -> Plan:
    """The plan with every GPU, unless leaving training's GPUs alone costs at most `tolerance`
    more (each reclaim costs the job a checkpoint and a restart)."""
    full = plan_one_layout(req)
    held: dict[str, int] = defaultdict(int)
    for job, g in training_now.items():
        q = job_pool.get(job)
        if q and g:
            held[q] += g
    if not held:
        return full
    try:
        free = plan_one_layout(replace(req, held=dict(held)))
    except PoolsError:
        set_attributes(span, {"reclaim_needed": True})
        return full
    if free.cost_per_hour <= full.cost_per_hour * (1 + tolerance) + 1e-9:
        saving = full.cost_per_hour - free.cost_per_hour
        set_attributes(span, {"reclaim_avoided": True, "reclaim_saving_per_hour": saving})
        return free
    return full


def plan_repacking(
    req: PlanRequest,
    training_now: Mapping[str, int],
    job_pool: Mapping[str, str],
    cfg: ControllerConfig,
    span: trace.Span = trace.INVALID_SPAN,
) -> Plan:
    """The plan that keeps running replicas as floors, unless re-packing every deployment
    from scratch is cheaper by more than repack_gain. Floors keep scale-ups from migrating
    capacity, but each rise lands where GPUs are free at that moment (often a dear pool,
    while training holds the cheap ones) and only a fall in a deployment's own demand ever
    moved it again; a move makes before it breaks (decide), so a re-pack costs the new
    replicas' cold start, not a capacity gap."""
    kept = plan_avoiding_reclaim(req, training_now, job_pool, cfg.reclaim_tolerance, span)
    if cfg.repack_gain <= 0 or not req.floors:
        return kept
    try:
        loose = plan_avoiding_reclaim(
            replace(req, keep={}), training_now, job_pool, cfg.reclaim_tolerance
        )
    except PoolsError:
        return kept
    if loose.cost_per_hour < kept.cost_per_hour * (1 - cfg.repack_gain):
        set_attributes(
            span,
            {"repacked": True, "repack_saving_per_hour": kept.cost_per_hour - loose.cost_per_hour},
        )
        return loose
    return kept


def next_wait(cfg: ControllerConfig, mem: Memory, failures_in_a_row: int) -> float:
    """Seconds to the next cycle: backoff after failures; soon after a reclaim (the freed GPUs
    are wanted by serving); otherwise the interval."""
    if failures_in_a_row:
        return cfg.backoff_s(failures_in_a_row)
    if mem.pending_shrink:
        return min(cfg.reclaim_poll_s, cfg.interval_s)
    return cfg.interval_s

"""Seeded discrete-event fleet simulator: a serving trace plus a training queue on a mixed
fleet, run under the r1p controller and three baselines in the same run.

Policies (sim_policies, one `Policy` each; the engine here only calls start and control)
- "r1p": the real `Controller` (forecast + measured headroom + cold-start lead, planner,
  hysteresis, checkpoint-then-shrink) driving simulated actuators, so what is measured is the
  code that runs on clusters.
- "static": serving provisioned once, at the cost-optimal placement, for a quantile of the
  trace's load (the knob); the rest of the fleet is a fixed training partition.
- "first-fit-catalog" / "first-fit-cheapest": what Ray Serve's replica autoscaler + Ray's
  autoscaler do, with a headroom knob: replicas follow load, each new one goes to the first
  pool with room (fleet order, or cheapest $ per rps first); reclaiming GPUs from training
  suspends whole jobs (Kueue-style), losing the work since their last periodic checkpoint.
- "single-type": first-fit-cheapest on a fleet of one GPU type with the same GPU count.
- "clairvoyant": the planner every interval on the true coming rates, instant starts.

SLO attainment is the share of requests whose TTFT and TPOT both meet the workload's p99
targets.

Events (heap, time-ordered): load ticks, control cycles, replica-ready, checkpoint-done, job
arrival. Serving within a tick: requests up to the ready replicas' SLO capacity meet the SLO
(capacities already sit at the target utilisation that keeps p99 TTFT/TPOT), the rest miss it
and queue. A deployment with a request-size mix serves, whatever any policy planned, the most
its ready replicas can carry at that mix with a size-aware router (an LP over which replicas
take which size class, each replica's rps per class from the same estimate the planner uses).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import defaultdict

from .fleet import Fleet, Pool
from .sim_policies import ClairvoyantPolicy, FirstFitPolicy, Policy, R1pPolicy, StaticPolicy
from .sim_state import JobSpec, Result, SimConfig, SimJob, SimState, mix_capacity
from .trace import Trace
from .workloads import ServingWorkload

__all__ = [
    "ClairvoyantPolicy",
    "FirstFitPolicy",
    "JobSpec",
    "Policy",
    "R1pPolicy",
    "Result",
    "SimConfig",
    "StaticPolicy",
    "job_queue",
    "run_all",
    "simulate",
    "single_type_fleet",
]


def _tick(st: SimState, serving: list[ServingWorkload], trace: Trace, rng: random.Random) -> None:
    dt, res = st.cfg.tick_s, st.res
    cap_by_d: dict[str, float] = defaultdict(float)
    gpus_by_d: dict[str, int] = defaultdict(int)
    mixed: dict[str, dict[tuple[float, ...], int]] = defaultdict(lambda: defaultdict(int))
    for r in st.replicas:
        gpus_by_d[r.deployment] += r.gpus
        res.cost += r.cost * dt / 3600
        if r.ready_at <= st.now:
            if r.class_caps:
                mixed[r.deployment][r.class_caps] += 1
            else:
                cap_by_d[r.deployment] += r.cap_rps
    if mixed:
        shares = {w.name: [c[0] for c in w.size_classes()] for w in serving}
        for d, groups in mixed.items():
            key = (d, tuple(sorted(groups.items())))
            if key not in st.mix_cache:
                st.mix_cache[key] = mix_capacity(shares[d], list(key[1]))
            cap_by_d[d] += st.mix_cache[key]
    busy = 0.0
    served_ok = total = 0.0
    for i, w in enumerate(serving):
        rate = w.request_rate * trace.at(st.now, i) * rng.uniform(0.97, 1.03)
        st.observed[w.name] = rate
        arrivals = rate * dt + st.backlog[w.name]
        can = cap_by_d[w.name] * dt
        ok = min(rate * dt, max(can - st.backlog[w.name], 0.0))
        served_ok += ok
        total += rate * dt
        st.backlog[w.name] = max(arrivals - can, 0.0)
        if cap_by_d[w.name]:
            busy += gpus_by_d[w.name] * min(1.0, rate / cap_by_d[w.name])
    res.slo_attainment += served_ok
    res.decisions += 0
    fleet_gpus = sum(st.cap().values())
    serving_gpus = sum(gpus_by_d.values())
    res.idle_gpu_hours += (fleet_gpus - serving_gpus) * dt / 3600
    for j in st.jobs.values():
        if j.gpus >= j.spec.min_gpus:
            j.reached_min = True
        if j.done or not j.gpus:
            continue
        if j.shrink_to is not None and st.now >= j.busy_until:
            j.saved, j.last_ckpt_t = j.progress, st.now
            j.gpus = j.shrink_to
            j.pool = j.pool if j.gpus else None
            j.shrink_to = None
            if j.gpus:
                j.busy_until = st.now + st.cfg.restart_s
            continue
        if st.now < j.busy_until:
            continue
        work = j.gpus * dt / 3600
        j.progress += work
        res.harvested_gpu_hours += work
        res.harvested_value += work * st.price(j.pool)
        busy += j.gpus
        if st.now - j.last_ckpt_t >= st.cfg.checkpoint_every_s:
            j.saved, j.last_ckpt_t = j.progress, st.now
        if j.progress >= j.spec.work_gpu_hours:
            j.done, j.gpus, j.pool = True, 0, None
            res.jobs_done += 1
    res.utilisation += busy / max(fleet_gpus, 1)
    res.slo_attainment_total = getattr(res, "slo_attainment_total", 0.0) + total


def simulate(
    policy: Policy,
    fleet: Fleet,
    serving: list[ServingWorkload],
    jobs: list[JobSpec],
    trace: Trace,
    cfg: SimConfig | None = None,
) -> Result:
    cfg = cfg or SimConfig()
    rng = random.Random(cfg.seed)
    st = SimState(fleet=fleet, cfg=cfg)
    st.res = Result(policy.name)
    st.jobs = {j.name: SimJob(j) for j in jobs}
    policy.start(st, serving, trace)

    # A control cycle at the same time as a tick runs first (negative sequence numbers), so
    # the t = 0 tick already finds the first cycle's replicas.
    events: list[tuple[float, int, str]] = []
    t, seq = 0.0, -(10**9)
    while t < cfg.duration_s:
        events.append((t, seq, "control"))
        seq += 1
        t += cfg.control_interval_s
    seq = 0
    for k in range(int(cfg.duration_s // cfg.tick_s)):
        events.append((k * cfg.tick_s, seq, "tick"))
        seq += 1
    heapq.heapify(events)
    ctl_wall = 0.0
    n_ctl = 0
    wall0 = time.perf_counter()
    for i, w in enumerate(serving):
        st.observed[w.name] = w.request_rate * trace.at(0.0, i)
    while events:
        st.now, _, kind = heapq.heappop(events)
        if kind == "tick":
            _tick(st, serving, trace, rng)
            continue
        t0 = time.perf_counter()
        policy.control(st, serving)
        ctl_wall += time.perf_counter() - t0
        n_ctl += 1
        if n_ctl == 1 and cfg.warm_start:
            for r in st.replicas:  # serving ran before the trace began: no cold start at t=0
                r.ready_at = min(r.ready_at, st.now)
        # A policy may ask for an extra cycle before the next regular one (r1p after a reclaim).
        wake = getattr(policy, "next_control_s", None)
        if wake is not None:
            at = st.now + wake()
            regular = (math.floor(st.now / cfg.control_interval_s) + 1) * cfg.control_interval_s
            if at < regular - 1.0 and at < cfg.duration_s:
                heapq.heappush(events, (at, seq, "control"))
                seq += 1
    res = st.res
    total = getattr(res, "slo_attainment_total", 0.0)
    res.slo_attainment = res.slo_attainment / total if total else 1.0
    res.utilisation /= max(int(cfg.duration_s // cfg.tick_s), 1)
    res.decisions = n_ctl
    arrived = [j for j in st.jobs.values() if j.spec.arrival_s < cfg.duration_s]
    res.jobs_arrived = len(arrived)
    res.jobs_min_share = sum(j.reached_min for j in arrived)
    res.decisions_per_s = n_ctl / ctl_wall if ctl_wall else math.inf
    res.wall_s = time.perf_counter() - wall0
    return res


def single_type_fleet(fleet: Fleet, gpu: str) -> Fleet:
    gpus = sum(p.gpus_capacity for p in fleet.pools)
    n = max(gpus // 8, 1)
    return Fleet(
        pools=[Pool(name=gpu.lower(), gpu=gpu, nodes=n, gpus_per_node=8, max_nodes=n)],
        catalog=fleet.catalog,
    )


def job_queue(n: int, seed: int, duration_s: float, total_gpus: int) -> list[JobSpec]:
    """A GRPO job stream sized to want more GPUs than serving leaves (so harvest is the limit)."""
    rng = random.Random(seed + 1)
    out = []
    for k in range(n):
        model = rng.choice(["r1-distill-qwen-1.5b", "r1-distill-qwen-7b", "r1-distill-llama-8b"])
        mx = max(8, int(total_gpus * rng.uniform(0.1, 0.3)) // 8 * 8)
        out.append(
            JobSpec(
                name=f"grpo{k:02d}",
                model=model,
                min_gpus=min(8, mx),
                max_gpus=mx,
                work_gpu_hours=mx * rng.uniform(2, 8),
                priority=rng.choice([1, 5, 10]),
                arrival_s=rng.uniform(0, duration_s * 0.5),
            )
        )
    return out


def run_all(
    fleet: Fleet,
    serving: list[ServingWorkload],
    jobs: list[JobSpec],
    trace: Trace,
    cfg: SimConfig | None = None,
    single_gpu: str = "H100",
) -> list[Result]:
    """Every policy once at its default knob (the equal-SLO search is sim_search's)."""
    cfg = cfg or SimConfig()
    single = single_type_fleet(fleet, single_gpu)
    runs: list[tuple[Policy, Fleet]] = [
        (R1pPolicy(), fleet),
        (StaticPolicy(), fleet),
        (FirstFitPolicy("cheapest", name="single-type"), single),
        (FirstFitPolicy("catalog"), fleet),
        (FirstFitPolicy("cheapest"), fleet),
        (ClairvoyantPolicy(), fleet),
    ]
    return [simulate(p, f, serving, jobs, trace, cfg) for p, f in runs]

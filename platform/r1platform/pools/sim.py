"""Seeded discrete-event fleet simulator: a serving trace plus a training queue on a mixed
fleet, run under the r1p controller and three baselines in the same run.

Policies
- "r1p": the real `Controller` (planner + hysteresis + checkpoint-then-shrink) driving
  simulated actuators, so what is measured is the code that runs on clusters.
- "static": serving provisioned once for the trace's peak at the cost-optimal placement; the
  rest of the fleet is a fixed training partition.
- "single-type": the r1p controller on a fleet of one GPU type with the same GPU count.
- "first-fit": what Ray Serve's replica autoscaler + Ray's autoscaler do: replica counts follow
  load, each new replica goes to the first pool (fleet order) with room and no cost model, and
  reclaiming GPUs from training suspends the whole job (Kueue-style preemption), losing the
  work since its last periodic checkpoint.

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
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from .controller import Controller, ControllerConfig, DeploymentLoad
from .fit import model_spec
from .fleet import Fleet, Pool
from .options import build_options
from .plan_model import Option, PlanRequest
from .planner import plan
from .trace import Trace
from .workloads import GpuRange, ServingWorkload, TrainingJob, Workloads


@dataclass
class SimConfig:
    duration_s: float = 86400.0
    tick_s: float = 60.0
    control_interval_s: float = 120.0
    seed: int = 0
    headroom: float = 0.15
    checkpoint_s: float = 60.0  # time to write a checkpoint before releasing GPUs
    checkpoint_every_s: float = 1800.0  # periodic checkpoints (what a preemption falls back to)
    restart_s: float = 120.0  # a job resizing or resuming does no work for this long
    load_gbps: float = 2.0  # replica start: 30 s + weights read at this rate


@dataclass
class JobSpec:
    name: str
    model: str
    min_gpus: int
    max_gpus: int
    work_gpu_hours: float
    priority: int
    arrival_s: float
    gpu_types: list[str] | None = None


@dataclass
class Result:
    policy: str
    cost: float = 0.0  # serving $ over the run
    slo_attainment: float = 0.0
    utilisation: float = 0.0
    harvested_gpu_hours: float = 0.0
    idle_gpu_hours: float = 0.0  # fleet GPU-hours serving did not hold
    preemptions: int = 0  # checkpoint-and-shrink (r1p) or suspend (first-fit)
    lost_gpu_hours: float = 0.0  # training work redone after preemption
    jobs_done: int = 0
    decisions: int = 0
    decisions_per_s: float = 0.0
    wall_s: float = 0.0

    @property
    def harvest_share(self) -> float:
        return self.harvested_gpu_hours / self.idle_gpu_hours if self.idle_gpu_hours else 0.0


@dataclass
class _Job:
    spec: JobSpec
    gpus: int = 0
    pool: str | None = None
    progress: float = 0.0  # GPU-hours done
    saved: float = 0.0  # progress at the last checkpoint
    last_ckpt_t: float = 0.0
    busy_until: float = 0.0  # checkpointing or restarting: holds GPUs, no progress
    shrink_to: int | None = None
    done: bool = False


@dataclass
class _Replica:
    deployment: str
    pool: str
    gpus: int
    cap_rps: float
    cost: float
    ready_at: float
    class_caps: tuple[float, ...] = ()  # rps per size class (size-mixed deployments only)


@dataclass
class _State:
    fleet: Fleet
    cfg: SimConfig
    now: float = 0.0
    replicas: list[_Replica] = field(default_factory=list)
    jobs: dict[str, _Job] = field(default_factory=dict)
    backlog: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    observed: dict[str, float] = field(default_factory=dict)
    res: Result = field(default_factory=lambda: Result("?"))
    mix_cache: dict = field(default_factory=dict)

    def cap(self) -> dict[str, int]:
        return {p.name: p.gpus_capacity for p in self.fleet.pools}

    def used(self) -> dict[str, int]:
        u = dict.fromkeys(self.cap(), 0)
        for r in self.replicas:
            u[r.pool] += r.gpus
        for j in self.jobs.values():
            if j.pool and j.gpus:
                u[j.pool] += j.gpus
        return u

    def startup_s(self, model: str) -> float:
        return 30.0 + model_spec(model).weight_bytes / (self.cfg.load_gbps * 1e9)


# ------------------------------------------------------------------ simulated actuators
def mix_capacity(shares: list[float], groups: list[tuple[tuple[float, ...], int]]) -> float:
    """Most rps, at the class shares, that `groups` of (rps per class, replicas) carry when a
    router sends each class where there is room: max L such that each class's L x share is
    split over the groups and no group's replicas are busy more than all of their time."""
    pairs = [(g, c) for g, (caps, _) in enumerate(groups) for c, r in enumerate(caps) if r > 0]
    if not pairs:
        return 0.0
    n = len(pairs) + 1  # the a[g, c] columns, then L
    a_ub, b_ub = [], []
    for c, sh in enumerate(shares):  # L x share_c - sum_g a[g, c] <= 0
        row = np.zeros(n)
        row[-1] = sh
        for k, (_, pc) in enumerate(pairs):
            if pc == c:
                row[k] = -1.0
        a_ub.append(row)
        b_ub.append(0.0)
    for g, (caps, count) in enumerate(groups):  # sum_c a[g, c] / rps[g, c] <= replicas
        row = np.zeros(n)
        for k, (pg, pc) in enumerate(pairs):
            if pg == g:
                row[k] = 1.0 / caps[pc]
        a_ub.append(row)
        b_ub.append(float(count))
    cost = np.zeros(n)
    cost[-1] = -1.0
    res = linprog(cost, A_ub=np.array(a_ub), b_ub=b_ub, bounds=(0, None), method="highs")
    return float(res.x[-1]) if res.status == 0 else 0.0


def _class_caps(p, deployment: str, pool: str, tp: int, pp: int) -> tuple[float, ...]:
    for o in p.options:
        if (o.deployment, o.pool, o.tp, o.pp) == (deployment, pool, tp, pp):
            return o.class_capacity_rps
    return ()


class _SimLoad:
    def __init__(self, st: _State) -> None:
        self.st = st

    def read(self) -> dict[str, DeploymentLoad]:
        return {d: DeploymentLoad(0.0, self.st.backlog[d], r) for d, r in self.st.observed.items()}


class _SimServe:
    def __init__(self, st: _State, ctl_ref: list, models: dict[str, str]) -> None:
        self.st, self.ctl_ref, self.models = st, ctl_ref, models

    def current_replicas(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = defaultdict(int)
        for r in self.st.replicas:
            out[(r.deployment, r.pool)] += 1
        return dict(out)

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
        mine = [r for r in self.st.replicas if (r.deployment, r.pool) == (deployment, pool)]
        if replicas < len(mine):
            # Stop the newest first: replicas still loading serve nothing yet.
            for r in sorted(mine, key=lambda r: -r.ready_at)[: len(mine) - replicas]:
                self.st.replicas.remove(r)
            return
        p = self.ctl_ref[0].last_plan
        s = next(s for s in p.serving if (s.deployment, s.pool) == (deployment, pool))
        per = s.gpus // s.replicas
        caps = _class_caps(p, deployment, pool, s.tp, s.pp)
        for _ in range(replicas - len(mine)):
            self.st.replicas.append(
                _Replica(
                    deployment,
                    pool,
                    per,
                    s.capacity_rps / s.replicas,
                    s.cost_per_hour / s.replicas,
                    self.st.now + self.st.startup_s(self.models[deployment]),
                    caps,
                )
            )


class _SimCapacity:
    def request(self, gpus_by_pool) -> None:  # the sim fleet is the autoscaler's ceiling
        pass


class _SimTraining:
    def __init__(self, st: _State) -> None:
        self.st = st

    def current_gpus(self, job: str) -> int:
        return self.st.jobs[job].gpus

    def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
        j = self.st.jobs[job]
        j.shrink_to = gpus
        j.busy_until = self.st.now + self.st.cfg.checkpoint_s
        self.st.res.preemptions += 1

    def grow(self, job: str, gpus: int, pool: str) -> None:
        j = self.st.jobs[job]
        j.gpus, j.pool = gpus, pool
        j.busy_until = max(j.busy_until, self.st.now + self.st.cfg.restart_s)


# ------------------------------------------------------------------ engine
def _training_workloads(st: _State) -> list[TrainingJob]:
    return [
        TrainingJob(
            name=j.spec.name,
            model=j.spec.model,
            gpus=GpuRange(min=j.spec.min_gpus, max=j.spec.max_gpus),
            gpu_types=j.spec.gpu_types,
            priority=j.spec.priority,
        )
        for j in st.jobs.values()
        if not j.done and j.spec.arrival_s <= st.now
    ]


def _tick(st: _State, serving: list[ServingWorkload], trace: Trace, rng: random.Random) -> None:
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
    for w in serving:
        rate = w.request_rate * trace.at(st.now) * rng.uniform(0.97, 1.03)
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
        busy += j.gpus
        if st.now - j.last_ckpt_t >= st.cfg.checkpoint_every_s:
            j.saved, j.last_ckpt_t = j.progress, st.now
        if j.progress >= j.spec.work_gpu_hours:
            j.done, j.gpus, j.pool = True, 0, None
            res.jobs_done += 1
    res.utilisation += busy / max(fleet_gpus, 1)
    res.slo_attainment_total = getattr(res, "slo_attainment_total", 0.0) + total


def _admit_fifo(st: _State) -> None:
    """Static/first-fit training admission: FIFO by priority, first pool with room, fixed size."""
    cap, used = st.cap(), st.used()
    queue = sorted(
        (j for j in st.jobs.values() if not j.done and not j.gpus and j.spec.arrival_s <= st.now),
        key=lambda j: (-j.spec.priority, j.spec.arrival_s, j.spec.name),
    )
    for j in queue:
        for p in st.fleet.pools:
            if j.spec.gpu_types and p.gpu not in j.spec.gpu_types:
                continue
            free = cap[p.name] - used[p.name]
            if free >= j.spec.min_gpus:
                j.gpus, j.pool = min(j.spec.max_gpus, free), p.name
                j.busy_until = st.now + st.cfg.restart_s
                j.progress = j.saved
                used[p.name] += j.gpus
                break


def _first_fit_control(st: _State, serving, options: dict[str, list[Option]], last_up) -> None:
    cfg = st.cfg
    for w in serving:
        want = (st.observed.get(w.name, w.request_rate) + st.backlog[w.name] / 30.0) * (
            1 + cfg.headroom
        )
        mine = [r for r in st.replicas if r.deployment == w.name]
        have = sum(r.cap_rps for r in mine)
        while have < want:
            placed = False
            cap, used = st.cap(), st.used()
            for o in options[w.name]:
                if cap[o.pool] - used[o.pool] >= o.gpus_per_replica:
                    placed = True
                    break
            if not placed:
                # No room: suspend training (whole jobs) in the first pool that would fit.
                for o in options[w.name]:
                    victims = [j for j in st.jobs.values() if j.pool == o.pool and j.gpus]
                    if (
                        victims
                        and cap[o.pool] - used[o.pool] + sum(v.gpus for v in victims)
                        >= o.gpus_per_replica
                    ):
                        for v in victims:
                            st.res.lost_gpu_hours += v.progress - v.saved
                            st.res.preemptions += 1
                            v.progress, v.gpus, v.pool = v.saved, 0, None
                        placed = True
                        break
            if not placed:
                break
            st.replicas.append(
                _Replica(
                    w.name,
                    o.pool,
                    o.gpus_per_replica,
                    o.replica_capacity_rps,
                    o.replica_cost_per_hour,
                    st.now + st.startup_s(w.model),
                    o.class_capacity_rps,
                )
            )
            have += o.replica_capacity_rps
            last_up[w.name] = st.now
        if st.now - last_up.get(w.name, -1e18) >= 300.0:
            mine = sorted(
                (r for r in st.replicas if r.deployment == w.name), key=lambda r: -r.ready_at
            )
            for r in mine:
                if have - r.cap_rps >= want * 1.2:
                    st.replicas.remove(r)
                    have -= r.cap_rps
    _admit_fifo(st)


def simulate(
    policy: str,
    fleet: Fleet,
    serving: list[ServingWorkload],
    jobs: list[JobSpec],
    trace: Trace,
    cfg: SimConfig | None = None,
) -> Result:
    cfg = cfg or SimConfig()
    rng = random.Random(cfg.seed)
    st = _State(fleet=fleet, cfg=cfg)
    st.res = Result(policy)
    st.jobs = {j.name: _Job(j) for j in jobs}
    models = {w.name: w.model for w in serving}
    wl = Workloads(serving=serving, training=[])
    ctl = None
    ff_options: dict[str, list[Option]] = {}
    last_up: dict[str, float] = {}
    if policy in ("r1p", "single-type"):
        ref: list = []
        ctl = Controller(
            fleet,
            wl,
            _SimLoad(st),
            _SimServe(st, ref, models),
            _SimCapacity(),
            _SimTraining(st),
            ControllerConfig(
                interval_s=cfg.control_interval_s, headroom=cfg.headroom, down_cooldown_s=300.0
            ),
            record=False,
            clock=lambda: st.now,
        )
        ref.append(ctl)
    elif policy == "static":
        peak = {w.name: w.request_rate * trace.peak * (1 + cfg.headroom) for w in serving}
        p = plan(PlanRequest(fleet, wl, rates=peak))
        for s in p.serving:
            caps = _class_caps(p, s.deployment, s.pool, s.tp, s.pp)
            for _ in range(s.replicas):
                st.replicas.append(
                    _Replica(
                        s.deployment,
                        s.pool,
                        s.gpus // s.replicas,
                        s.capacity_rps / s.replicas,
                        s.cost_per_hour / s.replicas,
                        0.0,
                        caps,
                    )
                )
    elif policy == "first-fit":
        every = build_options(fleet, serving)
        # With no size-aware routing, a replica takes every request size it is sent: only the
        # layouts that serve every size (if none does, the deployment gets the ones there are).
        whole = {o.deployment for o in every if all(c > 0 for c in o.class_caps)}
        for o in every:
            if o.deployment not in whole or all(c > 0 for c in o.class_caps):
                ff_options.setdefault(o.deployment, []).append(o)
        order = {p.name: i for i, p in enumerate(fleet.pools)}
        for d, opts in ff_options.items():
            # Ray picks the node type that fits the request, not the cheapest: per pool the
            # smallest layout, pools in the order the cluster config lists them.
            smallest = {}
            for o in sorted(opts, key=lambda o: (o.gpus_per_replica, o.tp)):
                smallest.setdefault(o.pool, o)
            ff_options[d] = sorted(smallest.values(), key=lambda o: order[o.pool])
    else:
        raise ValueError(f"unknown policy {policy!r}")

    events: list[tuple[float, int, str]] = []
    seq = 0
    for k in range(int(cfg.duration_s // cfg.tick_s)):
        events.append((k * cfg.tick_s, seq, "tick"))
        seq += 1
    t = 0.0
    while t < cfg.duration_s:
        events.append((t + 1e-3, seq, "control"))
        seq += 1
        t += cfg.control_interval_s
    heapq.heapify(events)
    ctl_wall = 0.0
    n_ctl = 0
    wall0 = time.perf_counter()
    for w in serving:
        st.observed[w.name] = w.request_rate * trace.at(0.0)
    while events:
        st.now, _, kind = heapq.heappop(events)
        if kind == "tick":
            _tick(st, serving, trace, rng)
            continue
        t0 = time.perf_counter()
        if ctl is not None:
            ctl.workloads = Workloads(serving=serving, training=_training_workloads(st))
            ctl.step()
        elif policy == "first-fit":
            _first_fit_control(st, serving, ff_options, last_up)
        else:
            _admit_fifo(st)
        ctl_wall += time.perf_counter() - t0
        n_ctl += 1
    res = st.res
    total = getattr(res, "slo_attainment_total", 0.0)
    res.slo_attainment = res.slo_attainment / total if total else 1.0
    res.utilisation /= max(int(cfg.duration_s // cfg.tick_s), 1)
    res.decisions = n_ctl
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
    cfg = cfg or SimConfig()
    return [
        simulate("r1p", fleet, serving, jobs, trace, cfg),
        simulate("static", fleet, serving, jobs, trace, cfg),
        simulate("single-type", single_type_fleet(fleet, single_gpu), serving, jobs, trace, cfg),
        simulate("first-fit", fleet, serving, jobs, trace, cfg),
    ]

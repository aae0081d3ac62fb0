"""The simulator's state and results: config, job specs, replicas, jobs, and the size-aware
capacity of a group of replicas (shared by the engine and every policy)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from .coldstart import lead_time_s
from .fleet import Fleet


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
    # The first control's replicas serve at once (the fleet was serving before the trace
    # began), so every policy is measured in steady state, not on an empty start.
    warm_start: bool = True
    load_gbps: float = 2.0  # storage read rate for a replica's weights (coldstart)


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
    harvested_value: float = 0.0  # those GPU-hours at their pool's $ per GPU-hour
    idle_gpu_hours: float = 0.0  # fleet GPU-hours serving did not hold
    jobs_arrived: int = 0
    jobs_min_share: int = 0  # arrived jobs that held at least their minimum GPUs at some point
    preemptions: int = 0  # checkpoint-and-shrink (r1p) or suspend (first-fit)
    lost_gpu_hours: float = 0.0  # training work redone after preemption
    jobs_done: int = 0
    decisions: int = 0
    decisions_per_s: float = 0.0
    wall_s: float = 0.0

    @property
    def net_cost(self) -> float:
        """Serving $ less the value of the training it let through (GPU-hours at pool price)."""
        return self.cost - self.harvested_value

    @property
    def harvest_share(self) -> float:
        return self.harvested_gpu_hours / self.idle_gpu_hours if self.idle_gpu_hours else 0.0


@dataclass
class SimJob:
    spec: JobSpec
    gpus: int = 0
    pool: str | None = None
    progress: float = 0.0  # GPU-hours done
    saved: float = 0.0  # progress at the last checkpoint
    last_ckpt_t: float = 0.0
    busy_until: float = 0.0  # checkpointing or restarting: holds GPUs, no progress
    shrink_to: int | None = None
    done: bool = False
    reached_min: bool = False


@dataclass
class Replica:
    deployment: str
    pool: str
    gpus: int
    cap_rps: float
    cost: float
    ready_at: float
    class_caps: tuple[float, ...] = ()  # rps per size class (size-mixed deployments only)


@dataclass
class SimState:
    fleet: Fleet
    cfg: SimConfig
    now: float = 0.0
    replicas: list[Replica] = field(default_factory=list)
    jobs: dict[str, SimJob] = field(default_factory=dict)
    backlog: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    observed: dict[str, float] = field(default_factory=dict)
    res: Result = field(default_factory=lambda: Result("?"))
    mix_cache: dict = field(default_factory=dict)
    lead_cache: dict = field(default_factory=dict)

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

    def price(self, pool: str | None) -> float:
        for p in self.fleet.pools:
            if p.name == pool:
                return self.fleet.price(p)
        return 0.0

    def startup_s(self, model: str, pool: str, tp: int = 1) -> float:
        """Cold start of a replica of `model` on `tp` GPUs of `pool` (coldstart.lead_time_s:
        weight load, engine start, warm-up), cached: it is asked for every replica started."""
        key = (model, pool, tp)
        if key not in self.lead_cache:
            gpu = self.fleet.catalog[next(p.gpu for p in self.fleet.pools if p.name == pool)]
            self.lead_cache[key] = lead_time_s(model, gpu, tp, self.cfg.load_gbps)
        return self.lead_cache[key]


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


def class_caps_of(p, deployment: str, pool: str, tp: int, pp: int) -> tuple[float, ...]:
    for o in p.options:
        if (o.deployment, o.pool, o.tp, o.pp) == (deployment, pool, tp, pp):
            return o.class_capacity_rps
    return ()

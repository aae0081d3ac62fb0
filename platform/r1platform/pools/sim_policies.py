"""The simulator's policies, one `Policy` each: the r1p controller, the baselines (static
split, Ray-style first-fit, each with a headroom knob the bench searches) and the clairvoyant
reference. The engine (sim.simulate) calls `start` once and `control` at every control event;
it knows nothing else about them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Protocol

from .control_config import ControllerConfig
from .controller import Controller
from .errors import PoolsError
from .options import build_options
from .plan_model import Option, PlanRequest
from .planner import plan
from .protocols import DeploymentLoad
from .sim_state import Replica, SimState, class_caps_of
from .trace import Trace
from .workloads import GpuRange, ServingWorkload, TrainingJob, Workloads


class Policy(Protocol):
    """A way to run the fleet: set up once, then act at every control event."""

    name: str

    def start(self, st: SimState, serving: list[ServingWorkload], trace: Trace) -> None: ...

    def control(self, st: SimState, serving: list[ServingWorkload]) -> None: ...


class R1pPolicy:
    """The real `Controller` (planner + hysteresis + checkpoint-then-shrink) driving simulated
    actuators, so what is measured is the code that runs on clusters. "single-type" is this
    policy on a fleet of one GPU type."""

    def __init__(self, name: str = "r1p", **tuning: float) -> None:
        self.name = name
        self.tuning = tuning  # ControllerConfig fields (tuned on the synthetic trace only)
        self.ctl: Controller | None = None

    def start(self, st: SimState, serving: list[ServingWorkload], trace: Trace) -> None:
        ref: list = []
        models = {w.name: w.model for w in serving}
        cfg = st.cfg
        self.ctl = Controller(
            st.fleet,
            Workloads(serving=serving, training=[]),
            _SimLoad(st),
            _SimServe(st, ref, models),
            _SimCapacity(),
            _SimTraining(st),
            ControllerConfig(
                interval_s=cfg.control_interval_s,
                down_cooldown_s=300.0,
                storage_gbps=cfg.load_gbps,
                **self.tuning,
            ),
            record=False,
            clock=lambda: st.now,
        )
        ref.append(self.ctl)

    def control(self, st: SimState, serving: list[ServingWorkload]) -> None:
        assert self.ctl is not None, "start() first"
        self.ctl.workloads = Workloads(serving=serving, training=_training_workloads(st))
        self.ctl.step()

    def next_control_s(self) -> float:
        """When the controller wants its next cycle (sooner than the interval after a reclaim)."""
        assert self.ctl is not None, "start() first"
        return self.ctl.next_wait_s()


class StaticPolicy:
    """Serving provisioned once, at the cost-optimal placement, for the `quantile` of each
    deployment's load over the trace times (1 + headroom) (quantile 1.0: the peak all day);
    the rest of the fleet is a fixed training partition (FIFO admission). The knob is the
    quantile: the bench searches the lowest that meets the SLO."""

    name = "static"

    def __init__(self, quantile: float = 1.0, headroom: float = 0.0) -> None:
        self.quantile, self.headroom = quantile, headroom

    def start(self, st: SimState, serving: list[ServingWorkload], trace: Trace) -> None:
        n = int(st.cfg.duration_s // trace.tick_s) or 1
        rates = {}
        for i, w in enumerate(serving):
            seen = sorted(trace.at(k * trace.tick_s, i) for k in range(n))
            q = seen[min(int(self.quantile * len(seen)), len(seen) - 1)]
            rates[w.name] = w.request_rate * q * (1 + self.headroom)
        p = plan(PlanRequest(st.fleet, Workloads(serving=serving, training=[]), rates=rates))
        _install(st, p, ready_at=0.0)

    def control(self, st: SimState, serving: list[ServingWorkload]) -> None:
        admit_fifo(st)


class ClairvoyantPolicy:
    """The reference: the planner run every interval on the true mean rate of the coming
    interval (times 1 + headroom), no lag, replicas that start instantly, training resized
    instantly and without loss. Peaks inside an interval stay invisible to it, so it too gets
    a headroom knob searched to the same SLO as everyone else."""

    name = "clairvoyant"

    def __init__(self, headroom: float = 0.0) -> None:
        self.headroom = headroom
        self.trace: Trace | None = None

    def start(self, st: SimState, serving: list[ServingWorkload], trace: Trace) -> None:
        self.trace = trace

    def control(self, st: SimState, serving: list[ServingWorkload]) -> None:
        tr = self.trace
        assert tr is not None, "start() first"
        ticks = range(
            int(st.now // tr.tick_s), int((st.now + st.cfg.control_interval_s) // tr.tick_s)
        )
        rates = {
            w.name: w.request_rate
            * sum(tr.at(k * tr.tick_s, i) for k in ticks)
            / max(len(ticks), 1)
            * (1 + self.headroom)
            for i, w in enumerate(serving)
        }
        req = PlanRequest(st.fleet, Workloads(serving=serving, training=[]), rates=rates)
        try:
            p = plan(replace(req, mip_gap=1e-3, time_limit_s=5.0))  # the controller's gap
        except PoolsError:
            return  # nothing can carry it: keep what runs
        st.replicas.clear()
        _install(st, p, ready_at=st.now)
        _fill_training(st)


def _install(st: SimState, p, ready_at: float) -> None:
    for s in p.serving:
        caps = class_caps_of(p, s.deployment, s.pool, s.tp, s.pp)
        for _ in range(s.replicas):
            st.replicas.append(
                Replica(
                    s.deployment,
                    s.pool,
                    s.gpus // s.replicas,
                    s.capacity_rps / s.replicas,
                    s.cost_per_hour / s.replicas,
                    ready_at,
                    caps,
                )
            )


def _fill_training(st: SimState) -> None:
    """Instant, lossless resize: every running job keeps its pool if its minimum still fits
    there, jobs by priority take what is free (up to their maximum)."""
    free = st.cap()
    for r in st.replicas:
        free[r.pool] -= r.gpus
    order = sorted(
        (j for j in st.jobs.values() if not j.done and j.spec.arrival_s <= st.now),
        key=lambda j: (-j.spec.priority, j.spec.arrival_s, j.spec.name),
    )
    for j in order:
        pools = [j.pool] if j.pool else []
        pools += [
            p.name
            for p in st.fleet.pools
            if p.name != j.pool and (not j.spec.gpu_types or p.gpu in j.spec.gpu_types)
        ]
        j.gpus, j.pool = 0, None
        for q in pools:
            if free[q] >= j.spec.min_gpus:
                j.gpus, j.pool = min(j.spec.max_gpus, free[q]), q
                free[q] -= j.gpus
                break


class FirstFitPolicy:
    """What Ray Serve's replica autoscaler + Ray's autoscaler do: replica counts follow load
    times (1 + headroom), each new replica goes to the first pool with room, and reclaiming
    GPUs from training suspends the whole job (Kueue-style preemption), losing the work since
    its last periodic checkpoint. Order "catalog": cost-blind, pools as the fleet lists them,
    the smallest layout in each; "cheapest": pools and layouts by $ per rps. On a fleet of one
    GPU type, "cheapest" is the single-type baseline."""

    def __init__(
        self, order: str = "catalog", headroom: float | None = None, name: str | None = None
    ) -> None:
        if order not in ("catalog", "cheapest"):
            raise ValueError(f"first-fit order must be catalog or cheapest, got {order!r}")
        self.name = name or f"first-fit-{order}"
        self.order, self.headroom = order, headroom
        self.options: dict[str, list[Option]] = {}
        self.last_up: dict[str, float] = {}

    def start(self, st: SimState, serving: list[ServingWorkload], trace: Trace) -> None:
        every = build_options(st.fleet, serving)
        # With no size-aware routing, a replica takes every request size it is sent: only the
        # layouts that serve every size (if none does, the deployment gets the ones there are).
        whole = {o.deployment for o in every if all(c > 0 for c in o.class_caps)}
        for o in every:
            if o.deployment not in whole or all(c > 0 for c in o.class_caps):
                self.options.setdefault(o.deployment, []).append(o)
        order = {p.name: i for i, p in enumerate(st.fleet.pools)}
        for d, opts in self.options.items():
            if self.order == "catalog":
                # Ray picks the node type that fits the request, not the cheapest: per pool
                # the smallest layout, pools in the order the cluster config lists them.
                key = lambda o: (o.gpus_per_replica, o.tp)  # noqa: E731
                pool_key = lambda o: order[o.pool]  # noqa: E731
            else:
                # Cost-aware: per pool the layout with the lowest $ per rps, cheapest first.
                key = pool_key = lambda o: o.replica_cost_per_hour / o.replica_capacity_rps
            best = {}
            for o in sorted(opts, key=key):
                best.setdefault(o.pool, o)
            self.options[d] = sorted(best.values(), key=pool_key)

    def control(self, st: SimState, serving: list[ServingWorkload]) -> None:
        h = st.cfg.headroom if self.headroom is None else self.headroom
        _first_fit_control(st, serving, self.options, self.last_up, h)


# ------------------------------------------------------------------ simulated actuators
class _SimLoad:
    def __init__(self, st: SimState) -> None:
        self.st = st

    def read(self) -> dict[str, DeploymentLoad]:
        return {d: DeploymentLoad(0.0, self.st.backlog[d], r) for d, r in self.st.observed.items()}


class _SimServe:
    def __init__(self, st: SimState, ctl_ref: list, models: dict[str, str]) -> None:
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
        caps = class_caps_of(p, deployment, pool, s.tp, s.pp)
        for _ in range(replicas - len(mine)):
            self.st.replicas.append(
                Replica(
                    deployment,
                    pool,
                    per,
                    s.capacity_rps / s.replicas,
                    s.cost_per_hour / s.replicas,
                    self.st.now + self.st.startup_s(self.models[deployment], pool, s.tp),
                    caps,
                )
            )


class _SimCapacity:
    def request(self, gpus_by_pool) -> None:  # the sim fleet is the autoscaler's ceiling
        pass


class _SimTraining:
    def __init__(self, st: SimState) -> None:
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


# ------------------------------------------------------------------ helpers
def _training_workloads(st: SimState) -> list[TrainingJob]:
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


def admit_fifo(st: SimState) -> None:
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


def _first_fit_control(
    st: SimState, serving, options: dict[str, list[Option]], last_up, headroom: float
) -> None:
    for w in serving:
        want = (st.observed.get(w.name, w.request_rate) + st.backlog[w.name] / 30.0) * (
            1 + headroom
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
                Replica(
                    w.name,
                    o.pool,
                    o.gpus_per_replica,
                    o.replica_capacity_rps,
                    o.replica_cost_per_hour,
                    st.now + st.startup_s(w.model, o.pool, o.tp),
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
    admit_fifo(st)

"""Cost-optimal placement: which pool serves each deployment with what TP/PP and how many
replicas, then which leftover GPUs each training job may borrow.

Lexicographic objective, solved as a sequence of exact ILPs (scipy.optimize.milp / HiGHS):
  1. minimise serving $/hour subject to every demand and pool capacity;
  2. with serving cost held at its optimum, maximise training GPUs, one priority level at a time
     (highest first), each level's optimum then held fixed.
Variables are aggregated: integer replicas per (deployment, pool, TP/PP option) and integer GPUs
per (job, pool) with one binary per (job, pool) (a job runs in one pool), so model size does not
grow with the fleet's GPU count. A greedy heuristic answers when HiGHS finds nothing in time.

Deployments with a request-size mix (`size_mix`, Melange-style) get, on top of the integer
replicas, one continuous variable per (size class, option): the class's requests/s routed to
that layout. Each class's demand must be routed in full, and a layout's replicas must cover the
time its routed classes take (sum over classes of routed rps / the layout's rps for that class).
A deployment without a mix is one class, for which this reduces to the plain capacity row.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from . import fit as fitmod
from .errors import FitError, InfeasibleError
from .models import Fleet, Pool
from .workloads import ServingWorkload, TrainingJob, Workloads

# Above this many replica options, stage 1 anchors the ILP on its LP relaxation (see
# _solve_serving); below it the ILP is solved from scratch, exactly.
EXACT_MAX_OPTIONS = 150
# Size-mixed deployments add continuous routing columns that make HiGHS' branch and bound much
# slower (seconds at 8 deployments x 9 classes); above this many options they are LP-anchored.
EXACT_MAX_MIXED_OPTIONS = 40
# Mixed precision AdamW under FSDP: bf16 weights + grads (4 B/param) + fp32 master, m, v
# (12 B/param), sharded over the job's GPUs (ZeRO-3 / FSDP full shard). Activations excluded.
TRAIN_BYTES_PER_PARAM = 16.0


@dataclass(frozen=True)
class Option:
    deployment: str
    pool: str
    gpu: str
    tp: int
    pp: int
    gpus_per_replica: int
    replica_capacity_rps: float
    replica_cost_per_hour: float
    batch: int
    tpot_s: float
    prefill_s: float
    source: str
    # Replica rps within the SLO per size class of the deployment (0: this layout cannot serve
    # the class); replica_capacity_rps is the rps at the mix of the classes it can serve.
    class_capacity_rps: tuple[float, ...] = ()

    @property
    def class_caps(self) -> tuple[float, ...]:
        return self.class_capacity_rps or (self.replica_capacity_rps,)

    @property
    def cost_per_rps(self) -> float:
        return self.replica_cost_per_hour / self.replica_capacity_rps


@dataclass
class ServingAssignment:
    deployment: str
    pool: str
    gpu: str
    replicas: int
    tp: int
    pp: int
    gpus: int
    capacity_rps: float
    cost_per_hour: float


@dataclass
class TrainingAssignment:
    job: str
    pool: str
    gpus: int


@dataclass
class PoolUsage:
    pool: str
    gpu: str
    gpus_capacity: int
    gpus_serving: int
    gpus_training: int
    gpus_free: int


@dataclass
class Plan:
    feasible: bool
    cost_per_hour: float
    serving: list[ServingAssignment] = field(default_factory=list)
    training: list[TrainingAssignment] = field(default_factory=list)
    pools: list[PoolUsage] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    binding: list[str] = field(default_factory=list)
    solver: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["cost_per_hour"] = round(self.cost_per_hour, 6)
        for s in d["serving"]:
            s["capacity_rps"] = round(s["capacity_rps"], 6)
            s["cost_per_hour"] = round(s["cost_per_hour"], 6)
        d["options"] = [
            {
                "deployment": o.deployment,
                "pool": o.pool,
                "gpu": o.gpu,
                "tp": o.tp,
                "pp": o.pp,
                "gpus_per_replica": o.gpus_per_replica,
                "replica_capacity_rps": round(o.replica_capacity_rps, 6),
                "replica_cost_per_hour": round(o.replica_cost_per_hour, 6),
                "batch": o.batch,
                "tpot_s": round(o.tpot_s, 6),
                "prefill_s": round(o.prefill_s, 6),
                "source": o.source,
                "class_capacity_rps": [round(c, 6) for c in o.class_caps],
            }
            for o in self.options
        ]
        return d

    def replicas(self) -> dict[tuple[str, str], int]:
        return {(s.deployment, s.pool): s.replicas for s in self.serving}

    def training_gpus(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for t in self.training:
            out[t.job] += t.gpus
        return dict(out)


Profiles = Mapping[tuple[str, str, int, int], float]  # (model, gpu, tp, pp) -> measured rps


def build_options(
    fleet: Fleet, serving: Sequence[ServingWorkload], profiles: Profiles | None = None
) -> list[Option]:
    """Every feasible (deployment, pool, TP/PP) replica layout, with its capacity and price.

    With a size mix, a layout is kept when it serves at least one class within the SLO; its
    replica_capacity_rps is then the rps at the mix of the classes it serves."""
    profiles = profiles or {}
    out: list[Option] = []
    for w in serving:
        spec = fitmod.model_spec(w.model)
        classes = w.size_classes()
        for pool in fleet.pools:
            if w.gpu_types and pool.gpu not in w.gpu_types:
                continue
            gpu = fleet.catalog[pool.gpu]
            price = fleet.price(pool)
            for f in fitmod.fits(spec, gpu, pool.gpus_per_node, pool.max_nodes or 0, w.kv_tokens()):
                if f.gpus > pool.gpus_capacity:
                    continue
                measured = profiles.get((spec.name, gpu.name, f.tp, f.pp)) or (
                    w.replica_rps or {}
                ).get(pool.gpu)
                ests = [
                    fitmod.estimate(spec, gpu, f, tin, tout, w.slo.slo(), measured)
                    for _share, tin, tout in classes
                ]
                caps = tuple(t.capacity_rps if t is not None else 0.0 for t in ests)
                served = [(c[0], cap) for c, cap in zip(classes, caps, strict=True) if cap > 0]
                if not served:
                    continue
                # Batch, TPOT and prefill of the average request, else of the fastest class.
                t = fitmod.estimate(
                    spec, gpu, f, w.avg_input_tokens, w.avg_output_tokens, w.slo.slo(), measured
                )
                if len(classes) > 1 or t is None:
                    share_served = sum(sh for sh, _ in served)
                    mix_rps = share_served / sum(sh / cap for sh, cap in served)
                    if t is None:
                        t = max(
                            (e for e in ests if e is not None),
                            key=lambda e: e.capacity_rps,
                        )
                    t = fitmod.Throughput(mix_rps, t.batch, t.tpot_s, t.prefill_s, t.source)
                out.append(
                    Option(
                        w.name,
                        pool.name,
                        pool.gpu,
                        f.tp,
                        f.pp,
                        f.gpus,
                        t.capacity_rps,
                        price * f.gpus,
                        t.batch,
                        t.tpot_s,
                        t.prefill_s,
                        t.source,
                        caps if len(classes) > 1 else (),
                    )
                )
    return out


def prune(options: Sequence[Option]) -> list[Option]:
    """Per (deployment, pool) keep the option with the best cost per rps and the smallest one.

    Within one pool the price per GPU is fixed, so the best cost/rps option also uses the fewest
    pool GPUs per rps: it dominates the others except for rounding, which the smallest replica
    serves best. Two options per pair keep the ILP small without losing any rounding freedom
    that matters in practice (bench/planner.py checks this against brute force).
    """
    groups: dict[tuple[str, str], list[Option]] = defaultdict(list)
    for o in options:
        groups[(o.deployment, o.pool)].append(o)
    kept: list[Option] = []
    for key in sorted(groups):
        opts = groups[key]
        best = min(opts, key=lambda o: (o.cost_per_rps, o.gpus_per_replica))
        small = min(opts, key=lambda o: (o.gpus_per_replica, o.cost_per_rps))
        mine = [best]
        # With a size mix, also the cheapest layout per rps of each class.
        for c in range(len(best.class_capacity_rps)):
            serve = [o for o in opts if o.class_caps[c] > 0]
            if serve:
                b = min(
                    serve,
                    key=lambda o: (o.replica_cost_per_hour / o.class_caps[c], o.gpus_per_replica),
                )
                if b not in mine:
                    mine.append(b)
        if small not in mine and small.cost_per_rps < best.cost_per_rps * 1.5:
            mine.append(small)
        kept.extend(mine)
    return kept


_JOB_POOLS: ContextVar[dict[str, str] | None] = ContextVar("_JOB_POOLS", default=None)


def _with_floors(
    options: list[Option], all_options: Sequence[Option], keep: Mapping[tuple[str, str], int]
) -> list[Option]:
    """Make sure each kept (deployment, pool) has its option in the model (pruning may have
    dropped that layout) and record the floor on it."""
    out = list(options)
    have = {(o.deployment, o.pool) for o in out}
    for o in all_options:
        if (o.deployment, o.pool) in keep and (o.deployment, o.pool) not in have:
            out.append(o)
            have.add((o.deployment, o.pool))
    _FLOORS.set({k: v for k, v in keep.items() if v > 0})
    return out


_FLOORS: ContextVar[dict[tuple[str, str], int] | None] = ContextVar("_FLOORS", default=None)


def _training_pools(job: TrainingJob, fleet: Fleet) -> list[Pool]:
    """Pools a job may use: allowed types, room for its minimum, and enough memory in total."""
    spec = fitmod.model_spec(job.model)
    need = spec.params * TRAIN_BYTES_PER_PARAM
    pinned_pool = (_JOB_POOLS.get() or {}).get(job.name)
    out = []
    for p in fleet.pools:
        if pinned_pool is not None and p.name != pinned_pool:
            continue
        if job.gpu_types and p.gpu not in job.gpu_types:
            continue
        if p.gpus_capacity < max(job.gpus.min, 1):
            continue
        per_gpu = fitmod.usable_bytes(fleet.catalog[p.gpu])
        if max(job.gpus.min, 1) * per_gpu < need and job.gpus.max * per_gpu < need:
            continue
        out.append(p)
    return out


class _Model:
    """Sparse MILP builder: columns are variables, rows are constraints."""

    def __init__(self) -> None:
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[bool] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []
        self.routed: dict[tuple[int, int], int] = {}  # (option index, size class) -> column

    def var(self, lb: float, ub: float, integer: bool = True) -> int:
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(integer)
        return len(self.lb) - 1

    def row(self, coefs: dict[int, float], lo: float, hi: float) -> None:
        self.rows.append((coefs, lo, hi))

    def solve(self, c: np.ndarray, time_limit: float, gap: float, integral: bool = True):
        n = len(self.lb)
        r, cidx, vals = [], [], []
        for i, (coefs, _, _) in enumerate(self.rows):
            for j, v in coefs.items():
                r.append(i)
                cidx.append(j)
                vals.append(v)
        a = coo_array((vals, (r, cidx)), shape=(len(self.rows), n)).tocsr()
        lo = np.array([x[1] for x in self.rows])
        hi = np.array([x[2] for x in self.rows])
        cons = [LinearConstraint(a, lo, hi)] if self.rows else []
        return milp(
            c,
            integrality=np.array(self.integer, dtype=float) if integral else np.zeros(n),
            bounds=Bounds(np.array(self.lb), np.array(self.ub)),
            constraints=cons,
            options={"time_limit": max(time_limit, 0.05), "mip_rel_gap": gap, "presolve": True},
        )


def _round(x: np.ndarray) -> np.ndarray:
    return np.rint(x).astype(int)


def plan(
    fleet: Fleet,
    workloads: Workloads,
    *,
    profiles: Profiles | None = None,
    time_limit_s: float = 10.0,
    method: str = "ilp",
    mip_gap: float = 1e-4,
    rates: Mapping[str, float] | None = None,
    pinned: Mapping[tuple[str, str], tuple[int, int]] | None = None,
    keep: Mapping[tuple[str, str], int] | None = None,
    job_pools: Mapping[str, str] | None = None,
    held: Mapping[str, int] | None = None,
    exact: bool = False,
) -> Plan:
    """Solve the placement. `rates` overrides request_rate per deployment (the controller passes
    live load); `pinned` fixes TP x PP per (deployment, pool) that already runs; `keep` is a
    floor of replicas per (deployment, pool) (the controller keeps running replicas in place
    while demand is not falling, so scale-ups add capacity instead of migrating it);
    `job_pools` keeps a running training job in its pool; `held` GPUs per pool are off limits
    to serving (the controller's no-reclaim alternative); `exact` skips option pruning and LP
    anchoring (slow at fleet scale; benchmarks use it as the reference). Raises
    FitError / InfeasibleError with a one-line reason naming what is missing."""
    t0 = time.perf_counter()
    serving = [
        w.model_copy(update={"request_rate": rates[w.name]}) if rates and w.name in rates else w
        for w in workloads.serving
    ]
    all_options = build_options(fleet, serving, profiles)
    if pinned:
        # Running replicas keep their TP x PP: changing it means replacing every replica.
        all_options = [
            o
            for o in all_options
            if pinned.get((o.deployment, o.pool), (o.tp, o.pp)) == (o.tp, o.pp)
        ]
    _check_every_deployment_has_options(fleet, serving, all_options)
    # Small models are solved over every option, exactly; pruning only pays at scale.
    limit = (
        EXACT_MAX_MIXED_OPTIONS
        if any(len(w.size_classes()) > 1 for w in serving)
        else EXACT_MAX_OPTIONS
    )
    big = len(all_options) > limit and not exact
    options = prune(all_options) if big else list(all_options)
    # Per-call settings read deep inside the model builders (reset on every call).
    _FLOORS.set({})
    _JOB_POOLS.set(dict(job_pools or {}))
    _HELD.set(dict(held or {}))
    if keep:
        options = _with_floors(options, all_options, keep)
    active = [w for w in serving if w.request_rate > 0 or w.min_replicas > 0]
    deadline = t0 + time_limit_s

    solver: dict = {"method": method}
    x: np.ndarray | None = None
    eff: dict[int, float] = {}
    if method == "ilp":
        trainable = {p.name for j in workloads.training for p in _training_pools(j, fleet)}
        x, status, info, eff = _solve_serving(
            fleet, active, options, deadline, mip_gap, trainable, anchor=big
        )
        solver["serving_status"] = status
        solver.update({k: round(v, 6) for k, v in info.items()})
        if x is None and status == "infeasible":
            _raise_infeasible(fleet, active, options, deadline)
    if x is None:
        x, eff = _greedy_serving(fleet, active, options)
        solver["method"] = "greedy" if method == "greedy" else "greedy-fallback"
        if x is None:
            _raise_infeasible(fleet, active, options, deadline)
    assert x is not None
    jobs = sorted(workloads.training, key=lambda j: (-j.priority, j.name))
    train: dict[tuple[str, str], int] = {}
    if jobs:
        if solver["method"] == "ilp":
            res = _solve_training(fleet, options, x, jobs, deadline, mip_gap)
            if res is not None:
                train = res
            else:
                solver["training_status"] = "time limit: greedy"
                train = _greedy_training(fleet, options, x, jobs)
        else:
            train = _greedy_training(fleet, options, x, jobs)
    solver["time_s"] = round(time.perf_counter() - t0, 4)
    solver["variables"] = len(options) + 2 * len(jobs) * len(fleet.pools)
    return _assemble(fleet, serving, options, all_options, x, eff, train, jobs, solver)


def _check_every_deployment_has_options(fleet, serving, options) -> None:
    have = {o.deployment for o in options}
    for w in serving:
        if w.name in have:
            continue
        spec = fitmod.model_spec(w.model)
        pools = [p for p in fleet.pools if not w.gpu_types or p.gpu in w.gpu_types]
        if not pools:
            raise FitError(
                f"deployment {w.name!r}: no pool has an allowed GPU type "
                f"({', '.join(w.gpu_types or [])})"
            )
        cands = [(p.name, fleet.catalog[p.gpu], p.gpus_per_node, p.max_nodes or 0) for p in pools]
        fitmod.require_fit(spec, cands, w.kv_tokens())
        raise FitError(
            f"deployment {w.name!r}: model {w.model!r} fits but no pool meets its SLO "
            f"(ttft_p99 {w.slo.ttft_p99_s}s, tpot_p99 {w.slo.tpot_p99_s}s)"
        )


_HELD: ContextVar[dict[str, int] | None] = ContextVar("_HELD", default=None)


def _serving_model(fleet, active, options, slack: bool = False):
    m = _Model()
    held = _HELD.get() or {}
    cap = {p.name: max(p.gpus_capacity - held.get(p.name, 0), 0) for p in fleet.pools}
    rate = {w.name: w.request_rate for w in active}
    least = {w.name: w.min_replicas for w in active}
    floors = dict(_FLOORS.get() or {})
    shares = {w.name: [c[0] for c in w.size_classes()] for w in active}
    xs = []
    for o in options:
        # More replicas of one option than cover the whole demand alone is never optimal; the
        # tight bound shrinks HiGHS' branch-and-bound tree by orders of magnitude.
        r = rate.get(o.deployment, 0.0)
        alone = (
            fitmod.ceil_div(
                sum(
                    r * sh / rps
                    for sh, rps in zip(shares[o.deployment], o.class_caps, strict=True)
                    if rps
                ),
                1.0,
            )
            if o.class_capacity_rps and o.deployment in shares
            else fitmod.ceil_div(r, o.replica_capacity_rps)
        )
        need = max(alone, least.get(o.deployment, 0))
        ub = need if slack else min(cap[o.pool] // o.gpus_per_replica, need)
        lb = floors.get((o.deployment, o.pool), 0) if not slack else 0
        if lb:
            floors[(o.deployment, o.pool)] = 0  # one option per pair carries the floor
        xs.append(m.var(min(lb, cap[o.pool] // o.gpus_per_replica), max(ub, lb)))
    by_dep: dict[str, dict[int, float]] = defaultdict(dict)
    by_pool: dict[str, dict[int, float]] = defaultdict(dict)
    for i, o in enumerate(options):
        by_dep[o.deployment][xs[i]] = o.replica_capacity_rps
        by_pool[o.pool][xs[i]] = o.gpus_per_replica
    # routed[(option index, class)] = column of the class's rps routed to that option.
    routed: dict[tuple[int, int], int] = {}
    for w in active:
        if len(shares[w.name]) > 1:
            by_class: dict[int, dict[int, float]] = defaultdict(dict)
            for i, o in enumerate(options):
                if o.deployment != w.name:
                    continue
                busy = {xs[i]: -1.0}
                for c, rps in enumerate(o.class_caps):
                    if rps > 0:
                        a = m.var(0.0, w.request_rate * shares[w.name][c], integer=False)
                        routed[(i, c)] = a
                        by_class[c][a] = 1.0
                        busy[a] = 1.0 / rps
                # The option's replicas cover the replica-time its routed classes take.
                m.row(busy, -np.inf, 0.0)
            for c, sh in enumerate(shares[w.name]):
                m.row(by_class.get(c, {}), w.request_rate * sh, np.inf)
        else:
            m.row(by_dep[w.name], w.request_rate, np.inf)
        # Any positive rate already forces a replica; the row is only added when it can bind
        # (a redundant row changes HiGHS' path to an equally cheap but different plan).
        if w.min_replicas > (1 if w.request_rate > 0 else 0):
            m.row(dict.fromkeys(by_dep[w.name], 1.0), w.min_replicas, np.inf)
    slacks = {}
    for p in fleet.pools:
        coefs = dict(by_pool.get(p.name, {}))
        if slack:
            s = m.var(0, np.inf)
            slacks[p.name] = s
            coefs[s] = -1.0
        m.row(coefs, -np.inf, cap[p.name])
    m.routed = routed
    return m, xs, by_pool, slacks


def _solve_serving(fleet, active, options, deadline, gap, trainable=frozenset(), anchor=False):
    """Stage 1. Small models are solved exactly. Large ones first solve the LP relaxation and
    fix each option's replicas to at least floor(LP): the LP already places the bulk of every
    big deployment, and the integer program only decides the last replicas (0.1-0.2 s instead
    of 1-20 s for the from-scratch ILP at 10k GPUs x 50 deployments; bench/planner.py measures
    the cost it gives up against the from-scratch optimum, ~0.1-0.6%). The LP value is a proven
    lower bound, reported as `lp_bound` with the worst-case `gap_bound`. No time-dependent
    incumbent is ever used when the solve finishes, so answers are deterministic."""
    info: dict = {}
    if not active:
        return np.zeros(len(options), dtype=int), "optimal", info, {}
    m, xs, _, _ = _serving_model(fleet, active, options)
    # Tie-break among equal-cost placements: prefer GPUs no training job can use. The weight
    # (1e-6 $/h per GPU) is below any price difference, so it never changes the cost optimum.
    c = np.zeros(len(m.lb))
    for i, o in enumerate(options):
        c[xs[i]] = o.replica_cost_per_hour + 1e-6 * o.gpus_per_replica * (o.pool in trainable)
    if anchor:
        lp = m.solve(c, deadline - time.perf_counter(), gap, integral=False)
        if lp.x is None:
            return None, "infeasible" if lp.status == 2 else "time limit", info, {}
        info["lp_bound"] = float(lp.fun)
        for i, v in zip(xs, lp.x[xs], strict=True):
            m.lb[i] = float(math.floor(v + 1e-9))
    res = m.solve(c, deadline - time.perf_counter(), gap)
    if res.x is None and "lp_bound" in info:
        return None, "time limit", info, {}
    if res.x is not None:
        if "lp_bound" in info:
            info["gap_bound"] = (float(res.fun) - info["lp_bound"]) / max(info["lp_bound"], 1e-9)
        routed = {k: float(res.x[v]) for k, v in m.routed.items()}
        status = "optimal" if res.status == 0 else "time limit (incumbent)"
        return _round(res.x[xs]), status, info, _effective_rps(options, routed)
    return None, "infeasible" if res.status == 2 else "time limit", info, {}


def _effective_rps(options, routed: Mapping[tuple[int, int], float]) -> dict[int, float]:
    """Per-replica rps of each size-mixed option at the mix routed to it: routed rps over the
    replica-time it takes. Options with nothing routed keep their capacity at the full mix."""
    rps: dict[int, float] = defaultdict(float)
    busy: dict[int, float] = defaultdict(float)
    for (i, c), a in routed.items():
        if a > 1e-9:
            rps[i] += a
            busy[i] += a / options[i].class_caps[c]
    return {i: rps[i] / busy[i] for i in rps}


def _solve_training(fleet, options, x_serving, jobs, deadline, gap):
    """Training on what serving leaves: serving is fixed at the stage-1 optimum (the stage-1
    tie-break already steered it off GPUs training can use), so this ILP has only
    jobs x pools variables and stays small at any fleet size."""
    m = _Model()
    free = {p.name: p.gpus_capacity for p in fleet.pools}
    for o, n in zip(options, x_serving, strict=True):
        free[o.pool] -= int(n) * o.gpus_per_replica
    by_pool: dict[str, dict[int, float]] = defaultdict(dict)
    ys: dict[tuple[str, str], int] = {}
    for j in jobs:
        ws = []
        for p in _training_pools(j, fleet):
            if free[p.name] < max(j.gpus.min, 1):
                continue
            w = m.var(0, 1)
            y = m.var(0, min(j.gpus.max, free[p.name]))
            ys[(j.name, p.name)] = y
            ws.append(w)
            by_pool[p.name][y] = 1.0
            # y in [min*w, max*w]: a job runs in one pool, at least min GPUs or not at all.
            m.row({y: 1.0, w: -float(j.gpus.max)}, -np.inf, 0.0)
            m.row({y: 1.0, w: -float(max(j.gpus.min, 1))}, 0.0, np.inf)
        if ws:
            m.row(dict.fromkeys(ws, 1.0), 0.0, 1.0)
    if not ys:
        return {}
    for pool, coefs in by_pool.items():
        m.row(coefs, -np.inf, free[pool])
    n = len(m.lb)
    sol = None
    prio = {j.name: j.priority for j in jobs}
    for level in sorted({j.priority for j in jobs}, reverse=True):
        idx = [v for (jn, _), v in ys.items() if prio[jn] == level]
        if not idx:
            continue
        c = np.zeros(n)
        c[idx] = -1.0
        res = m.solve(c, deadline - time.perf_counter(), gap)
        if res.x is None:
            return None
        sol = res.x
        # Hold this level at its optimum while lower levels are maximised.
        m.row(dict.fromkeys(idx, 1.0), float(round(-res.fun)) - 0.5, np.inf)
    if sol is None:
        return {}
    return {k: round(sol[v]) for k, v in ys.items() if round(sol[v]) > 0}


def _job(jobs, name):
    return next(j for j in jobs if j.name == name)


def _greedy_serving(fleet, active, options) -> tuple[np.ndarray | None, dict[int, float]]:
    """Cheapest useful capacity first: bulk-fill whole replicas of the best cost/rps option,
    then cover the remainder with the option cheapest for what is left."""
    free = {p.name: p.gpus_capacity for p in fleet.pools}
    x = np.zeros(len(options), dtype=int)
    routed: dict[tuple[int, int], float] = defaultdict(float)
    by_dep: dict[str, list[int]] = defaultdict(list)
    for i, o in enumerate(options):
        by_dep[o.deployment].append(i)
    order = sorted(
        active,
        key=lambda w: (
            -w.request_rate * min(options[i].cost_per_rps for i in by_dep[w.name]),
            w.name,
        ),
    )
    for w in order:
        # A size-mixed deployment is one demand at the full mix on the layouts that serve every
        # class; only if none does, each class is placed on replicas of its own.
        classes = w.size_classes()
        mixed = len(classes) > 1 and not any(min(options[i].class_caps) > 0 for i in by_dep[w.name])
        for c, (share, _tin, _tout) in enumerate(classes if mixed else [(1.0, 0, 0)]):
            need = w.request_rate * share

            def cap(i: int, c: int = c, mixed: bool = mixed) -> float:
                if mixed:
                    return options[i].class_caps[c]
                return options[i].replica_capacity_rps if min(options[i].class_caps) > 0 else 0

            idxs = sorted(
                (i for i in by_dep[w.name] if cap(i) > 0),
                key=lambda i: (options[i].replica_cost_per_hour / cap(i), options[i].pool),
            )
            for i in idxs:
                o = options[i]
                n = min(int(need // cap(i)), free[o.pool] // o.gpus_per_replica)
                x[i] += n
                free[o.pool] -= n * o.gpus_per_replica
                if mixed:
                    routed[(i, c)] += min(n * cap(i), max(need, 0.0))
                need -= n * cap(i)
            while need > 1e-9:
                fits_ = [i for i in idxs if free[options[i].pool] >= options[i].gpus_per_replica]
                if not fits_:
                    return None, {}
                i = min(
                    fits_,
                    key=lambda i: (options[i].replica_cost_per_hour / min(cap(i), need), i),
                )
                x[i] += 1
                free[options[i].pool] -= options[i].gpus_per_replica
                if mixed:
                    routed[(i, c)] += min(cap(i), need)
                need -= cap(i)
        idxs = by_dep[w.name]
        while sum(int(x[i]) for i in idxs) < w.min_replicas:
            fits_ = [i for i in idxs if free[options[i].pool] >= options[i].gpus_per_replica]
            if not fits_:
                return None, {}
            i = min(fits_, key=lambda i: (options[i].replica_cost_per_hour, i))
            x[i] += 1
            free[options[i].pool] -= options[i].gpus_per_replica
    return x, _effective_rps(options, routed)


def _greedy_training(fleet, options, x, jobs) -> dict[tuple[str, str], int]:
    free = {p.name: p.gpus_capacity for p in fleet.pools}
    for o, n in zip(options, x, strict=True):
        free[o.pool] -= int(n) * o.gpus_per_replica
    out = {}
    for j in jobs:
        pools = sorted(_training_pools(j, fleet), key=lambda p: (-free[p.name], p.name))
        if pools and free[pools[0].name] >= max(j.gpus.min, 1):
            g = min(j.gpus.max, free[pools[0].name])
            out[(j.name, pools[0].name)] = g
            free[pools[0].name] -= g
    return out


def _raise_infeasible(fleet, active, options, deadline) -> None:
    """Elastic re-solve: the fewest extra GPUs per pool that would make the demand feasible."""
    m, xs, _, slacks = _serving_model(fleet, active, options, slack=True)
    n = len(m.lb)
    c = np.zeros(n)
    # Missing GPUs first; serving cost only breaks ties (scaled far below one GPU).
    total = sum(o.replica_cost_per_hour for o in options) or 1.0
    for i, o in enumerate(options):
        c[xs[i]] = o.replica_cost_per_hour / total * 1e-3
    for s in slacks.values():
        c[s] = 1.0
    res = m.solve(c, max(deadline - time.perf_counter(), 5.0), 1e-6)
    missing = []
    if res.x is not None:
        users: dict[str, set[str]] = defaultdict(set)
        for i, o in enumerate(options):
            if round(res.x[xs[i]]) > 0:
                users[o.pool].add(o.deployment)
        for p in fleet.pools:
            k = math.ceil(res.x[slacks[p.name]] - 1e-6)
            if k > 0:
                missing.append(
                    {"pool": p.name, "gpu": p.gpu, "gpus": k, "deployments": sorted(users[p.name])}
                )
    if missing:
        parts = [
            f"{m_['gpus']} more {m_['gpu']}-class GPUs (pool {m_['pool']}) for "
            f"{', '.join(m_['deployments'])}"
            for m_ in missing
        ]
        raise InfeasibleError("infeasible: needs " + "; ".join(parts), missing)
    raise InfeasibleError("infeasible: serving demand exceeds pool capacity", missing)


def _assemble(fleet, serving, options, all_options, x, eff, train, jobs, solver) -> Plan:
    cap = {p.name: p.gpus_capacity for p in fleet.pools}
    used_s: dict[str, int] = defaultdict(int)
    used_t: dict[str, int] = defaultdict(int)
    merged: dict[tuple[str, str, int, int], ServingAssignment] = {}
    for i, (o, n) in enumerate(zip(options, x, strict=True)):
        if n <= 0:
            continue
        k = (o.deployment, o.pool, o.tp, o.pp)
        merged[k] = ServingAssignment(
            o.deployment,
            o.pool,
            o.gpu,
            int(n),
            o.tp,
            o.pp,
            int(n) * o.gpus_per_replica,
            n * eff.get(i, o.replica_capacity_rps),
            n * o.replica_cost_per_hour,
        )
        used_s[o.pool] += int(n) * o.gpus_per_replica
    training = [TrainingAssignment(j, p, g) for (j, p), g in sorted(train.items())]
    for t in training:
        used_t[t.pool] += t.gpus
    usage = [
        PoolUsage(
            p.name,
            p.gpu,
            cap[p.name],
            used_s[p.name],
            used_t[p.name],
            cap[p.name] - used_s[p.name] - used_t[p.name],
        )
        for p in fleet.pools
    ]
    binding = [
        f"pool {u.pool}: full ({u.gpus_capacity} {u.gpu})"
        for u in usage
        if u.gpus_free == 0 and u.gpus_capacity > 0
    ]
    got = defaultdict(int)
    for t in training:
        got[t.job] += t.gpus
    for j in jobs:
        if got[j.name] >= j.gpus.max:
            binding.append(f"job {j.name}: at its max of {j.gpus.max} GPUs")
        elif got[j.name] == 0:
            binding.append(f"job {j.name}: no room for its min of {j.gpus.min} GPUs")
    cost = sum(s.cost_per_hour for s in merged.values())
    return Plan(
        feasible=True,
        cost_per_hour=float(cost),
        serving=sorted(merged.values(), key=lambda s: (s.deployment, s.pool, s.tp, s.pp)),
        training=training,
        pools=usage,
        options=sorted(all_options, key=lambda o: (o.deployment, o.pool, o.tp, o.pp)),
        binding=binding,
        solver=solver,
    )

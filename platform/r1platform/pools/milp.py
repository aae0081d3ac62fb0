"""The MILP builder and its solves (scipy.optimize.milp / HiGHS).

Stage 1 places serving at least cost; stage 2 gives training what serving leaves (minimum shares
first, then growth, each one priority level at a time); an elastic re-solve names the GPUs an
infeasible demand lacks. Variables are aggregated per (deployment, pool, layout) and per
(job, pool), so the model does not grow with the fleet's GPU count.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from . import fit as fitmod
from .errors import InfeasibleError
from .fleet import Fleet
from .options import training_pools
from .plan_model import Option
from .training_memory import pool_min_gpus
from .workloads import ServingWorkload


class SparseMILP:
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


def round_int(x: np.ndarray) -> np.ndarray:
    return np.rint(x).astype(int)


def serving_model(
    fleet: Fleet,
    active: Sequence[ServingWorkload],
    options: Sequence[Option],
    cap: Mapping[str, int],
    floors: Mapping[tuple[str, str], int],
    slack: bool = False,
):
    """Stage-1 model: integer replicas per option (plus routed rps per size class), every
    deployment's demand covered, every pool within `cap` GPUs (or over it by a slack column,
    for the infeasibility report). The first option of a (deployment, pool) in `floors`
    carries that floor as its lower bound."""
    m = SparseMILP()
    rate = {w.name: w.request_rate for w in active}
    least = {w.name: w.min_replicas for w in active}
    floors = dict(floors)
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


def solve_serving(
    fleet: Fleet,
    active: Sequence[ServingWorkload],
    options: Sequence[Option],
    cap: Mapping[str, int],
    floors: Mapping[tuple[str, str], int],
    deadline: float,
    gap: float,
    trainable: frozenset[str] | set[str] = frozenset(),
    anchor: bool = False,
):
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
    m, xs, _, _ = serving_model(fleet, active, options, cap, floors)
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
        return round_int(res.x[xs]), status, info, effective_rps(options, routed)
    return None, "infeasible" if res.status == 2 else "time limit", info, {}


def effective_rps(options, routed: Mapping[tuple[int, int], float]) -> dict[int, float]:
    """Per-replica rps of each size-mixed option at the mix routed to it: routed rps over the
    replica-time it takes. Options with nothing routed keep their capacity at the full mix."""
    rps: dict[int, float] = defaultdict(float)
    busy: dict[int, float] = defaultdict(float)
    for (i, c), a in routed.items():
        if a > 1e-9:
            rps[i] += a
            busy[i] += a / options[i].class_caps[c]
    return {i: rps[i] / busy[i] for i in rps}


def solve_training(fleet, options, x_serving, jobs, deadline, gap, job_pools=None):
    """Training on what serving leaves: serving is fixed at the stage-1 optimum (the stage-1
    tie-break already steered it off GPUs training can use), so this ILP has only
    jobs x pools variables and stays small at any fleet size."""
    m = SparseMILP()
    free = {p.name: p.gpus_capacity for p in fleet.pools}
    for o, n in zip(options, x_serving, strict=True):
        free[o.pool] -= int(n) * o.gpus_per_replica
    by_pool: dict[str, dict[int, float]] = defaultdict(dict)
    ys: dict[tuple[str, str], int] = {}
    runs: dict[str, list[int]] = {}
    for j in jobs:
        ws = runs.setdefault(j.name, [])
        for p in training_pools(j, fleet, job_pools):
            lo = pool_min_gpus(j, fleet, p) or 1  # the fewest GPUs its memory mode fits on
            if free[p.name] < lo:
                continue
            w = m.var(0, 1)
            y = m.var(0, min(j.gpus.max, free[p.name]))
            ys[(j.name, p.name)] = y
            ws.append(w)
            by_pool[p.name][y] = 1.0
            # y in [lo*w, max*w]: a job runs in one pool, on at least lo GPUs or not at all.
            m.row({y: 1.0, w: -float(j.gpus.max)}, -np.inf, 0.0)
            m.row({y: 1.0, w: -float(lo)}, 0.0, np.inf)
        if ws:
            m.row(dict.fromkeys(ws, 1.0), 0.0, 1.0)
    if not ys:
        return {}
    for pool, coefs in by_pool.items():
        m.row(coefs, -np.inf, free[pool])
    n = len(m.lb)
    sol = None
    prio = {j.name: j.priority for j in jobs}
    levels = sorted({j.priority for j in jobs}, reverse=True)
    # Minimum shares before growth: first as many jobs running (each on at least its minimum)
    # as fit, a priority level at a time, then GPUs. Growing a high-priority job past its
    # minimum never keeps a lower-priority one from starting; only its minimum can.
    stages = [[w for jn, ws in runs.items() if prio[jn] == lv for w in ws] for lv in levels]
    stages += [[v for (jn, _), v in ys.items() if prio[jn] == lv] for lv in levels]
    for idx in stages:
        if not idx:
            continue
        c = np.zeros(n)
        c[idx] = -1.0
        res = m.solve(c, deadline - time.perf_counter(), gap)
        if res.x is None:
            return None
        sol = res.x
        # Hold this stage at its optimum while the later ones are maximised.
        m.row(dict.fromkeys(idx, 1.0), float(round(-res.fun)) - 0.5, np.inf)
    if sol is None:
        return {}
    return {k: round(sol[v]) for k, v in ys.items() if round(sol[v]) > 0}


def raise_infeasible(fleet, active, options, deadline, cap) -> None:
    """Elastic re-solve: the fewest extra GPUs per pool that would make the demand feasible."""
    m, xs, _, slacks = serving_model(fleet, active, options, cap, {}, slack=True)
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

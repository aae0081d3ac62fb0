"""Cost-optimal placement: which pool serves each deployment with what TP/PP and how many
replicas, then which leftover GPUs each training job may borrow.

Lexicographic objective, solved as a sequence of exact ILPs (scipy.optimize.milp / HiGHS):
  1. minimise serving $/hour subject to every demand and pool capacity;
  2. with serving cost held at its optimum, maximise the number of training jobs running on at
     least their minimum, then training GPUs, each one priority level at a time (highest
     first), each optimum then held fixed.
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

import time
from collections import defaultdict
from dataclasses import replace

import numpy as np

from .engine_profiles import profile_of_model
from .greedy import greedy_serving, greedy_training
from .milp import raise_infeasible, solve_serving, solve_training
from .options import (
    build_options,
    check_every_deployment_has_options,
    prune,
    training_pools,
    with_floors,
)
from .plan_model import Plan, PlanRequest, PoolUsage, ServingAssignment, TrainingAssignment

# Above this many replica options, stage 1 anchors the ILP on its LP relaxation (see
# milp.solve_serving); below it the ILP is solved from scratch, exactly.
EXACT_MAX_OPTIONS = 150
# Size-mixed deployments add continuous routing columns that make HiGHS' branch and bound much
# slower (seconds at 8 deployments x 9 classes); above this many options they are LP-anchored.
EXACT_MAX_MIXED_OPTIONS = 40


def plan(req: PlanRequest) -> Plan:
    """Solve the placement `req` describes (see PlanRequest for each field). Raises
    FitError / InfeasibleError with a one-line reason naming what is missing."""
    t0 = time.perf_counter()
    fleet, workloads = req.fleet, req.workloads
    serving = [
        w.model_copy(update={"request_rate": req.rates[w.name]}) if w.name in req.rates else w
        for w in workloads.serving
    ]
    all_options = build_options(fleet, serving, req.profiles)
    if req.pinned:
        # Running replicas keep their TP x PP: changing it means replacing every replica.
        all_options = [
            o
            for o in all_options
            if req.pinned.get((o.deployment, o.pool), (o.tp, o.pp)) == (o.tp, o.pp)
        ]
    check_every_deployment_has_options(fleet, serving, all_options)
    # Small models are solved over every option, exactly; pruning only pays at scale.
    limit = (
        EXACT_MAX_MIXED_OPTIONS
        if any(len(w.size_classes()) > 1 for w in serving)
        else EXACT_MAX_OPTIONS
    )
    big = len(all_options) > limit and not req.exact
    options = prune(all_options) if big else list(all_options)
    floors = req.floors if req.keep else {}
    if req.keep:
        options = with_floors(options, all_options, req.keep)
    cap = req.serving_capacity()
    active = [w for w in serving if w.request_rate > 0 or w.min_replicas > 0]
    deadline = t0 + req.time_limit_s

    solver: dict = {"method": req.method}
    x: np.ndarray | None = None
    eff: dict[int, float] = {}
    if req.method == "ilp":
        trainable = {
            p.name for j in workloads.training for p in training_pools(j, fleet, req.job_pools)
        }
        x, status, info, eff = solve_serving(
            fleet, active, options, cap, floors, deadline, req.mip_gap, trainable, anchor=big
        )
        solver["serving_status"] = status
        solver.update({k: round(v, 6) for k, v in info.items()})
        if x is None and status == "infeasible":
            raise_infeasible(fleet, active, options, deadline, cap)
    if x is None:
        x, eff = greedy_serving(active, options, cap, floors)
        solver["method"] = "greedy" if req.method == "greedy" else "greedy-fallback"
        if x is None:
            raise_infeasible(fleet, active, options, deadline, cap)
    assert x is not None
    jobs = sorted(workloads.training, key=lambda j: (-j.priority, j.name))
    train: dict[tuple[str, str], int] = {}
    if jobs:
        if solver["method"] == "ilp":
            res = solve_training(fleet, options, x, jobs, deadline, req.mip_gap, req.job_pools)
            if res is not None:
                train = res
            else:
                solver["training_status"] = "time limit: greedy"
                train = greedy_training(fleet, options, x, jobs, req.job_pools)
        else:
            train = greedy_training(fleet, options, x, jobs, req.job_pools)
    solver["time_s"] = round(time.perf_counter() - t0, 4)
    solver["variables"] = len(options) + 2 * len(jobs) * len(fleet.pools)
    return _assemble(fleet, serving, options, all_options, x, eff, train, jobs, solver)


def plan_one_layout(req: PlanRequest) -> Plan:
    """plan() with at most one TP x PP layout per (deployment, pool): the Serve deployment
    `D@P` has one layout. A plan that mixes layouts in a pool (common with request-size mixes:
    small TP for short requests, large TP for long ones) is solved again with that pair pinned
    to the layout that carries most of its capacity. Each round pins at least one more pair,
    so this ends after at most one round per pair."""
    pins = dict(req.pinned)
    while True:
        p = plan(replace(req, pinned=pins))
        by: dict[tuple[str, str], list[ServingAssignment]] = defaultdict(list)
        for s in p.serving:
            by[(s.deployment, s.pool)].append(s)
        mixed = {
            k: max(v, key=lambda s: (s.capacity_rps, -s.gpus, -s.tp))
            for k, v in by.items()
            if len({(s.tp, s.pp) for s in v}) > 1
        }
        if not mixed:
            return p
        pins.update({k: (s.tp, s.pp) for k, s in mixed.items()})


def _assemble(fleet, serving, options, all_options, x, eff, train, jobs, solver) -> Plan:
    cap = {p.name: p.gpus_capacity for p in fleet.pools}
    used_s: dict[str, int] = defaultdict(int)
    used_t: dict[str, int] = defaultdict(int)
    merged: dict[tuple[str, str, int, int], ServingAssignment] = {}
    by_name = {w.name: w for w in serving}
    for i, (o, n) in enumerate(zip(options, x, strict=True)):
        if n <= 0:
            continue
        w = by_name[o.deployment]
        prof = profile_of_model(w.model, fleet.catalog[o.gpu], **w.engine_choices())
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
            w.model,
            prof.dtype,
            prof.quantization,
            prof.kv_cache_dtype,
            prof.fp8_kernel,
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

"""A brute-force reference solver for the serving stage, to check the ILP on small instances."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import linprog

from .fleet import Fleet
from .options import build_options
from .plan_model import Option
from .workloads import Workloads


def mix_servable(rate: float, shares: list[float], opts: list[Option], replicas: list[int]) -> bool:
    """Whether `replicas` of each option can serve a size-mixed deployment's `rate`: an LP over
    how much of each class goes to each option (a class's rps on an option takes rps / the
    option's rps for that class of its replicas' time)."""
    pairs = [(k, c) for k, o in enumerate(opts) for c, r in enumerate(o.class_caps) if r > 0]
    if not pairs:
        return rate <= 1e-9
    a_ub, b_ub = [], []
    for c, sh in enumerate(shares):  # -sum_k a[k, c] <= -rate x share
        a_ub.append([-1.0 if pc == c else 0.0 for _, pc in pairs])
        b_ub.append(-rate * sh)
    for k, o in enumerate(opts):  # sum_c a[k, c] / rps[k, c] <= replicas[k]
        a_ub.append([1.0 / o.class_caps[pc] if pk == k else 0.0 for pk, pc in pairs])
        b_ub.append(float(replicas[k]))
    res = linprog(np.zeros(len(pairs)), A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
    return res.status == 0


def brute_force_cost(fleet: Fleet, wl: Workloads) -> float:
    """Cheapest serving $/hour by enumerating replica counts of every (unpruned) option;
    math.inf when nothing meets demand. Exponential: small instances only. A deployment with
    a size mix is checked with an exact LP over how its classes are routed."""
    opts = build_options(fleet, wl.serving)
    cap = {p.name: p.gpus_capacity for p in fleet.pools}
    rate = {w.name: w.request_rate for w in wl.serving}
    least = {w.name: w.min_replicas for w in wl.serving}
    shares = {w.name: [c[0] for c in w.size_classes()] for w in wl.serving}

    def alone(o: Option) -> int:  # replicas of o that carry the whole demand by themselves
        if not o.class_capacity_rps:
            return math.ceil(rate[o.deployment] / o.replica_capacity_rps)
        load = sum(
            rate[o.deployment] * sh / r
            for sh, r in zip(shares[o.deployment], o.class_caps, strict=True)
            if r > 0
        )
        return math.ceil(load - 1e-9)

    ranges = [
        range(
            0,
            min(max(alone(o), least[o.deployment]), cap[o.pool] // o.gpus_per_replica) + 1,
        )
        for o in opts
    ]
    best = math.inf
    for xs in itertools.product(*ranges):
        got = dict.fromkeys(rate, 0.0)
        count = dict.fromkeys(rate, 0)
        used = dict.fromkeys(cap, 0)
        cost = 0.0
        for o, n in zip(opts, xs, strict=True):
            got[o.deployment] += n * o.replica_capacity_rps
            count[o.deployment] += n
            used[o.pool] += n * o.gpus_per_replica
            cost += n * o.replica_cost_per_hour
        if not (
            cost < best
            and all(count[d] >= least[d] for d in rate)
            and all(used[p] <= cap[p] for p in cap)
        ):
            continue
        ok = True
        for d in rate:
            if len(shares[d]) == 1:
                ok = got[d] >= rate[d] - 1e-9
            else:
                mine = [(o, n) for o, n in zip(opts, xs, strict=True) if o.deployment == d]
                ok = mix_servable(rate[d], shares[d], [o for o, _ in mine], [n for _, n in mine])
            if not ok:
                break
        if ok:
            best = cost
    return best

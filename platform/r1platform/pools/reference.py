"""A brute-force reference solver for the serving stage, to check the ILP on small instances."""

from __future__ import annotations

import itertools
import math

from .models import Fleet
from .planner import build_options
from .workloads import Workloads


def brute_force_cost(fleet: Fleet, wl: Workloads) -> float:
    """Cheapest serving $/hour by enumerating replica counts of every (unpruned) option;
    math.inf when nothing meets demand. Exponential: small instances only."""
    opts = build_options(fleet, wl.serving)
    cap = {p.name: p.gpus_capacity for p in fleet.pools}
    rate = {w.name: w.request_rate for w in wl.serving}
    least = {w.name: w.min_replicas for w in wl.serving}
    ranges = [
        range(
            0,
            min(
                max(math.ceil(rate[o.deployment] / o.replica_capacity_rps), least[o.deployment]),
                cap[o.pool] // o.gpus_per_replica,
            )
            + 1,
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
        if (
            cost < best
            and all(got[d] >= rate[d] - 1e-9 for d in rate)
            and all(count[d] >= least[d] for d in rate)
            and all(used[p] <= cap[p] for p in cap)
        ):
            best = cost
    return best

"""The greedy fallback: answers when HiGHS finds nothing in time (or when asked for it), from
the same `PlanRequest` fields the ILP honours: rates, pinned layouts (already applied to the
options), replica floors, GPUs held by training, job pools and replica minimums."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from .fleet import Fleet
from .milp import effective_rps
from .options import training_pools
from .plan_model import Option
from .training_memory import pool_min_gpus
from .workloads import ServingWorkload, TrainingJob


def place_floors(
    options: Sequence[Option],
    floors: Mapping[tuple[str, str], int],
    free: dict[str, int],
    x: np.ndarray,
) -> np.ndarray:
    """Kept replicas first, on the first option of their (deployment, pool) as in the ILP,
    as many as the pool's free GPUs allow. Returns each option's floor replicas (their time is
    counted against demand before anything new is bought)."""
    spare = np.zeros(len(options))
    seen: set[tuple[str, str]] = set()
    for i, o in enumerate(options):
        k = (o.deployment, o.pool)
        if k not in floors or k in seen:
            continue
        seen.add(k)
        n = min(floors[k], free[o.pool] // o.gpus_per_replica)
        x[i] += n
        free[o.pool] -= n * o.gpus_per_replica
        spare[i] = n
    return spare


def greedy_serving(
    active: Sequence[ServingWorkload],
    options: Sequence[Option],
    cap: Mapping[str, int],
    floors: Mapping[tuple[str, str], int] | None = None,
) -> tuple[np.ndarray | None, dict[int, float]]:
    """Cheapest useful capacity first: bulk-fill whole replicas of the best cost/rps option,
    then cover the remainder with the option cheapest for what is left. `cap` is the GPUs per
    pool serving may use (training's held GPUs already taken out)."""
    free = dict(cap)
    x = np.zeros(len(options), dtype=int)
    spare = place_floors(options, floors or {}, free, x)
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

            def cap_of(i: int, c: int = c, mixed: bool = mixed) -> float:
                if mixed:
                    return options[i].class_caps[c]
                return options[i].replica_capacity_rps if min(options[i].class_caps) > 0 else 0

            idxs = sorted(
                (i for i in by_dep[w.name] if cap_of(i) > 0),
                key=lambda i: (options[i].replica_cost_per_hour / cap_of(i), options[i].pool),
            )
            for i in idxs:  # kept replicas' time serves demand before new replicas do
                if spare[i] > 0 and need > 1e-9:
                    use = min(spare[i], need / cap_of(i))
                    spare[i] -= use
                    if mixed:
                        routed[(i, c)] += use * cap_of(i)
                    need -= use * cap_of(i)
            for i in idxs:
                o = options[i]
                n = max(min(int(need // cap_of(i)), free[o.pool] // o.gpus_per_replica), 0)
                x[i] += n
                free[o.pool] -= n * o.gpus_per_replica
                if mixed:
                    routed[(i, c)] += min(n * cap_of(i), max(need, 0.0))
                need -= n * cap_of(i)
            while need > 1e-9:
                fits_ = [i for i in idxs if free[options[i].pool] >= options[i].gpus_per_replica]
                if not fits_:
                    return None, {}
                i = min(
                    fits_,
                    key=lambda i: (options[i].replica_cost_per_hour / min(cap_of(i), need), i),
                )
                x[i] += 1
                free[options[i].pool] -= options[i].gpus_per_replica
                if mixed:
                    routed[(i, c)] += min(cap_of(i), need)
                need -= cap_of(i)
        idxs = by_dep[w.name]
        while sum(int(x[i]) for i in idxs) < w.min_replicas:
            fits_ = [i for i in idxs if free[options[i].pool] >= options[i].gpus_per_replica]
            if not fits_:
                return None, {}
            i = min(fits_, key=lambda i: (options[i].replica_cost_per_hour, i))
            x[i] += 1
            free[options[i].pool] -= options[i].gpus_per_replica
    return x, effective_rps(options, routed)


def greedy_training(
    fleet: Fleet,
    options: Sequence[Option],
    x: np.ndarray,
    jobs: Sequence[TrainingJob],
    job_pools: Mapping[str, str] | None = None,
) -> dict[tuple[str, str], int]:
    """Jobs in priority order, each into the allowed pool with the most GPUs serving leaves
    (its own pool when it already runs), on its minimum; then, in the same order, each grows
    in its pool up to its max (the ILP's minimum-shares-first order)."""
    free = {p.name: p.gpus_capacity for p in fleet.pools}
    for o, n in zip(options, x, strict=True):
        free[o.pool] -= int(n) * o.gpus_per_replica
    placed: list[tuple[TrainingJob, str, int]] = []
    for j in jobs:
        pools = sorted(training_pools(j, fleet, job_pools), key=lambda p: (-free[p.name], p.name))
        if not pools:
            continue
        # At least the fewest GPUs the job's memory mode fits on (training_memory).
        q, lo = pools[0].name, pool_min_gpus(j, fleet, pools[0]) or 1
        if free[q] >= lo:
            free[q] -= lo
            placed.append((j, q, lo))
    out = {}
    for j, q, lo in placed:
        extra = min(j.gpus.max - lo, free[q])
        free[q] -= extra
        out[(j.name, q)] = lo + extra
    return out

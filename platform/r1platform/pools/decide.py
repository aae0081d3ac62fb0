"""The act side of the loop, pure: the actions that move the cluster toward a plan without
ever over-committing a pool, and what a set of replicas costs under a plan.

Safety rules enforced here: serving never takes GPUs training still holds (it asks the job to
checkpoint and shrink, and uses those GPUs on a later cycle, once released); training is never
killed (the only way down is a checkpoint-then-shrink); cooldowns on scale-down and on lending
GPUs back keep load noise from bouncing a job.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .control_config import ControllerConfig
from .demand import Memory
from .fleet import Fleet
from .plan_model import Plan, ServingAssignment
from .serve_config import layout_of


@dataclass(frozen=True)
class Action:
    kind: str  # scale | reclaim | lend (a layout change is one `deploy`, see layout_changes)
    target: str
    pool: str
    gpu: str
    before: int
    after: int
    reason: str


def decide(
    fleet: Fleet,
    p: Plan,
    serving_now: Mapping[tuple[str, str], int],
    training_now: Mapping[str, int],
    mem: Memory,
    now: float,
    cfg: ControllerConfig,
    priorities: Mapping[str, int] | None = None,
    mins: Mapping[str, int] | None = None,
    leads: Mapping[str, float] | None = None,
) -> list[Action]:
    """Actions that move the cluster toward `p` without ever over-committing a pool. `leads`:
    each deployment's cold start; replicas started on its last rise serve only after it."""
    gpu_of = {q.name: q.gpu for q in fleet.pools}
    cap = {q.name: q.gpus_capacity for q in fleet.pools}
    per_replica = {(o.deployment, o.pool): o.gpus_per_replica for o in p.options}
    for s in p.serving:  # the layout the plan chose wins over other TP options
        per_replica[(s.deployment, s.pool)] = s.gpus // max(s.replicas, 1)
    want_s = p.replicas()
    job_pool_plan = {t.job: t.pool for t in p.training}
    want_t = p.training_gpus()

    used = {q: 0 for q in cap}
    for (d, q), n in serving_now.items():
        if q in used:
            used[q] += n * per_replica.get((d, q), 1)
    for job, g in training_now.items():
        q = mem.job_pool.get(job) or job_pool_plan.get(job)
        if q in used:
            used[q] += g

    actions: list[Action] = []
    # 1. Serving scale-downs first: they free GPUs for scale-ups in the same cycle. A
    #    deployment that also grows somewhere this cycle is moving (a cheaper pool or layout):
    #    make before break, its old replicas go once the new ones had the cooldown, and their
    #    cold start, to start serving.
    keys = sorted(set(serving_now) | set(want_s))
    growing = {d for d, q in keys if want_s.get((d, q), 0) > serving_now.get((d, q), 0)}
    for d, q in keys:
        before, after = serving_now.get((d, q), 0), want_s.get((d, q), 0)
        if after < before:
            wait = max(cfg.down_cooldown_s, (leads or {}).get(d, 0.0))
            if d in growing or now - mem.last_up.get(d, -1e18) < wait:
                continue
            actions.append(
                Action(
                    "scale",
                    d,
                    q,
                    gpu_of.get(q, "?"),
                    before,
                    after,
                    f"demand {mem.rates.get(d, 0):.2f} rps needs fewer replicas",
                )
            )
            used[q] -= (before - after) * per_replica.get((d, q), 1)
    # 2. Reclaim only what serving's scale-ups in a pool lack, lowest priority job first; a job
    #    left below its minimum is suspended (after its checkpoint) rather than crippled.
    need: dict[str, int] = defaultdict(int)
    for d, q in keys:
        before, after = serving_now.get((d, q), 0), want_s.get((d, q), 0)
        if after > before:
            need[q] += (after - before) * per_replica[(d, q)]
    prio = {j: pr for j, pr in (priorities or {}).items()}
    for q in sorted(need):
        short = need[q] - (cap[q] - used[q])
        if short > 0:
            # Take the reserve back too, so the next small rise needs no second reclaim.
            serving_q = sum(
                n * per_replica.get((d, pq), 1) for (d, pq), n in want_s.items() if pq == q
            )
            short += math.ceil(cfg.lend_reserve * serving_q)
        holders = sorted(
            (
                j
                for j, g in training_now.items()
                if g > 0 and (mem.job_pool.get(j) or job_pool_plan.get(j)) == q
            ),
            key=lambda j: (prio.get(j, 0), j),
        )
        for job in holders:
            if short <= 0:
                break
            before = training_now[job]
            if job in mem.pending_shrink:
                short -= before - mem.pending_shrink[job]
                continue
            after = max(before - short, 0)
            if after < (mins or {}).get(job, 1):
                after = 0
            short -= before - after
            actions.append(
                Action(
                    "reclaim",
                    job,
                    q,
                    gpu_of.get(q, "?"),
                    before,
                    after,
                    f"serving needs {need[q]} GPUs in {q}; checkpoint then release",
                )
            )
    # 3. Serving scale-ups, limited to GPUs free now (reclaimed GPUs arrive next cycle).
    for d, q in keys:
        before, after = serving_now.get((d, q), 0), want_s.get((d, q), 0)
        if after <= before:
            continue
        room = (cap[q] - used[q]) // per_replica[(d, q)]
        grant = min(after, before + max(room, 0))
        if grant > before:
            reason = f"demand {mem.rates.get(d, 0):.2f} rps"
            if grant < after:
                reason += f"; {after - grant} more replicas once training releases GPUs"
            actions.append(Action("scale", d, q, gpu_of[q], before, grant, reason))
            used[q] += (grant - before) * per_replica[(d, q)]
    # 4. Lend: grow jobs into what is still free, after the reclaim cooldown.
    for job in sorted(want_t):
        q = job_pool_plan[job]
        if training_now.get(job, 0) and mem.job_pool.get(job, q) != q:
            continue  # a running job never moves without a checkpoint; it stays where it is
        before = training_now.get(job, 0)
        after = want_t[job]
        if after <= before or job in mem.pending_shrink:
            continue  # `before` already counts a grow the job has not taken up yet
        if now - mem.last_reclaim.get(job, -1e18) < cfg.lend_cooldown_s:
            continue
        serving_q = sum(n * per_replica.get((d, pq), 1) for (d, pq), n in want_s.items() if pq == q)
        reserve = math.ceil(cfg.lend_reserve * serving_q)
        grant = min(after, before + max(cap[q] - used[q] - reserve, 0))
        if grant >= max(before + 1, (mins or {}).get(job, 1)):
            actions.append(
                Action(
                    "lend", job, q, gpu_of[q], before, grant, "idle serving GPUs lent to training"
                )
            )
            used[q] += grant - before
    return actions


def surplus(
    p: Plan, serving_now: Mapping[tuple[str, str], int], actions: list[Action]
) -> dict[tuple[str, str], int]:
    """Per D@P that keeps more replicas than `p` wants with no scale-down this cycle (a move
    making before it breaks, or a cooldown), the count `p` wants."""
    wanted = p.replicas()
    downs = {(a.target, a.pool) for a in actions if a.kind == "scale" and a.after < a.before}
    return {
        k: wanted.get(k, 0)
        for k, n in serving_now.items()
        if n > wanted.get(k, 0) and k not in downs
    }


def serving_cost(p: Plan, replicas: Mapping[tuple[str, str], int]) -> float:
    per = {(o.deployment, o.pool): o.replica_cost_per_hour for o in p.options}
    for s in p.serving:
        per[(s.deployment, s.pool)] = s.cost_per_hour / max(s.replicas, 1)
    return float(sum(n * per.get(k, 0.0) for k, n in replicas.items()))


def layout_key(s: ServingAssignment) -> tuple:
    """What a D@P runs apart from its replica count: TP, PP and the engine profile, as the
    Serve config writes it (serve_config.layout_of)."""
    x = layout_of(s)
    return (x.tp, x.pp, x.dtype, x.quantization, x.kv_cache_dtype)


def _show(k: tuple) -> str:
    tp, pp, *prof = k
    return f"TP{tp}xPP{pp}" + "".join(f" {v}" for v in prof if v not in (None, "auto"))


def layout_changes(
    p: Plan,
    serving_now: Mapping[tuple[str, str], int],
    deployed: Mapping[tuple[str, str], tuple],
    layouts: Mapping[tuple[str, str], tuple[int, int]],
) -> dict[tuple[str, str], str]:
    """Per planned D@P whose layout differs from what Serve has, what changes. Known layouts are
    `deployed` (full, what this loop last deployed) else `layouts` (TP x PP only, as read at
    start or booked by an earlier cycle); a D@P never seen is new, not a change. A deployment
    that leaves every pool it runs on for another one changes pool. Replica counts are not a
    layout: they keep the cheaper set_replicas path."""
    running = {k for k, n in serving_now.items() if n > 0}
    planned = {(s.deployment, s.pool) for s in p.serving}
    out = {}
    for s in p.serving:
        k, want = (s.deployment, s.pool), layout_key(s)
        left = sorted(q for d, q in running if d == s.deployment and (d, q) not in planned)
        stays = any(d == s.deployment and (d, q) in planned for d, q in running)
        if left and not stays:
            out[k] = f"pool {','.join(left)} -> {s.pool}"
        elif k in deployed and deployed[k] != want:
            out[k] = f"{_show(deployed[k])} -> {_show(want)}"
        elif k not in deployed and k in layouts and layouts[k] != want[:2]:
            out[k] = f"{_show(layouts[k])} -> {_show(want)}"
    return out


def applied_plan(p: Plan, after: Mapping[tuple[str, str], int]) -> Plan:
    """The plan as this cycle applies it: each D@P at the replica count its scale action
    granted (or keeps); a D@P granted none yet is left out of the Serve config."""
    rows = [
        replace(s, replicas=after.get((s.deployment, s.pool), 0))
        for s in p.serving
        if after.get((s.deployment, s.pool), 0) > 0
    ]
    return replace(p, serving=rows)


def book_deployed(mem: Memory, applied: Plan) -> None:
    """After the Serve actuator accepted `serve_config(applied)`: pin each D@P's new TP x PP
    and remember its full layout (what the next cycle's layout_changes compares against)."""
    deps = {s.deployment for s in applied.serving}
    for k in [k for k in mem.deployed if k[0] in deps]:
        del mem.deployed[k]  # Serve no longer lists D@P the config left out
    for s in applied.serving:
        k = (s.deployment, s.pool)
        mem.layout[k] = (s.tp, s.pp)
        mem.deployed[k] = layout_key(s)

"""Option generation: every (deployment, pool, TP x PP) replica layout the fleet offers, with
its capacity and price, and the pruning that keeps the ILP small at fleet scale."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from . import fit as fitmod
from .engine_profiles import EngineProfileError, profile_of_model
from .errors import FitError
from .fleet import Fleet, Pool
from .plan_model import Option, Profiles
from .training_memory import pool_min_gpus
from .workloads import ServingWorkload, TrainingJob


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
            if profile_refusal(w, gpu):
                continue  # e.g. R1's FP8 checkpoint on V100: vLLM cannot run it there
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


def profile_refusal(w: ServingWorkload, gpu) -> str | None:
    """Why `w`'s model cannot run on `gpu` (its engine profile is refused), or None."""
    try:
        profile_of_model(w.model, gpu, **w.engine_choices())
    except EngineProfileError as e:
        return str(e)
    return None


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


def with_floors(
    options: list[Option], all_options: Sequence[Option], keep: Mapping[tuple[str, str], int]
) -> list[Option]:
    """Make sure each kept (deployment, pool) has an option in the model (pruning may have
    dropped that layout): the first option of a pair in the list carries its floor."""
    out = list(options)
    have = {(o.deployment, o.pool) for o in out}
    for o in all_options:
        if (o.deployment, o.pool) in keep and (o.deployment, o.pool) not in have:
            out.append(o)
            have.add((o.deployment, o.pool))
    return out


def training_pools(
    job: TrainingJob, fleet: Fleet, job_pools: Mapping[str, str] | None = None
) -> list[Pool]:
    """Pools a job may use: its pinned pool if it runs in one, allowed types, and room for the
    fewest GPUs on which the job fits in the mode it runs (training_memory.pool_min_gpus)."""
    pinned_pool = (job_pools or {}).get(job.name)
    out = []
    for p in fleet.pools:
        if pinned_pool is not None and p.name != pinned_pool:
            continue
        if job.gpu_types and p.gpu not in job.gpu_types:
            continue
        if pool_min_gpus(job, fleet, p) is None:
            continue
        out.append(p)
    return out


def check_every_deployment_has_options(
    fleet: Fleet, serving: Sequence[ServingWorkload], options: Sequence[Option]
) -> None:
    """Raise FitError naming the first deployment no pool can serve, and why."""
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
        refusals = [profile_refusal(w, fleet.catalog[p.gpu]) for p in pools]
        if all(refusals):
            raise FitError(f"deployment {w.name!r}: no pool can run it: {refusals[0]}")
        pools = [p for p, r in zip(pools, refusals, strict=True) if not r]
        cands = [(p.name, fleet.catalog[p.gpu], p.gpus_per_node, p.max_nodes or 0) for p in pools]
        fitmod.require_fit(spec, cands, w.kv_tokens())
        raise FitError(
            f"deployment {w.name!r}: model {w.model!r} fits but no pool meets its SLO "
            f"(ttft_p99 {w.slo.ttft_p99_s}s, tpot_p99 {w.slo.tpot_p99_s}s)"
        )

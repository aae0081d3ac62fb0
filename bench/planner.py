"""Planner benchmark: exactness vs a proven optimum, and plan time at fleet scale.

Peers measured in the same run: brute-force enumeration (the proven optimum) on small random
instances, the greedy heuristic, and the from-scratch exact ILP (tight gap, long time limit)
at 10,000 GPUs x 50 deployments.

    .venv/bin/python bench/planner.py [--instances 30] [--gpus 10000] [--deployments 50]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time

from benchutil import quiet_stdout
from r1platform.pools import planner as pl
from r1platform.pools import scenarios
from r1platform.pools.catalog import load_catalog
from r1platform.pools.errors import PoolsError
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.plan_model import PlanRequest
from r1platform.pools.reference import brute_force_cost
from r1platform.pools.workloads import ServingWorkload, SloSpec, Workloads


def small_instance(seed: int) -> tuple[Fleet, Workloads]:
    rng = random.Random(seed)
    cat = load_catalog()
    types = rng.sample(["H100", "A100-80G", "A100-40G", "L40S", "L4", "T4", "A10G"], 3)
    pools = [
        Pool(
            name=t.lower(),
            gpu=t,
            nodes=1,
            gpus_per_node=rng.choice([1, 2, 4]),
            max_nodes=rng.choice([1, 2]),
        )
        for t in types
    ]
    models = rng.sample(["r1-distill-qwen-1.5b", "r1-distill-qwen-7b", "r1-distill-llama-8b"], 2)
    serving = [
        ServingWorkload(
            name=f"d{i}",
            model=m,
            request_rate=round(rng.uniform(0.5, 10), 2),
            avg_input_tokens=rng.choice([200, 500, 1000]),
            avg_output_tokens=rng.choice([300, 800, 1500]),
            slo=SloSpec(ttft_p99_s=2.0, tpot_p99_s=rng.choice([0.05, 0.1])),
        )
        for i, m in enumerate(models)
    ]
    return Fleet(pools=pools, catalog=cat), Workloads(serving=serving)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=30)
    ap.add_argument("--gpus", type=int, default=10_000)
    ap.add_argument("--deployments", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures here (make bench)")
    args = ap.parse_args()

    ilp_ratio, greedy_ratio = [], []
    infeasible = 0
    with quiet_stdout():
        for seed in range(args.instances * 3):
            if len(ilp_ratio) >= args.instances:
                break
            fleet, wl = small_instance(seed)
            try:
                opt = brute_force_cost(fleet, wl)
                if math.isinf(opt):
                    infeasible += 1
                    continue
                got = pl.plan(PlanRequest(fleet, wl)).cost_per_hour
                greedy = pl.plan(PlanRequest(fleet, wl, method="greedy")).cost_per_hour
            except PoolsError:
                infeasible += 1
                continue
            ilp_ratio.append(got / opt)
            greedy_ratio.append(greedy / opt)
    print(
        f"## Exactness: {len(ilp_ratio)} random small instances (3 pools, 2 deployments), "
        f"cost / brute-force optimum ({infeasible} infeasible/unfit skipped)"
    )
    print("| planner | mean | max | instances at optimum |")
    print("|---|---|---|---|")
    for name, r in (("r1p ILP", ilp_ratio), ("greedy (peer)", greedy_ratio)):
        at = sum(1 for x in r if x <= 1 + 1e-6)
        print(f"| {name} | {statistics.mean(r):.4f} | {max(r):.4f} | {at}/{len(r)} |")

    fleet = scenarios.fleet(args.gpus)
    wl = scenarios.workloads(args.deployments, seed=1, total_gpus=args.gpus, n_jobs=args.jobs)
    gpus = sum(p.gpus_capacity for p in fleet.pools)
    times, gtimes = [], []
    with quiet_stdout():
        for _ in range(args.repeats):
            t = time.perf_counter()
            p = pl.plan(PlanRequest(fleet, wl))
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            g = pl.plan(PlanRequest(fleet, wl, method="greedy"))
            gtimes.append(time.perf_counter() - t)
        t = time.perf_counter()
        exact = pl.plan(PlanRequest(fleet, wl, mip_gap=1e-4, time_limit_s=30, exact=True))
        exact_s = time.perf_counter() - t
    print()
    print(
        f"## Scale: {gpus:,} GPUs in {len(fleet.pools)} pools x {args.deployments} deployments "
        f"+ {args.jobs} training jobs (median of {args.repeats})"
    )
    print("| planner | plan time (s) | serving $/hour | vs r1p | training GPUs |")
    print("|---|---|---|---|---|")
    tg = sum(u.gpus_training for u in p.pools)
    print(
        f"| r1p (LP-anchored ILP) | {statistics.median(times):.3f} | {p.cost_per_hour:,.2f} | "
        f"1.000 | {tg:,} |"
    )
    print(
        f"| from-scratch ILP, gap 1e-4 (peer) | {exact_s:.3f} | {exact.cost_per_hour:,.2f} | "
        f"{exact.cost_per_hour / p.cost_per_hour:.4f} | "
        f"{sum(u.gpus_training for u in exact.pools):,} |"
    )
    print(
        f"| greedy (peer) | {statistics.median(gtimes):.3f} | {g.cost_per_hour:,.2f} | "
        f"{g.cost_per_hour / p.cost_per_hour:.4f} | {sum(u.gpus_training for u in g.pools):,} |"
    )
    print(
        f"\nr1p LP lower bound {p.solver.get('lp_bound', float('nan')):,.2f} $/hour; "
        f"r1p within {100 * (p.cost_per_hour / exact.cost_per_hour - 1):.2f}% of the "
        f"from-scratch ILP ({exact.solver.get('serving_status')}); target plan time < 1 s: "
        f"{'met' if statistics.median(times) < 1 else 'NOT met'}"
    )
    if args.json:
        figures = {
            "instances": len(ilp_ratio),
            "ilp_cost_ratio_max": max(ilp_ratio),
            "ilp_at_optimum": sum(1 for x in ilp_ratio if x <= 1 + 1e-6),
            "greedy_cost_ratio_max": max(greedy_ratio),
            "gpus": gpus,
            "deployments": args.deployments,
            "plan_time_s": statistics.median(times),
            "greedy_time_s": statistics.median(gtimes),
            "exact_ilp_time_s": exact_s,
            "cost_vs_exact_ilp": p.cost_per_hour / exact.cost_per_hour,
        }
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

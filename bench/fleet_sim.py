"""Fleet simulator benchmark: the r1p controller against three baselines, same trace, same
training queue, same fleet, same run.

    .venv/bin/python bench/fleet_sim.py [--gpus 1000] [--hours 24] [--deployments 8]
                                        [--jobs 16] [--trace synthetic|azure|FILE.csv]
                                        [--size-mix none|trace] [--all-single-types]

Cost is serving $ over the run (what each policy pays for GPUs that serve); harvest share is
training GPU-hours over the GPU-hours serving left idle.

--size-mix trace gives every deployment a request-size mix (3 x 3 log-normal quantile buckets
of input and output length around its averages, spread as the trace's: measured from the CSV,
or the Azure-format sample's for the synthetic trace), which the planner routes per class.
--all-single-types also runs the single-type baseline on each GPU type of the fleet and names
the cheapest one that holds the SLO.
"""

from __future__ import annotations

import argparse

from benchutil import quiet_stdout
from r1platform.pools import scenarios, sim, trace
from r1platform.pools.errors import PoolsError
from r1platform.pools.plan_model import PlanRequest
from r1platform.pools.planner import plan


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--deployments", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--load", type=float, default=0.4)
    ap.add_argument("--trace", default="synthetic")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--interval", type=float, default=120.0)
    ap.add_argument("--single-gpu", default="H100")
    ap.add_argument("--size-mix", choices=["none", "trace"], default="none")
    ap.add_argument("--all-single-types", action="store_true")
    args = ap.parse_args()

    cfg = sim.SimConfig(
        duration_s=args.hours * 3600, seed=args.seed, control_interval_s=args.interval
    )
    if args.trace == "synthetic":
        tr = trace.synthetic(cfg.duration_s, cfg.tick_s, args.seed)
    else:
        path = trace.SAMPLE_CSV if args.trace == "azure" else args.trace
        tr = trace.azure_csv(path, cfg.tick_s)
    fleet = scenarios.fleet(args.gpus)
    gpus = sum(p.gpus_capacity for p in fleet.pools)
    sigma = (tr.sigma_input, tr.sigma_output) if args.size_mix == "trace" else None
    wl = scenarios.workloads(
        args.deployments, seed=args.seed + 2, total_gpus=gpus, load=args.load, size_sigma=sigma
    )
    jobs = sim.job_queue(args.jobs, args.seed, cfg.duration_s, gpus)
    with quiet_stdout():
        results = sim.run_all(fleet, list(wl.serving), jobs, tr, cfg, args.single_gpu)
    ours = results[0]
    print(
        f"## Fleet simulation: {gpus:,} GPUs ({len(fleet.pools)} types), "
        f"{args.deployments} deployments, {args.jobs} GRPO jobs, {args.hours:g} h "
        f"{args.trace} trace (peak/mean {tr.peak:.2f}), seed {args.seed}, size mix "
        + (
            f"3x3 classes (sigma in {sigma[0]:.2f}, out {sigma[1]:.2f})"
            if sigma
            else "none (every request at its deployment's averages)"
        )
    )
    print(
        "| policy | serving cost $ | vs r1p | SLO attainment | GPU util | harvested GPU-h "
        "| harvest / idle | preemptions | lost GPU-h | jobs done | decisions/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.policy} | {r.cost:,.0f} | {r.cost / ours.cost:.3f} | "
            f"{100 * r.slo_attainment:.2f}% | {100 * r.utilisation:.1f}% | "
            f"{r.harvested_gpu_hours:,.0f} | {100 * r.harvest_share:.1f}% | {r.preemptions} | "
            f"{r.lost_gpu_hours:,.0f} | {r.jobs_done} | {r.decisions_per_s:,.1f} |"
        )
    by = {r.policy: r for r in results}
    print()
    for base in ("single-type", "static", "first-fit"):
        b = by[base]
        print(
            f"r1p cost vs {base}: {100 * (1 - ours.cost / b.cost):+.1f}% lower "
            f"(target >= 30% for single-type and static)"
        )
    print(
        f"r1p SLO attainment {100 * ours.slo_attainment:.2f}% (target >= 99%); harvest share "
        f"{100 * ours.harvest_share:.1f}% (target >= 50%)"
    )
    if args.all_single_types:
        print()
        print(
            "| single-type fleet (same GPU count) | serving cost $ | r1p cost vs it | SLO attainment |"
        )
        print("|---|---|---|---|")
        ok = []
        for p in fleet.pools:
            try:
                with quiet_stdout():
                    r = sim.simulate(
                        sim.R1pPolicy("single-type"),
                        sim.single_type_fleet(fleet, p.gpu),
                        list(wl.serving),
                        jobs,
                        tr,
                        cfg,
                    )
            except PoolsError as e:
                print(f"| {p.gpu} | - | - | cannot serve: {str(e).splitlines()[0][:80]} |")
                continue
            vs = f"{100 * (1 - ours.cost / r.cost):+.1f}% lower" if r.cost > 0 else "-"
            note = "" if r.cost > 0 else " (no replica placed: the model fits no layout or SLO)"
            print(f"| {p.gpu} | {r.cost:,.0f} | {vs} | {100 * r.slo_attainment:.2f}%{note} |")
            if r.slo_attainment >= 0.99:
                ok.append((r.cost, p.gpu))
        print()
        print("Planner only (no dynamics): serving $/hour at the mean and the peak rate")
        print("| fleet | mean rate $/h | r1p fleet vs it | peak rate $/h | r1p fleet vs it |")
        print("|---|---|---|---|---|")
        fleets = [("mixed (r1p)", fleet)] + [
            (p.gpu, sim.single_type_fleet(fleet, p.gpu)) for p in fleet.pools
        ]
        ref: dict[float, float] = {}
        for name, f in fleets:
            cells = []
            for mult in (1.0, tr.peak):
                rates = {w.name: w.request_rate * mult for w in wl.serving}
                try:
                    with quiet_stdout():
                        c = plan(
                            PlanRequest(f, wl, rates=rates, mip_gap=1e-3, time_limit_s=5)
                        ).cost_per_hour
                except PoolsError:
                    cells += ["infeasible", "-"]
                    continue
                ref.setdefault(mult, c)
                cells += [f"{c:,.1f}", f"{100 * (1 - ref[mult] / c):+.1f}% lower"]
            print(f"| {name} | " + " | ".join(cells) + " |")
        if ok:
            cost, gpu = min(ok)
            print(
                f"\nbest single type at >= 99% SLO: {gpu}; r1p cost vs it: "
                f"{100 * (1 - ours.cost / cost):+.1f}% lower (target >= 30%)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

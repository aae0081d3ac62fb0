"""Fleet simulator benchmark at equal SLO: r1p against first-fit (cost-blind catalog order and
cheapest-first), a single-type fleet per GPU type, a static split and the clairvoyant
reference, on the same trace, training queue and fleet.

    .venv/bin/python bench/fleet_sim.py [--trace synthetic|azure|FILE.csv] [--json OUT.json]
        [--seeds 1,2,3] [--gpus 1000] [--hours 24] [--deployments 8] [--jobs 16]
        [--interval 120] [--size-mix none|trace] [--no-cache] [--policies r1p,static,...]

r1p runs with its own settings (tuned on the synthetic trace only). Every other policy has its
knob (headroom; the load quantile for the static split) bisected for its cheapest setting with
>= 99% SLO attainment on a 6 h peak slice at a 300 s interval, then confirmed on the full run
(pools.sim_search). SLO attainment: share of requests whose TTFT and TPOT both meet the
workload's p99 targets; over seeds the minimum is reported, costs are the mean. Cost three
ways: serving $, training GPU-hours harvested, and net $ = serving $ less those GPU-hours at
their pool's price. "azure" is the Azure LLM 2023 conversation trace (CC-BY 4.0) shipped in
r1platform/pools/data, split over the deployments by a seeded hash and looped with mirrored
joins; any CSV with TIMESTAMP, ContextTokens, GeneratedTokens works the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchutil import quiet_stdout
from r1platform.contracts.paths import cache_dir
from r1platform.pools import scenarios, sim, sim_search, trace
from rich.console import Console
from rich.table import Table

POLICIES = sim_search.POLICIES


def scenario(args: argparse.Namespace, seed: int) -> sim_search.Scenario:
    cfg = sim.SimConfig(duration_s=args.hours * 3600, seed=seed, control_interval_s=args.interval)
    if args.trace == "synthetic":
        tr = trace.synthetic(cfg.duration_s, cfg.tick_s, seed)
    else:
        path = trace.AZURE_CONV if args.trace == "azure" else args.trace
        tr = trace.azure_csv(
            path, cfg.tick_s, duration_s=cfg.duration_s, deployments=args.deployments, seed=seed
        )
    fleet = scenarios.fleet(args.gpus)
    gpus = sum(p.gpus_capacity for p in fleet.pools)
    sigma = (tr.sigma_input, tr.sigma_output) if args.size_mix == "trace" else None
    wl = scenarios.workloads(
        args.deployments, seed=seed + 2, total_gpus=gpus, load=args.load, size_sigma=sigma
    )
    jobs = sim.job_queue(args.jobs, seed, cfg.duration_s, gpus)
    return sim_search.Scenario(fleet, list(wl.serving), jobs, tr, cfg)


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def table(doc: dict, title: str) -> Table:
    t = Table(title=title)
    for c in ("policy", "knob", "SLO (min)", "serving $", "$ at >=99% SLO", "vs clairvoyant"):
        t.add_column(c, justify="right")
    for c in ("training GPU-h", "harvest/idle", "net $", "lost GPU-h", "jobs < min"):
        t.add_column(c, justify="right")
    ref = (doc.get("clairvoyant") or {}).get("cost_at_slo")
    rows = [(k, doc[k]) for k in POLICIES]
    rows += [(f"  first-fit {v}", r) for v, r in doc["first_fit_variants"].items()]
    rows += [(f"  single {g}", r) for g, r in doc["single_types"].items()]
    for name, r in rows:
        if r is None:
            t.add_row(name, *["-"] * 10)
            continue
        knobs = [k for k in r["knob"] if k is not None]
        vs = f"{r['cost_at_slo'] / ref:.3f}" if ref and r["cost_at_slo"] else "-"
        t.add_row(
            name,
            ",".join(f"{k:g}" for k in knobs) or "-",
            f"{100 * r['slo_attainment']:.2f}%",
            _money(r["serving_cost"]),
            _money(r["cost_at_slo"]),
            vs,
            f"{r['harvested_gpu_hours']:,.0f}",
            f"{100 * r['harvest_ratio']:.1f}%",
            _money(r["net_cost"]),
            f"{r['lost_gpu_hours']:,.0f}",
            str(r["jobs_short_of_min"]),
        )
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="synthetic", help="synthetic | azure | FILE.csv[.gz]")
    ap.add_argument("--json", type=Path, help="write the machine-readable results here")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--seed", type=int, help="one seed (overrides --seeds)")
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--deployments", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--load", type=float, default=0.4)
    ap.add_argument("--interval", type=float, default=120.0)
    ap.add_argument("--size-mix", choices=["none", "trace"], default="none")
    ap.add_argument("--all-single-types", action="store_true", help="(always on now)")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="comma list of policies to run (e.g. r1p alone while tuning it; the baselines'"
        " searches are cached apart from the controller's code, so they need not rerun)",
    )
    args = ap.parse_args()
    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    if unknown := set(policies) - set(POLICIES):
        ap.error(f"unknown policies {sorted(unknown)}; choose from {', '.join(POLICIES)}")
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    cache = None if args.no_cache else cache_dir() / "fleet_sim"
    con, err = (
        Console(width=200),
        Console(stderr=True),
    )  # progress on stderr: HiGHS chatter muted on fd 1
    t0 = time.perf_counter()
    per_seed = {}
    for seed in seeds:
        sc = scenario(args, seed)
        with quiet_stdout():
            per_seed[seed] = sim_search.compare(
                sc, cache, lambda m, s=seed: err.log(f"seed {s}: {m}"), policies
            )
    doc = sim_search.aggregate(per_seed)
    doc["bench_s"] = time.perf_counter() - t0
    doc["load_average"] = os.getloadavg()
    doc["args"] = {k: str(v) for k, v in vars(args).items()}
    doc["per_seed"] = per_seed
    con.print(table(doc, f"{args.trace} trace, {args.hours:g} h, seeds {seeds}: equal-SLO costs"))
    for name, t in doc["targets"].items():
        con.print(f"target {name}: {t['value']} (goal {t['goal']}) -> met: {t['met']}")
    la = ", ".join(f"{x:.2f}" for x in doc["load_average"])
    con.print(f"bench time {doc['bench_s']:.0f} s; load average {la}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

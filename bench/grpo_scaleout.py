"""Scale-out equivalence: the same GRPO job at 2 train workers x 2 rollout engines and at 1 x 1.

3 seeds each, one run at a time. Passes when the 3-seed mean of the final held-out accuracy of
2x2 is within 5 points of 1x1's, and at every eval step each config's mean lies within the
other's seed spread (mean ± std). Prompts/s of both is reported. This checks that the
distributed path (DDP gradient averaging, data sharding, weight sync to several engines)
computes the same thing, not only that it runs. Default mode is disaggregated (engine actors,
the path with a weight push to several engines); --mode hybrid runs one engine per worker.

    .venv/bin/python bench/grpo_scaleout.py [--seeds 0,1,2] [--steps 40] [--eval-size 256] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchstats import ROOT, load_note, spread
from grpo_vs_trl import read_metrics

ACC_TOLERANCE_PTS = 5.0


def job_command(
    workers: int, seed: int, steps: int, out: Path, mode: str, extra: list[str]
) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "jobs" / "grpo.py"),
        f"--num_workers={workers}",
        f"--num_rollout_engines={workers}",
        f"--seed={seed}",
        f"--max_steps={steps}",
        f"--output_dir={out}",
        f"--colocate={str(mode == 'hybrid').lower()}",  # bool | None: takes a value
        *extra,
    ]


def eval_curve(metrics: list[dict[str, Any]]) -> dict[int, float]:
    return {int(m["step"]): float(m["eval_accuracy"]) for m in metrics if "eval_accuracy" in m}


def prompts_per_s(metrics: list[dict[str, Any]], prompts_per_step: int) -> float | None:
    """Training throughput over steady steps (the first pays warm-up; eval steps pay evals)."""
    steps = sorted((m for m in metrics if "step_s" in m), key=lambda m: m["step"])[1:]
    steady = [float(m["step_s"]) for m in steps if "eval_accuracy" not in m]
    return prompts_per_step * len(steady) / sum(steady) if steady and sum(steady) else None


def compare(curves_a: list[dict[int, float]], curves_b: list[dict[int, float]]) -> dict[str, Any]:
    """a: the scaled-out config, b: the 1x1 baseline; curves are one per seed."""
    steps = sorted(set.intersection(*(set(c) for c in curves_a + curves_b)))
    per_step = []
    within = True
    for s in steps:
        a, b = spread([c[s] for c in curves_a]), spread([c[s] for c in curves_b])
        # Each mean inside the other's band: |difference| <= the smaller std.
        ok = abs(a.mean - b.mean) <= min(a.std, b.std) + 1e-12
        within &= ok
        per_step.append({"step": s, "a": a.as_dict(), "b": b.as_dict(), "within": ok})
    final = steps[-1] if steps else None
    delta = 100 * abs(per_step[-1]["a"]["mean"] - per_step[-1]["b"]["mean"]) if per_step else None
    return {
        "eval_steps": steps,
        "final_step": final,
        "accuracy_delta_pts": delta,
        "accuracy_within_tolerance": delta is not None and delta <= ACC_TOLERANCE_PTS,
        "curves_within_spread": float(within) if per_step else None,
        "per_step": per_step,
    }


def run_one(cmd: list[str], out: Path, timeout_s: float) -> list[dict[str, Any]] | str:
    env = {**os.environ, "RAY_ADDRESS": os.environ.get("BENCH_RAY_ADDRESS", "local")}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f}s"
    path = out / "metrics.jsonl"
    if proc.returncode != 0 or not path.exists():
        return f"exit {proc.returncode}: {' | '.join(proc.stderr.strip().splitlines()[-5:])}"
    return read_metrics(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=40, help="the job's default max_steps")
    ap.add_argument("--scale", type=int, default=2, help="workers = engines of the scaled run")
    ap.add_argument("--mode", choices=["disaggregated", "hybrid"], default="disaggregated")
    ap.add_argument("--prompts-per-step", type=int, default=16, help="the job's default")
    # The job's default of 64 held-out questions measures accuracy to about +-4.5 points per
    # eval (binomial, at 15%): as wide as the 5-point tolerance, so 256 (+-2.2).
    ap.add_argument("--eval-size", type=int, default=256)
    ap.add_argument("--extra", default="", help="more job flags, space-separated")
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="per run")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="grpo-scaleout-"))
    extra = [
        *args.extra.split(),
        f"--prompts_per_step={args.prompts_per_step}",
        f"--eval_size={args.eval_size}",
    ]
    configs = {f"{args.scale}x{args.scale}": args.scale, "1x1": 1}
    runs: dict[str, dict[str, Any]] = {}
    for name, workers in configs.items():
        curves, rates, errors, loads = [], [], [], []
        for seed in (int(x) for x in args.seeds.split(",")):
            out = work / name / str(seed)
            loads.append(load_note())
            t0 = time.perf_counter()
            got = run_one(job_command(workers, seed, args.steps, out, args.mode, extra), out,
                          args.timeout_s)  # fmt: skip
            if isinstance(got, str):
                errors.append(f"seed {seed}: {got}")
                print(f"{name} seed {seed}: failed: {got}", flush=True)
                continue
            curves.append(eval_curve(got))
            rates.append(prompts_per_s(got, args.prompts_per_step))
            print(f"{name} seed {seed}: eval {curves[-1]}, {rates[-1]} prompts/s, "
                  f"{time.perf_counter() - t0:.0f} s ({loads[-1]})", flush=True)  # fmt: skip
        rate = spread(rates)
        runs[name] = {"curves": curves, "errors": errors, "loads": loads,
                      "prompts_per_s": rate.as_dict() if rate else None}  # fmt: skip
    a, b = (runs[n]["curves"] for n in configs)
    result: dict[str, Any] = {
        "mode": args.mode, "steps": args.steps, "eval_size": args.eval_size, "runs": runs
    }  # fmt: skip
    result.update(compare(a, b) if a and b else {"accuracy_delta_pts": None,
                                                 "curves_within_spread": None})  # fmt: skip
    d = result["accuracy_delta_pts"]
    print(f"final accuracy |2x2 - 1x1| = {d if d is None else round(d, 2)} pts (target <= 5): "
          f"{'met' if result.get('accuracy_within_tolerance') else 'NOT met'}; curves within "
          f"spread: {result['curves_within_spread']}; prompts/s "
          f"{ {n: runs[n]['prompts_per_s'] for n in configs} } ({load_note()})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: every benchmark, one at a time, into bench/results/latest.json and the README.

Runs serving, the GRPO race, the rollout bench, the planner, the fleet simulator on both
traces and (unless --skip-scaleout) the scale-out equivalence check. Each step writes its own
JSON; they are nested under `results` as they are, and `targets` always lists the same fixed
names (benchstats.TARGETS): a step that failed leaves its targets at value null, met false.
Then the README's benchmark table is regenerated from the file (bench/readme_table.py).

Run it on an idle machine: every figure is printed with the load average it saw.
--smoke runs each step at toy scale to check the plumbing; it writes bench/results/smoke.json
and never touches latest.json or the README.

Each step's JSON stays in bench/results/parts/ beside a `.status.json` (commit, date, seconds,
load average). `--only grpo --keep-others` re-runs one step after a change and takes every
other step from its last part, marked `reused` with its own commit and date in
`results.steps` and in the README's provenance line, so a ~60-minute bench need not be re-run
whole to refresh one row, and a row never hides which commit measured it.

    .venv/bin/python bench/run_all.py [--skip-scaleout] [--only serving,grpo,...] [--keep-others]
                                      [--smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchstats import ROOT, commit, latest_document, load_note, machine

BENCH = ROOT / "bench"
PY = sys.executable

# name -> (script args, smoke args, result key); {out} is the step's JSON file.
STEPS: dict[str, tuple[list[str], list[str]]] = {
    "serving": (
        ["serve_overhead.py", "--json", "{out}"],
        ["--concurrency", "1,8", "--rounds", "1", "--requests", "8", "--max-tokens", "8",
         "--peer-stream-intervals", "1,4"],
    ),
    "grpo": (
        ["grpo_vs_trl.py", "--json_out", "{out}"],
        ["--sizes", "tiny", "--seeds", "0", "--steps", "2", "--prompts_per_step", "2",
         "--group_size", "2", "--max_new_tokens", "8", "--eval_n", "4"],
    ),
    "rollout": (
        ["rollout_throughput.py", "--json", "{out}"],
        ["--rounds", "1", "--prompts", "2", "--group-size", "2", "--max-tokens", "8"],
    ),
    "planner": (
        ["planner.py", "--json", "{out}"],
        ["--instances", "2", "--gpus", "200", "--deployments", "5", "--jobs", "2",
         "--repeats", "1"],
    ),
    "fleet_sim.synthetic": (
        ["fleet_sim.py", "--trace", "synthetic", "--json", "{out}"],
        ["--seeds", "1", "--hours", "1", "--gpus", "100"],
    ),
    "fleet_sim.azure": (
        ["fleet_sim.py", "--trace", "azure", "--json", "{out}"],
        ["--seeds", "1", "--hours", "1", "--gpus", "100"],
    ),
    "sim_fidelity": (  # live replay on `r1p up` vs the simulator (~15 min)
        ["sim_fidelity.py", "--json", "{out}"],
        ["--minutes", "2"],
    ),
    "scaleout": (
        ["grpo_scaleout.py", "--json", "{out}"],
        ["--seeds", "0", "--steps", "2", "--extra", "--max_new_tokens=8 --eval_size=4 "
         "--eval_every=1 --group_size=2", "--prompts-per-step", "2"],
    ),
}  # fmt: skip


def step_command(name: str, out: Path, smoke: bool) -> list[str]:
    args, smoke_args = STEPS[name]
    cmd = [PY, str(BENCH / args[0]), *(a.replace("{out}", str(out)) for a in args[1:])]
    return cmd + smoke_args if smoke else cmd


def nest(results: dict[str, Any], name: str, doc: Any) -> None:
    """fleet_sim.synthetic -> results["fleet_sim"]["synthetic"]; others at the top level."""
    head, _, tail = name.partition(".")
    if tail:
        results.setdefault(head, {})[tail] = doc
    else:
        results[head] = doc


def run_step(name: str, out: Path, smoke: bool, timeout_s: float) -> dict[str, Any]:
    cmd = step_command(name, out, smoke)
    print(f"\n=== {name}: {' '.join(cmd[1:])} ({load_note()})", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=BENCH, timeout=timeout_s)
        rc: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        rc = f"timed out after {timeout_s:.0f}s"
    status = {"seconds": round(time.perf_counter() - t0, 1), "load_after": load_note()}
    if rc != 0 or not out.is_file():
        status["error"] = f"exit {rc}" if isinstance(rc, int) else rc
    return status


def status_path(out: Path) -> Path:
    return out.with_name(out.stem + ".status.json")


def reuse_part(out: Path) -> tuple[dict[str, Any], Any] | None:
    """(status, result) of an earlier run of a step, if it produced a result."""
    status_file = status_path(out)
    if not (out.is_file() and status_file.is_file()):
        return None
    status = json.loads(status_file.read_text())
    if "error" in status:
        return None
    return {**status, "reused": True}, json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(STEPS), help="comma-separated steps")
    ap.add_argument("--skip-scaleout", action="store_true", help="~6 min: six 40-step GRPO jobs")
    ap.add_argument(
        "--keep-others",
        action="store_true",
        help="steps left out of --only keep their last result (marked reused)",
    )
    ap.add_argument("--smoke", action="store_true", help="toy scale; writes smoke.json only")
    ap.add_argument("--timeout-s", type=float, default=6 * 3600, help="per step")
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(STEPS))
    if unknown:
        ap.error(f"unknown steps {unknown}; choose from {list(STEPS)}")
    if args.skip_scaleout:
        names = [n for n in names if n != "scaleout"]
    parts = args.results / ("smoke" if args.smoke else "parts")
    parts.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"steps": {}}
    for name in STEPS:
        out = parts / f"{name}.json"
        if name not in names:
            kept = reuse_part(out) if args.keep_others else None
            if kept:
                results["steps"][name] = kept[0]
                nest(results, name, kept[1])
            continue
        out.unlink(missing_ok=True)  # a stale file from an older run must not pass as this one's
        stamp = {"commit": commit(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
        results["steps"][name] = {**stamp, **run_step(name, out, args.smoke, args.timeout_s)}
        status_path(out).write_text(json.dumps(results["steps"][name]))
        if out.is_file():
            nest(results, name, json.loads(out.read_text()))
    if set(names) == set(STEPS) - ({"scaleout"} if args.skip_scaleout else set()):
        command = "make bench" + (" (--skip-scaleout)" if args.skip_scaleout else "")
    else:
        command = f"bench/run_all.py --only {','.join(names)}"
        command += " --keep-others" if args.keep_others else ""
    doc = latest_document(
        results,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine_text=machine(),
        commit_id=commit(),
        command=command + (" --smoke" if args.smoke else ""),
    )
    target = args.results / ("smoke.json" if args.smoke else "latest.json")
    target.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {target}")
    for name, t in doc["targets"].items():
        print(f"  {name}: {t['value']} (goal {t['target']}) -> {'met' if t['met'] else 'NOT met'}")
    if not args.smoke:
        subprocess.run([PY, str(BENCH / "readme_table.py"), "--latest", str(target)], check=True)
    failed = [n for n, s in results["steps"].items() if "error" in s and n in names]
    if failed:
        print(f"steps that produced no result: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

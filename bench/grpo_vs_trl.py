"""GRPO speed and accuracy: our Ray job vs TRL's GRPOTrainer, on CPU, at two model sizes.

Peers: TRL with HF generate (.venv-trl, bench/setup_trl_venv.sh) and TRL with
`use_vllm=True, vllm_mode="colocate"` (.venv-trl-vllm, bench/setup_trl_vllm_venv.sh). Every run
is alone on the machine: one side, one seed at a time, never two together. Every side runs the
GRPO job's own defaults (r1platform.training.settings; a unit test keeps BenchSettings equal to
them), 3 seeds each; reported: mean ± std over seeds of the steady s/step (median of steps 2..N)
and of held-out greedy accuracy after the same number of steps, with the load average seen.
Targets: >= 1.5x TRL per step on tiny, >= 2x on small, >= 1x TRL+vLLM, accuracy not worse where
the intervals say so. Our job's per-phase step breakdown (timing/<phase>_s) is printed too.

    .venv/bin/python bench/grpo_vs_trl.py --steps 10                      # the full race
    .venv/bin/python bench/grpo_vs_trl.py --breakdown OUTPUT_DIR/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchstats import compare_intervals, load_average, load_note, ratio, spread

ROOT = Path(__file__).resolve().parents[1]
TRL_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
SETUP_TRL = ROOT / "bench" / "setup_trl_venv.sh"
TRL_VLLM_PYTHON = ROOT / ".venv-trl-vllm" / "bin" / "python"
SETUP_TRL_VLLM = ROOT / "bench" / "setup_trl_vllm_venv.sh"
PEERS = ("trl", "trl_vllm")
# Per-step speed targets (times faster than the peer) by model size; accuracy: not worse.
SPEED_TARGETS = {("tiny", "trl"): 1.5, ("small", "trl"): 2.0, ("tiny", "trl_vllm"): 1.0,
                 ("small", "trl_vllm"): 1.0}  # fmt: skip


# The GRPO job's defaults (r1platform.training.settings.GRPOSettings): the bench compares the
# job users actually run. test_bench_grpo_race checks they have not drifted apart.
@dataclass(frozen=True)
class BenchSettings:
    model: str
    dataset: str = "arithmetic"
    steps: int = 10
    group_size: int = 8
    prompts_per_step: int = 16
    lr: float = 1e-4
    beta: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    loss_agg: str = "token-mean"
    scale_rewards: bool = True
    num_iterations: int = 1
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0
    eval_n: int = 64


# ---------------------------------------------------------------------------- commands


def shared_flags(s: BenchSettings) -> list[str]:
    """Flags both sides spell the same way (the GRPO job's own flag names)."""
    return [
        f"--dataset={s.dataset}",
        f"--group_size={s.group_size}",
        f"--prompts_per_step={s.prompts_per_step}",
        f"--lr={s.lr}",
        f"--beta={s.beta}",
        f"--clip_low={s.clip_low}",
        f"--clip_high={s.clip_high}",
        f"--loss_agg={s.loss_agg}",
        f"--num_iterations={s.num_iterations}",
        f"--max_new_tokens={s.max_new_tokens}",
        f"--temperature={s.temperature}",
        f"--seed={s.seed}",
    ]


def our_command(s: BenchSettings, output_dir: Path) -> list[str]:
    """How the benchmark invokes our job: the one place to change if its CLI changes."""
    return [
        sys.executable,
        str(ROOT / "jobs" / "grpo.py"),
        f"--model={s.model}",
        f"--max_steps={s.steps}",
        # Eval at step 0 and at the last step only: both sides then pay for exactly two evals.
        f"--eval_every={s.steps}",
        f"--save_every={s.steps}",
        f"--eval_size={s.eval_n}",
        f"--output_dir={output_dir}",
        # pydantic-settings' implicit boolean flags take no value.
        "--scale_rewards" if s.scale_rewards else "--no-scale_rewards",
        *shared_flags(s),
    ]


def trl_command(
    s: BenchSettings,
    reward_funcs: str,
    reward_weights: str = "",
    *,
    use_vllm: bool = False,
) -> list[str]:
    python = TRL_VLLM_PYTHON if use_vllm else TRL_PYTHON
    return [
        str(python),
        str(ROOT / "bench" / "trl_peer.py"),
        f"--model={s.model}",
        f"--max_steps={s.steps}",
        f"--eval_n={s.eval_n}",
        f"--reward_funcs={reward_funcs}",
        *([f"--reward_weights={reward_weights}"] if reward_weights else []),
        *(["--use_vllm"] if use_vllm else []),
        "--eval_before",
        f"--scale_rewards={str(s.scale_rewards).lower()}",
        *shared_flags(s),
    ]


def job_rewards() -> tuple[str, str]:
    """The job's default rewards and weights (accuracy 1, format 0.1), for the TRL side."""
    sys.path.insert(0, str(ROOT / "platform"))
    from r1platform.training.settings import parse_settings

    specs = parse_settings([]).reward_specs()
    return ",".join(x["spec"] for x in specs), ",".join(str(x["weight"]) for x in specs)


# ---------------------------------------------------------------------------- results


@dataclass
class SideResult:
    side: str
    ok: bool
    s_per_step: float | None = None
    s_per_step_steady: float | None = None
    rollout_tokens_per_s: float | None = None
    eval_accuracy_step0: float | None = None
    eval_accuracy: float | None = None
    eval_step: int | None = None
    wall_s: float | None = None
    error: str | None = None
    seed: int | None = None
    load_before: float | None = None  # 1-minute load average when the run started / ended
    load_after: float | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    precision: str | None = None  # the compute precision the side ran (each at its default)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The job's metrics.jsonl, skipping blank and torn (partially written) lines."""
    rows: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def step_breakdown(metrics: list[dict[str, Any]], skip: int = 1) -> dict[str, float]:
    """Mean seconds per phase over steady steps, from the job's `timing/<phase>_s` fields
    (r1platform.training.steptime): the first `skip` steps and eval steps are left out, since
    they pay warm-up and evaluation. Empty if the job does not emit timings."""
    steps = sorted((m for m in metrics if "step_s" in m), key=lambda m: m["step"])
    steady = [m for m in steps[skip:] if "eval_accuracy" not in m] or steps[skip:] or steps
    keys = sorted({k for m in steady for k in m if k.startswith("timing/") and k.endswith("_s")})
    out = {k[len("timing/") : -2]: _mean([float(m.get(k) or 0.0) for m in steady]) for k in keys}
    if steady and out:
        out["step"] = _mean([float(m["step_s"]) for m in steady])
    return out


def format_breakdown(b: dict[str, float]) -> str:
    if not b:
        return "no per-phase timings (timing/<phase>_s) in metrics.jsonl"
    total = b.get("step") or sum(v for k, v in b.items() if k != "step")
    lines = [
        f"| {'phase':<10} | {'s/step':>8} | {'share':>6} |",
        f"|{'-' * 12}|{'-' * 10}|{'-' * 8}|",
    ]
    for k, v in sorted(b.items(), key=lambda kv: -kv[1]):
        if k != "step":
            lines.append(f"| {k:<10} | {v:>8.3f} | {100 * v / total:>5.1f}% |")
    lines.append(f"| {'step':<10} | {total:>8.3f} | {'100%':>6} |")
    return "\n".join(lines)


def summarize_ours(metrics: list[dict[str, Any]], wall_s: float | None = None) -> SideResult:
    """s/step from `step_s`, rollout tok/s from `rollout_tokens_per_s`, and the accuracy of the
    first and last `eval_accuracy` lines."""
    steps = sorted((m for m in metrics if "step_s" in m), key=lambda m: m["step"])
    step_s = [float(m["step_s"]) for m in steps]
    tps = [float(m["rollout_tokens_per_s"]) for m in steps if m.get("rollout_tokens_per_s")]
    evals = sorted((m for m in metrics if "eval_accuracy" in m), key=lambda m: m["step"])
    steady = step_s[1:] or step_s  # the first step pays one-off warm-up costs
    return SideResult(
        side="ours",
        ok=bool(step_s),
        s_per_step=_mean(step_s),
        s_per_step_steady=statistics.median(steady) if steady else None,
        rollout_tokens_per_s=_mean(tps),
        eval_accuracy_step0=evals[0]["eval_accuracy"] if len(evals) > 1 else None,
        eval_accuracy=evals[-1]["eval_accuracy"] if evals else None,
        eval_step=evals[-1]["step"] if evals else None,
        wall_s=wall_s,
        error=None if step_s else "metrics.jsonl has no step_s lines",
        breakdown=step_breakdown(metrics),
        precision=our_precision(),
    )


def our_precision() -> str:
    """What the job's `auto` memory mode is on this machine (the job runs it on the same CPU)."""
    sys.path.insert(0, str(ROOT / "platform"))
    from r1platform.training.fsdp import worker_mode

    mode = worker_mode("auto", "auto")
    return f"{mode.precision} ({mode.strategy})"


def summarize_trl(
    out: dict[str, Any], wall_s: float | None = None, side: str = "trl"
) -> SideResult:
    return SideResult(
        side=side,
        ok=True,
        s_per_step=out.get("s_per_step"),
        s_per_step_steady=out.get("s_per_step_steady"),
        rollout_tokens_per_s=out.get("rollout_tokens_per_s"),
        eval_accuracy_step0=out.get("eval_accuracy_step0"),
        eval_accuracy=out.get("eval_accuracy"),
        eval_step=out.get("steps"),
        wall_s=wall_s,
        precision=out.get("precision"),
    )


def last_json_line(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON result line in output")


def _tail(text: str, n: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-n:])


# ---------------------------------------------------------------------------- running


def ours_missing() -> str | None:
    return None if (ROOT / "jobs" / "grpo.py").exists() else "jobs/grpo.py does not exist yet"


def run_ours(s: BenchSettings, workdir: Path, timeout_s: float) -> SideResult:
    missing = ours_missing()
    if missing:
        return SideResult("ours", ok=False, error=missing)
    out_dir = workdir / "ours"
    env = {**os.environ, "RAY_ADDRESS": os.environ.get("BENCH_RAY_ADDRESS", "local")}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            our_command(s, out_dir),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return SideResult("ours", ok=False, error=f"timed out after {timeout_s:.0f}s")
    wall = time.perf_counter() - t0
    metrics_path = out_dir / "metrics.jsonl"
    if proc.returncode != 0 or not metrics_path.exists():
        return SideResult(
            "ours",
            ok=False,
            wall_s=wall,
            error=f"exit {proc.returncode}: {_tail(proc.stderr or proc.stdout)}",
        )
    return summarize_ours(read_metrics(metrics_path), wall)


def ensure_venv(python: Path, setup: Path) -> None:
    if not (python.parent.parent / ".installed").exists():
        print(
            f"creating {python.parent.parent.name} ({setup.name}) ...", file=sys.stderr, flush=True
        )
        subprocess.run(["bash", str(setup)], cwd=ROOT, check=True)


def run_trl(
    s: BenchSettings,
    reward_funcs: str,
    timeout_s: float,
    reward_weights: str = "",
    *,
    use_vllm: bool = False,
) -> SideResult:
    side = "trl_vllm" if use_vllm else "trl"
    python, setup = (TRL_VLLM_PYTHON, SETUP_TRL_VLLM) if use_vllm else (TRL_PYTHON, SETUP_TRL)
    try:
        ensure_venv(python, setup)
    except subprocess.CalledProcessError as exc:
        return SideResult(side, ok=False, error=f"{setup.name} failed ({exc.returncode})")
    # vLLM's CPU backend sizes its KV cache from this, as our engines do (kv_cache_gib 1).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            trl_command(s, reward_funcs, reward_weights, use_vllm=use_vllm),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return SideResult(side, ok=False, error=f"timed out after {timeout_s:.0f}s")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return SideResult(
            side, ok=False, wall_s=wall, error=f"exit {proc.returncode}: {_tail(proc.stderr)}"
        )
    try:
        return summarize_trl(last_json_line(proc.stdout), wall, side)
    except ValueError as exc:
        return SideResult(side, ok=False, wall_s=wall, error=f"{exc}: {_tail(proc.stdout)}")


# ---------------------------------------------------------------------------- report

ROWS = (
    # (label, field, higher is better)
    ("seconds/step (mean)", "s_per_step", False),
    ("seconds/step (median, steady)", "s_per_step_steady", False),
    ("rollout tokens/s", "rollout_tokens_per_s", True),
    ("held-out accuracy, step 0", "eval_accuracy_step0", True),
    ("held-out accuracy, last step", "eval_accuracy", True),
    ("process wall seconds", "wall_s", False),
)


def speedup(ours: float | None, trl: float | None, higher_is_better: bool) -> float | None:
    """How many times better ours is: >1 means ours wins, for either kind of metric."""
    if ours is None or trl is None:
        return None
    num, den = (ours, trl) if higher_is_better else (trl, ours)
    return num / den if den else None


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def format_table(ours: SideResult, trl: SideResult) -> str:
    """One seed, ours against one peer."""
    lines = [
        f"| {'metric':<30} | {'ours':>9} | {'TRL':>9} | {'ours vs TRL':>11} |",
        f"|{'-' * 32}|{'-' * 11}|{'-' * 11}|{'-' * 13}|",
    ]
    for label, key, higher in ROWS:
        # A failed side's partial numbers (e.g. the seconds it took to fail) are not results.
        a = getattr(ours, key) if ours.ok else None
        b = getattr(trl, key) if trl.ok else None
        r = speedup(a, b, higher)
        shown = "n/a" if r is None else f"{r:.2f}x"
        if key.startswith("eval_accuracy") and a is not None and b is not None:
            shown = f"{100 * (a - b):+.1f} pts"
        lines.append(f"| {label:<30} | {_fmt(a):>9} | {_fmt(b):>9} | {shown:>11} |")
    lines.append("'ours vs TRL': times faster (>1x = ours better); accuracy as a point difference.")
    for side in (ours, trl):
        if not side.ok:
            lines.append(f"{side.side}: not measured: {side.error}")
    return "\n".join(lines)


def summarize_size(size: str, runs: dict[str, list[SideResult]]) -> dict[str, Any]:
    """Seed statistics per side, speed-ups and accuracy verdicts against each peer."""
    sides: dict[str, Any] = {}
    for side, results in runs.items():
        ok = [r for r in results if r.ok]
        step, acc = spread([r.s_per_step_steady for r in ok]), spread([r.eval_accuracy for r in ok])
        sides[side] = {
            "s_per_step_steady": step.as_dict() if step else None,
            "eval_accuracy": acc.as_dict() if acc else None,
            "rollout_tokens_per_s": spread([r.rollout_tokens_per_s for r in ok]).as_dict()
            if spread([r.rollout_tokens_per_s for r in ok])
            else None,
            "seeds_ok": len(ok),
            "precision": sorted({r.precision or "?" for r in ok}),
            "errors": [r.error for r in results if not r.ok],
            "load_avg_1m": [r.load_before for r in results],
            "runs": [asdict(r) for r in results],
        }
    out: dict[str, Any] = {"sides": sides, "speedup": {}, "accuracy": {}, "accuracy_not_worse": {}}
    ours = runs.get("ours", [])
    ours_step = spread([r.s_per_step_steady for r in ours if r.ok])
    ours_acc = spread([r.eval_accuracy for r in ours if r.ok])
    for peer in PEERS:
        if peer not in runs:
            continue
        pr = [r for r in runs[peer] if r.ok]
        peer_step, peer_acc = (
            spread([r.s_per_step_steady for r in pr]),
            spread([r.eval_accuracy for r in pr]),
        )
        out["speedup"][peer] = ratio(
            peer_step.mean if peer_step else None, ours_step.mean if ours_step else None
        )
        verdict = compare_intervals(ours_acc, peer_acc)
        out["accuracy"][peer] = verdict
        out["accuracy_not_worse"][peer] = (
            None if verdict == "unknown" else float(verdict != "worse")
        )
    return out


def format_size(size: str, summary: dict[str, Any]) -> str:
    lines = [
        f"### {size} model: mean ± std over seeds",
        "| side | precision | steady s/step | held-out acc. | rollout tok/s | seeds ok "
        "| load avg (1 min) at start |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, d in summary["sides"].items():

        def f(x, scale=1.0, digits=3):
            return (
                "n/a"
                if x is None
                else f"{x['mean'] * scale:.{digits}f} ± {x['std'] * scale:.{digits}f}"
            )

        loads = ", ".join("?" if x is None else f"{x:.2f}" for x in d["load_avg_1m"])
        lines.append(
            f"| {side} | {', '.join(d.get('precision') or ['?'])} "
            f"| {f(d['s_per_step_steady'])} | {f(d['eval_accuracy'], 100, 1)}% | "
            f"{f(d['rollout_tokens_per_s'], 1, 0)} | {d['seeds_ok']} | {loads} |"
        )
        lines.extend(f"  {side} failed: {e}" for e in d["errors"])
    for peer, x in summary["speedup"].items():
        goal = SPEED_TARGETS.get((size, peer))
        met = "not measured" if x is None or goal is None else ("met" if x >= goal else "NOT met")
        shown = "n/a" if x is None else f"{x:.2f}x"
        lines.append(f"target: ours >= {goal}x {peer} per step: {shown} -> {met} ({load_note()})")
        verdict = summary["accuracy"][peer]
        acc_met = {"better": "met (better)", "equal": "met (equal within spread)",
                   "worse": "NOT met (worse)"}.get(verdict, "not measured (needs >= 2 seeds per side)")  # fmt: skip
        lines.append(f"target: held-out accuracy not worse than {peer}: {acc_met}")
    return "\n".join(lines)


def default_model(size: str = "tiny") -> str:
    sys.path.insert(0, str(ROOT / "platform"))
    from r1platform.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(preset=size))


def parse_args(argv: list[str] | None = None) -> tuple[BenchSettings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BenchSettings(model="")
    for name, value in asdict(defaults).items():
        if name == "model":
            p.add_argument("--model", default=None, help="HF model dir (default: the size preset)")
        elif isinstance(value, bool):
            p.add_argument(f"--{name}", default=value, type=lambda t: t.lower() == "true")
        else:
            p.add_argument(f"--{name}", default=value, type=type(value))
    p.add_argument("--sides", default="ours,trl,trl_vllm", help="which sides to run")
    p.add_argument(
        "--sizes", default="tiny,small", help="model size presets (r1p model build-tiny)"
    )
    p.add_argument("--seeds", default="0,1,2", help="one run per seed per side")
    p.add_argument("--timeout_s", type=float, default=1800.0, help="per run")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json_out", default=None, help="also write the results as JSON here")
    p.add_argument(
        "--breakdown", default=None, help="only print this metrics.jsonl's step breakdown"
    )
    args = p.parse_args(argv)
    fields = {k: getattr(args, k) for k in asdict(defaults)}
    fields["model"] = args.model or ""
    return BenchSettings(**fields), args


def run_side(side: str, s: BenchSettings, workdir: Path, timeout_s: float) -> SideResult:
    load0 = load_average()[0]
    if side == "ours":
        r = run_ours(s, workdir, timeout_s)
    else:
        funcs, weights = job_rewards()
        r = run_trl(s, funcs, timeout_s, weights, use_vllm=side == "trl_vllm")
    r.seed, r.load_before, r.load_after = s.seed, load0, load_average()[0]
    return r


def main(argv: list[str] | None = None) -> int:
    base, args = parse_args(argv)
    if args.breakdown:
        print(format_breakdown(step_breakdown(read_metrics(Path(args.breakdown)))))
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="grpo-vs-trl-"))
    sides = [x for x in args.sides.split(",") if x]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    doc: dict[str, Any] = {"settings": asdict(base), "seeds": seeds}
    for size in [x for x in args.sizes.split(",") if x]:
        model = base.model or default_model(size)
        runs: dict[str, list[SideResult]] = {side: [] for side in sides}
        for side in sides:  # one side and one seed at a time: nothing else runs beside it
            for seed in seeds:
                s = BenchSettings(**{**asdict(base), "model": model, "seed": seed})
                r = run_side(side, s, workdir / size / side / str(seed), args.timeout_s)
                state = f"{r.s_per_step_steady} s/step" if r.ok else f"failed: {r.error}"
                print(
                    f"[{size}] {side} seed {seed}: {state} (load {r.load_before:.2f})", flush=True
                )
                if r.breakdown:
                    print(format_breakdown(r.breakdown), flush=True)
                runs[side].append(r)
        doc[size] = summarize_size(size, runs)
        print(format_size(size, doc[size]), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

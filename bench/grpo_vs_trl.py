"""GRPO speed and accuracy: our Ray job vs TRL's GRPOTrainer, same settings, one run, on CPU.

Both sides get the same model, task, group size, prompts per step, lr, max_new_tokens and step
count. They run one after the other, never together, so neither steals the other's cores.
Ours is `jobs/grpo.py` (read back from OUTPUT_DIR/metrics.jsonl); TRL's is bench/trl_peer.py in
.venv-trl, created on first use by bench/setup_trl_venv.sh.

    .venv/bin/python bench/grpo_vs_trl.py --steps 10
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRL_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
SETUP_TRL = ROOT / "bench" / "setup_trl_venv.sh"


# Defaults mirror jobs/grpo.py's (r1platform.training.settings), so the bench compares the job
# users actually run; rewards are left to the job's default (accuracy, format) on both sides.
@dataclass(frozen=True)
class BenchSettings:
    model: str
    dataset: str = "arithmetic"
    steps: int = 10
    group_size: int = 8
    prompts_per_step: int = 16
    lr: float = 2e-3
    beta: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    loss_agg: str = "token-mean"
    scale_rewards: bool = True
    num_iterations: int = 1
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0
    eval_n: int = 200


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


def trl_command(s: BenchSettings, reward_funcs: str) -> list[str]:
    return [
        str(TRL_PYTHON),
        str(ROOT / "bench" / "trl_peer.py"),
        f"--model={s.model}",
        f"--max_steps={s.steps}",
        f"--eval_n={s.eval_n}",
        f"--reward_funcs={reward_funcs}",
        "--eval_before",
        f"--scale_rewards={str(s.scale_rewards).lower()}",
        *shared_flags(s),
    ]


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
    )


def summarize_trl(out: dict[str, Any], wall_s: float | None = None) -> SideResult:
    return SideResult(
        side="trl",
        ok=True,
        s_per_step=out.get("s_per_step"),
        s_per_step_steady=out.get("s_per_step_steady"),
        rollout_tokens_per_s=out.get("rollout_tokens_per_s"),
        eval_accuracy_step0=out.get("eval_accuracy_step0"),
        eval_accuracy=out.get("eval_accuracy"),
        eval_step=out.get("steps"),
        wall_s=wall_s,
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


def ensure_trl_venv() -> None:
    if not (TRL_PYTHON.parent.parent / ".installed").exists():
        print("creating .venv-trl (bench/setup_trl_venv.sh) ...", file=sys.stderr, flush=True)
        subprocess.run(["bash", str(SETUP_TRL)], cwd=ROOT, check=True)


def run_trl(s: BenchSettings, reward_funcs: str, timeout_s: float) -> SideResult:
    try:
        ensure_trl_venv()
    except subprocess.CalledProcessError as exc:
        return SideResult("trl", ok=False, error=f"setup_trl_venv.sh failed ({exc.returncode})")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            trl_command(s, reward_funcs),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return SideResult("trl", ok=False, error=f"timed out after {timeout_s:.0f}s")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return SideResult(
            "trl", ok=False, wall_s=wall, error=f"exit {proc.returncode}: {_tail(proc.stderr)}"
        )
    try:
        return summarize_trl(last_json_line(proc.stdout), wall)
    except ValueError as exc:
        return SideResult("trl", ok=False, wall_s=wall, error=f"{exc}: {_tail(proc.stdout)}")


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
    lines = [
        f"| {'metric':<30} | {'ours':>9} | {'TRL':>9} | {'ours vs TRL':>11} |",
        f"|{'-' * 32}|{'-' * 11}|{'-' * 11}|{'-' * 13}|",
    ]
    for label, key, higher in ROWS:
        # A failed side's partial numbers (e.g. the seconds it took to fail) are not results.
        a = getattr(ours, key) if ours.ok else None
        b = getattr(trl, key) if trl.ok else None
        ratio = speedup(a, b, higher)
        shown = "n/a" if ratio is None else f"{ratio:.2f}x"
        if key.startswith("eval_accuracy") and a is not None and b is not None:
            shown = f"{100 * (a - b):+.1f} pts"
        lines.append(f"| {label:<30} | {_fmt(a):>9} | {_fmt(b):>9} | {shown:>11} |")
    lines.append("'ours vs TRL': times faster (>1x = ours better); accuracy as a point difference.")
    for side in (ours, trl):
        if not side.ok:
            lines.append(f"{side.side}: not measured: {side.error}")
    return "\n".join(lines)


def default_model() -> str:
    sys.path.insert(0, str(ROOT / "platform"))
    from r1platform.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model())


def parse_args(argv: list[str] | None = None) -> tuple[BenchSettings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BenchSettings(model="")
    for name, value in asdict(defaults).items():
        if name == "model":
            p.add_argument("--model", default=None, help="HF model dir (default: the tiny model)")
        elif isinstance(value, bool):
            p.add_argument(f"--{name}", default=value, type=lambda t: t.lower() == "true")
        else:
            p.add_argument(f"--{name}", default=value, type=type(value))
    p.add_argument(
        "--reward_funcs",
        default="accuracy,format",
        help="TRL side's rewards; must match our job's defaults",
    )
    p.add_argument("--sides", default="ours,trl", help="which sides to run")
    p.add_argument("--timeout_s", type=float, default=1800.0, help="per side")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json_out", default=None, help="also write both results as JSON here")
    args = p.parse_args(argv)
    fields = {k: getattr(args, k) for k in asdict(defaults)}
    fields["model"] = args.model or default_model()
    return BenchSettings(**fields), args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="grpo-vs-trl-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sides = set(args.sides.split(","))
    print(f"settings: {json.dumps(asdict(settings))}", flush=True)
    ours = (
        run_ours(settings, workdir, args.timeout_s)
        if "ours" in sides
        else SideResult("ours", ok=False, error="not run (--sides)")
    )
    trl = (
        run_trl(settings, args.reward_funcs, args.timeout_s)
        if "trl" in sides
        else SideResult("trl", ok=False, error="not run (--sides)")
    )
    print(format_table(ours, trl), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"settings": asdict(settings), "ours": asdict(ours), "trl": asdict(trl)})
        )
    return 0 if all(r.ok for r in (ours, trl) if r.side in sides) else 1


if __name__ == "__main__":
    sys.exit(main())

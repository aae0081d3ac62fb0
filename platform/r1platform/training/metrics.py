"""Per-step metrics: what each rank measures, the rank-0 aggregate, and where it is written
(OUTPUT_DIR/metrics.jsonl, a progress line, an OpenTelemetry span, Prometheus gauges)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from r1platform.training import rewards


class MetricsLog:
    """OUTPUT_DIR/metrics.jsonl, one object per step. On (re)start it drops lines past the
    step being resumed from, so a restarted run leaves one consistent history."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", -1) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        tmp.replace(path)
        self.steps = {json.loads(k)["step"] for k in kept}

    def write(self, record: dict[str, Any]) -> None:
        if record["step"] in self.steps:
            return
        self.steps.add(record["step"])
        with self.path.open("a") as fh:
            fh.write(json.dumps(jsonable(record)) + "\n")


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats become null (JSON has no NaN); floats keep 6 decimals."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, float):
            out[k] = round(v, 6)
        else:
            out[k] = v
    return out


def otel_ok(v: Any) -> bool:
    """Whether a value can be a span attribute."""
    return isinstance(v, bool | int | str) or (isinstance(v, float) and math.isfinite(v))


PROGRESS_KEYS = (
    ("reward", "reward_mean", "{:.3f}"),
    ("acc", "accuracy", "{:.3f}"),
    ("eval", "eval_accuracy", "{:.3f}"),
    ("kl", "kl", "{:.4f}"),
    ("ent", "entropy", "{:.3f}"),
    ("len", "response_length_mean", "{:.1f}"),
    ("sync", "weight_sync_s", "{:.3f}s"),
    ("step", "step_s", "{:.2f}s"),
)


def progress_line(record: dict[str, Any], max_steps: int) -> str:
    """One rich-markup line for a step record (null/NaN values are left out)."""
    parts = [f"[bold]grpo[/bold] step {record['step']}/{max_steps}"]
    for label, key, fmt in PROGRESS_KEYS:
        v = record.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            parts.append(f"{label}={fmt.format(v)}")
    if record.get("skipped"):
        parts.append("[red]skipped (non-finite loss)[/red]")
    return " ".join(parts)


def group_stats(total: Sequence[float], group_size: int) -> float:
    """Fraction of groups whose rewards all tie (no learning signal)."""
    t = torch.tensor(total, dtype=torch.float32).view(-1, group_size)
    return float(((t.max(1).values - t.min(1).values) == 0).float().mean())


def aggregate(
    parts: list[dict[str, Any]],
    group_size: int,
    rollout_s: float,
    train_s: float,
    sync_s: float,
    refills: int,
) -> dict[str, Any]:
    """The step record's measured fields from every rank's `parts`."""
    total = [x for p in parts for x in p["total"]]
    lengths = [x for p in parts for x in p["lengths"]]
    per_func: dict[str, list[float]] = {}
    for p in parts:
        for k, v in p["per_func"].items():
            per_func.setdefault(k, []).extend(v)
    t = torch.tensor(total)
    rec: dict[str, Any] = {
        "reward_mean": float(t.mean()),
        "reward_std": float(t.std(unbiased=False)),
        "frac_reward_zero_std": group_stats(total, group_size),
        "response_length_mean": sum(lengths) / len(lengths),
        "response_length_max": max(lengths),
        "rollout_tokens_per_s": sum(p["gen_tokens"] for p in parts) / max(rollout_s, 1e-9),
        "train_tokens_per_s": sum(p["tokens"] for p in parts) / max(train_s, 1e-9),
        "rollout_s": rollout_s,
        "train_s": train_s,
        "weight_sync_s": sync_s,
        "refill_rounds": refills,
    }
    for k, v in rewards.reward_stats(per_func).items():
        rec[k] = v
    acc = per_func.get("accuracy")
    if acc is not None:
        vals = [v for v in acc if not math.isnan(v)]
        rec["accuracy"] = sum(vals) / len(vals) if vals else math.nan
    diffs = [p["logprob_diff"] for p in parts if math.isfinite(p["logprob_diff"])]
    if diffs:
        rec["logprob_diff"] = sum(diffs) / len(diffs)
    losses = [p["loss"] for p in parts if p["loss"]]
    for key in ("loss", "kl", "clip_frac", "entropy", "ratio_mean", "grad_norm"):
        vals = [lm[key] for lm in losses if key in lm]
        if vals:
            rec[key] = sum(vals) / len(vals)
    return rec

"""Pure helpers of the benchmarks: seed statistics, the load average, and the fixed target set
of bench/results/latest.json (imported by plain name, like benchutil)."""

from __future__ import annotations

import math
import os
import platform as _platform  # the stdlib module; the name only lives inside this file
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Spread:
    """mean ± sample std over seeds or rounds (std 0 for a single value)."""

    mean: float
    std: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.std

    @property
    def high(self) -> float:
        return self.mean + self.std

    def fmt(self, scale: float = 1.0, digits: int = 3) -> str:
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f} (n={self.n})"

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def spread(values: Sequence[float | None]) -> Spread | None:
    """None values (failed seeds) are dropped; None if nothing is left."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    return Spread(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs))


def ratio(peer: float | None, ours: float | None) -> float | None:
    """peer/ours: for a cost such as s/step, >1 means ours is that many times faster."""
    if peer is None or ours is None or ours == 0:
        return None
    return peer / ours


def compare_intervals(ours: Spread | None, peer: Spread | None) -> str:
    """'better', 'worse' or 'equal' from mean ± std intervals: a difference is claimed only
    when the intervals do not overlap; with one value per side nothing can be claimed."""
    if ours is None or peer is None:
        return "unknown"
    if ours.n < 2 or peer.n < 2:
        return "unknown"
    if ours.low > peer.high:
        return "better"
    if ours.high < peer.low:
        return "worse"
    return "equal"


# ---------------------------------------------------------------------------- the machine


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def load_note() -> str:
    """Printed beside every figure: a number taken on a loaded machine is not publishable."""
    one, five, fifteen = load_average()
    return f"load avg {one:.2f}/{five:.2f}/{fifteen:.2f} on {os.cpu_count()} CPUs"


def machine() -> str:
    cpu = _platform.processor() or _platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, no GPU"


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One README performance target: `value` is read from latest.json's results by `read`
    (None: not measured), `met` compares it with `bound` in direction `op`."""

    name: str
    text: str  # the target as the README states it
    op: str  # "<=" or ">="
    bound: float
    read: Callable[[dict[str, Any]], float | None]
    peer: str  # who the ratio is against, measured in the same run


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def _fleet_ratio(trace: str, peer: str, field: str = "cost_at_slo") -> Callable:
    def read(results: dict[str, Any]) -> float | None:
        doc = _get(results, "fleet_sim", trace)
        ours, other = _num(_get(doc, "r1p", field)), _num(_get(doc, peer, field))
        if ours is None or not other:
            return None
        return ours / other

    return read


def _fleet_value(trace: str, field: str) -> Callable:
    return lambda results: _num(_get(results, "fleet_sim", trace, "r1p", field))


def _path(*path: str) -> Callable:
    return lambda results: _num(_get(results, *path))


TRACES = ("synthetic", "azure")

TARGETS: tuple[Target, ...] = (
    Target("serving.ttft_p50_vs_vllm", "TTFT p50 ≤ 1.10× vLLM's server, worst concurrency",
           "<=", 1.10, _path("serving", "worst", "ttft_p50_ratio"), "vLLM api_server"),
    Target("serving.throughput_vs_vllm", "output tokens/s ≥ 0.95× vLLM's server, worst concurrency",
           ">=", 0.95, _path("serving", "worst", "tokens_per_s_ratio"), "vLLM api_server"),
    Target("serving.haproxy.ttft_p50_vs_vllm", "the same with serve.ingress=haproxy: TTFT p50",
           "<=", 1.10, _path("serving", "ingress", "haproxy", "worst", "ttft_p50_ratio"),
           "vLLM api_server"),
    Target("serving.haproxy.throughput_vs_vllm", "the same with serve.ingress=haproxy: tokens/s",
           ">=", 0.95, _path("serving", "ingress", "haproxy", "worst", "tokens_per_s_ratio"),
           "vLLM api_server"),
    Target("grpo.tiny.speed_vs_trl", "steady s/step ≥ 1.5× faster than TRL, tiny model",
           ">=", 1.5, _path("grpo", "tiny", "speedup", "trl"), "TRL GRPOTrainer (HF generate)"),
    Target("grpo.small.speed_vs_trl", "steady s/step ≥ 2× faster than TRL, small (~50×) model",
           ">=", 2.0, _path("grpo", "small", "speedup", "trl"), "TRL GRPOTrainer (HF generate)"),
    Target("grpo.tiny.speed_vs_trl_vllm", "steady s/step ≥ 1× TRL+vLLM colocate, tiny model",
           ">=", 1.0, _path("grpo", "tiny", "speedup", "trl_vllm"), "TRL GRPOTrainer (vLLM colocate)"),
    Target("grpo.small.speed_vs_trl_vllm", "steady s/step ≥ 1× TRL+vLLM colocate, small model",
           ">=", 1.0, _path("grpo", "small", "speedup", "trl_vllm"), "TRL GRPOTrainer (vLLM colocate)"),
    Target("grpo.tiny.accuracy_vs_trl", "held-out accuracy not below TRL's (mean ± std, 3 seeds), tiny",
           ">=", 1.0, _path("grpo", "tiny", "accuracy_not_worse", "trl"), "TRL GRPOTrainer (HF generate)"),
    Target("grpo.small.accuracy_vs_trl", "held-out accuracy not below TRL's (mean ± std, 3 seeds), small",
           ">=", 1.0, _path("grpo", "small", "accuracy_not_worse", "trl"), "TRL GRPOTrainer (HF generate)"),
    Target("rollout.hybrid_vs_bare_vllm", "hybrid rollout tokens/s ≥ 0.80× bare vllm.LLM.generate",
           ">=", 0.80, _path("rollout", "ratio"), "vllm.LLM.generate"),
    Target("planner.cost_vs_optimum", "ILP cost within 1% of the brute-force optimum (worst instance)",
           "<=", 1.01, _path("planner", "ilp_cost_ratio_max"), "brute-force enumeration"),
    Target("planner.plan_time_s", "plan time < 1 s at 10k GPUs × 50 deployments",
           "<=", 1.0, _path("planner", "plan_time_s"), "from-scratch exact ILP"),
    *(
        t
        for trace in TRACES
        for t in (
            Target(f"fleet.{trace}.cost_vs_first_fit", f"{trace}: serving $ at ≥99% SLO ≤ 0.90× best first-fit",
                   "<=", 0.90, _fleet_ratio(trace, "first_fit"), "first-fit (better variant)"),
            Target(f"fleet.{trace}.cost_vs_single_type", f"{trace}: serving $ at ≥99% SLO ≤ 0.95× best single type",
                   "<=", 0.95, _fleet_ratio(trace, "single_type"), "single-type fleet (best type)"),
            Target(f"fleet.{trace}.cost_vs_clairvoyant", f"{trace}: within 10% of the clairvoyant planner",
                   "<=", 1.10, _fleet_ratio(trace, "clairvoyant"), "clairvoyant reference"),
            Target(f"fleet.{trace}.harvest", f"{trace}: ≥ 70% of serving-idle GPU-hours harvested",
                   ">=", 0.70, _fleet_value(trace, "harvest_ratio"), "serving-idle GPU-hours"),
            Target(f"fleet.{trace}.slo", f"{trace}: SLO attainment ≥ 99% (min over seeds)",
                   ">=", 0.99, _fleet_value(trace, "slo_attainment"), "the workload's p99 targets"),
            Target(f"fleet.{trace}.lost_gpu_hours", f"{trace}: 0 training GPU-hours lost",
                   "<=", 0.0, _fleet_value(trace, "lost_gpu_hours"), "the same run's training queue"),
            Target(f"fleet.{trace}.jobs_short_of_min", f"{trace}: every job reaches its minimum share",
                   "<=", 0.0, _fleet_value(trace, "jobs_short_of_min"), "the same run's training queue"),
        )
    ),
    Target("scaleout.accuracy_delta_pts", "2×2 vs 1×1 final held-out accuracy within 5 points",
           "<=", 5.0, _path("scaleout", "accuracy_delta_pts"), "the same job at 1 worker × 1 engine"),
    Target("scaleout.curves_within_spread", "2×2 and 1×1 eval curves within each other's seed spread",
           ">=", 1.0, _path("scaleout", "curves_within_spread"), "the same job at 1 worker × 1 engine"),
)  # fmt: skip
TARGET_NAMES = tuple(t.name for t in TARGETS)


def evaluate_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every name in TARGET_NAMES, always: a missing result is value None, met False."""
    out: dict[str, dict[str, Any]] = {}
    for t in TARGETS:
        try:
            value = t.read(results)
        except (TypeError, ValueError, ZeroDivisionError):
            value = None
        met = value is not None and (value <= t.bound if t.op == "<=" else value >= t.bound)
        out[t.name] = {"target": f"{t.op} {t.bound:g}", "value": value, "met": met}
    return out


def latest_document(
    results: dict[str, Any], *, date: str, machine_text: str, commit_id: str | None, command: str
) -> dict[str, Any]:
    return {
        "machine": machine_text,
        "date": date,
        "commit": commit_id,
        "command": command,
        "results": results,
        "targets": evaluate_targets(results),
    }

"""GRPO Prometheus metrics, recorded by trainer rank 0 through `ray.util.metrics`.

Ray workers have no port of their own to scrape; each node's Ray metrics agent exports every
`ray.util.metrics` series on Ray's metrics port (the one the PodMonitors already scrape),
prefixing the name with the `ray_` namespace (ray/_private/telemetry/
open_telemetry_metric_recorder.py: NAMESPACE = "ray"; the OpenCensus path in
ray/dashboard/modules/reporter/reporter_agent.py uses namespace="ray" too). So a job needs no
server and survives a worker restart: the new rank 0 records into the same series.
"""

from __future__ import annotations

import math
from typing import Any

LABELS = ("job",)
# Seconds per step / per weight push on this platform: tiny CPU steps to large GPU steps.
STEP_BOUNDARIES = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]
SYNC_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30]
RAY_PREFIX = "ray_"

GAUGES = {
    "r1p_grpo_reward": ("reward_mean", "Mean total reward of the step's samples"),
    "r1p_grpo_accuracy": ("accuracy", "Accuracy reward mean over the step's samples"),
    "r1p_grpo_eval_accuracy": ("eval_accuracy", "Greedy accuracy on the held-out prompts"),
    "r1p_grpo_step": ("step", "Last completed GRPO step"),
}
HISTOGRAMS = {
    "r1p_grpo_step_seconds": ("step_s", "Wall time of one GRPO step", STEP_BOUNDARIES),
    "r1p_grpo_weight_sync_seconds": (
        "weight_sync_s",
        "Time to push the new weights to the rollout engines",
        SYNC_BOUNDARIES,
    ),
    # FSDP only: the all-gather of the sharded weights, the part of the push DDP does not pay.
    "r1p_grpo_weight_gather_seconds": (
        "weight_gather_s",
        "Time to all-gather the FSDP-sharded weights before a push (part of the sync time)",
        SYNC_BOUNDARIES,
    ),
}

EXPORTED_NAMES: frozenset[str] = frozenset(
    {RAY_PREFIX + n for n in GAUGES}
    | {RAY_PREFIX + n + sfx for n in HISTOGRAMS for sfx in ("_bucket", "_sum", "_count")}
)


class GRPOMetrics:
    """The job's series, labelled job=<run_name>. `observe_step` takes a step record (the
    metrics.jsonl object) and records whichever of its values are finite numbers."""

    def __init__(self, job: str) -> None:
        from ray.util.metrics import Gauge, Histogram

        self.tags = {"job": job}
        self.gauges: dict[str, Any] = {
            name: Gauge(name, description=desc, tag_keys=LABELS)
            for name, (_, desc) in GAUGES.items()
        }
        self.histograms: dict[str, Any] = {
            name: Histogram(name, description=desc, boundaries=bounds, tag_keys=LABELS)
            for name, (_, desc, bounds) in HISTOGRAMS.items()
        }

    def observe_step(self, record: dict[str, Any]) -> None:
        for name, (key, _) in GAUGES.items():
            if _finite(record.get(key)):
                self.gauges[name].set(float(record[key]), tags=self.tags)
        for name, (key, _, _) in HISTOGRAMS.items():
            if _finite(record.get(key)):
                self.histograms[name].observe(float(record[key]), tags=self.tags)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

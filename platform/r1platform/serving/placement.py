"""Where a model's replicas go: pure functions from settings to Serve deployment options.

A replica is one placement group with one bundle per tensor-parallel rank, packed on one node.
On real GPU nodes a bundle holds a GPU plus Ray's accelerator_type marker; on the simulated
fleet (virtual nodes that declare `accelerator_type:<X>` / `pool:<P>` units instead of GPUs) a
bundle holds one such unit. The shape is identical, so the scheduling logic tested on CPU is
the logic that runs on GPUs.
"""

from __future__ import annotations

from typing import Any

from r1platform.config import ModelSettings
from r1platform.contracts import deployment_name
from r1platform.contracts.placement_mode import PlacementMode, detect_mode
from r1platform.contracts.resources import accelerator_key, pool_key

__all__ = ["PlacementMode", "detect_mode", "engine_options", "gpu_unit", "replica_bundles"]


def gpu_unit(ms: ModelSettings, mode: PlacementMode) -> dict[str, float]:
    """The resources that stand for one GPU of this model's pool."""
    if mode == "gpu":
        unit: dict[str, float] = {"GPU": 1.0}
        if ms.accelerator_type:
            unit[accelerator_key(ms.accelerator_type)] = 0.001
        if ms.pool:
            unit[pool_key(ms.pool)] = 0.001
        return unit
    if ms.pool:
        return {pool_key(ms.pool): 1.0}
    if ms.accelerator_type:
        return {accelerator_key(ms.accelerator_type): 1.0}
    return {}


def replica_bundles(ms: ModelSettings, mode: PlacementMode) -> list[dict[str, float]]:
    unit = gpu_unit(ms, mode)
    first = {"CPU": ms.num_cpus, **unit}
    return [first] + [dict(unit) for _ in range(ms.tensor_parallel_size - 1) if unit]


def engine_deployment_name(model_id: str, ms: ModelSettings) -> str:
    """`model@pool`: the name the pool controller parses to scale a model on one pool."""
    return deployment_name.build(model_id, ms.pool, ms.accelerator_type)


def engine_options(model_id: str, ms: ModelSettings, mode: PlacementMode) -> dict[str, Any]:
    a = ms.autoscaling
    env = {"VLLM_CPU_KVCACHE_SPACE": str(ms.cpu_kvcache_space_gib)} if mode == "simulated" else {}
    opts: dict[str, Any] = {
        "name": engine_deployment_name(model_id, ms),
        "placement_group_bundles": replica_bundles(ms, mode),
        "placement_group_strategy": "STRICT_PACK",
        "ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": env}},
        "max_ongoing_requests": ms.max_num_seqs * 2,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
    }
    if a.min_replicas == a.max_replicas:
        # A fixed count is what `r1p control` (the cost-aware autoscaler) sets and changes.
        opts["num_replicas"] = a.min_replicas
    else:
        opts["autoscaling_config"] = {
            "min_replicas": a.min_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        }
    return opts

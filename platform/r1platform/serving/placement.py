"""Where a model's replicas go: pure functions from settings to Serve deployment options.

A replica is one placement group with one bundle per GPU (tensor_parallel_size x
pipeline_parallel_size bundles). On real GPU nodes a bundle holds a GPU plus Ray's
accelerator_type and pool markers; on the simulated fleet (virtual nodes that declare
`accelerator_type:<X>` / `pool:<P>` units instead of GPUs) a bundle holds one such unit. The
shape is identical, so the scheduling logic tested on CPU is the logic that runs on GPUs.

Bundle b is meant for global rank b: pipeline stage b // TP, tensor rank b % TP. The replica
actor (vLLM's driver) sits in bundle 0, so it is on a node of the pool, never on a GPU-less
head. Without pipeline stages the group is STRICT_PACK: tensor parallelism never crosses
nodes. With stages it is PACK: Ray keeps the bundles on as few nodes of the pool as fit, so a
stage that does not fit beside the others goes to another node. Ray cannot promise that a node
gets whole TP groups, so the replica checks the placement it got (`rank_order`) before the
engine starts, and hands vLLM the bundle order that keeps each TP group on one node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r1platform.config import ModelSettings
from r1platform.contracts import deployment_name
from r1platform.contracts.placement_mode import PlacementMode, detect_mode
from r1platform.contracts.resources import accelerator_key, pool_key

__all__ = [
    "PlacementError",
    "PlacementMode",
    "detect_mode",
    "engine_options",
    "gpu_unit",
    "placement_strategy",
    "rank_order",
    "replica_bundles",
    "stage_nodes",
]


class PlacementError(RuntimeError):
    """The placement group's bundles landed where the replica's ranks cannot run."""


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


def world_size(ms: ModelSettings) -> int:
    return ms.tensor_parallel_size * ms.pipeline_parallel_size


def replica_bundles(ms: ModelSettings, mode: PlacementMode) -> list[dict[str, float]]:
    unit = gpu_unit(ms, mode)
    first = {"CPU": ms.num_cpus, **unit}
    return [first] + [dict(unit) for _ in range(world_size(ms) - 1) if unit]


def placement_strategy(ms: ModelSettings) -> str:
    return "PACK" if ms.pipeline_parallel_size > 1 else "STRICT_PACK"


def rank_order(bundle_nodes: Sequence[str], driver_node: str, tp: int) -> list[int]:
    """The bundle of each global rank (rank r runs in bundle order[r]), for the placement Ray
    chose: bundle i is on node bundle_nodes[i]; the driver (the replica actor) runs on
    driver_node.

    Ranks are grouped by node, the driver's node first and then the others in the order of
    their first bundle, bundles ascending within a node. That is the order vLLM 0.32's Ray
    executors give on their own (RayExecutorV2 `get_bundles_sorted_by_node`: driver node
    first, then by node id; the legacy RayDistributedExecutor: driver IP first, then by
    workers per IP and IP, a stable sort), up to the order of the non-driver nodes, which the
    replica fixes by passing this list as VLLM_RAY_BUNDLE_INDICES. Stage s is ranks
    [s*tp, (s+1)*tp): one node holds each TP group only if every node holds whole groups."""
    nodes: dict[str, list[int]] = {}
    if driver_node in bundle_nodes:
        nodes[driver_node] = []
    for i, node in enumerate(bundle_nodes):
        nodes.setdefault(node, []).append(i)
    split = {n: len(b) for n, b in nodes.items() if len(b) % tp}
    if split:
        raise PlacementError(
            f"tensor_parallel_size={tp}: the placement group put "
            + ", ".join(f"{n} bundle(s) on node {node[:12]}" for node, n in split.items())
            + "; a tensor-parallel group would span nodes. Each node of the pool must have "
            "whole groups of tensor_parallel_size GPUs free for this replica."
        )
    return [i for bundles in nodes.values() for i in bundles]


def stage_nodes(order: Sequence[int], bundle_nodes: Sequence[str], tp: int) -> list[str]:
    """The node of each pipeline stage, for ranks placed by `rank_order`."""
    return [bundle_nodes[order[s]] for s in range(0, len(order), tp)]


def engine_deployment_name(model_id: str, ms: ModelSettings) -> str:
    """`model@pool`: the name the pool controller parses to scale a model on one pool."""
    return deployment_name.build(model_id, ms.pool, ms.accelerator_type)


def engine_options(model_id: str, ms: ModelSettings, mode: PlacementMode) -> dict[str, Any]:
    a = ms.autoscaling
    env = {"VLLM_CPU_KVCACHE_SPACE": str(ms.cpu_kvcache_space_gib)} if mode == "simulated" else {}
    opts: dict[str, Any] = {
        "name": engine_deployment_name(model_id, ms),
        "placement_group_bundles": replica_bundles(ms, mode),
        "placement_group_strategy": placement_strategy(ms),
        "ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": env}},
        "max_ongoing_requests": ms.max_num_seqs * 2,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        # A new engine (TP, PP, dtype... change the app's code version, so Serve restarts its
        # replicas) starts its replacements before the old replicas drain: Serve's surge
        # rollout. The default (0) stops the old replicas first.
        "max_surge_percent": 100,
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

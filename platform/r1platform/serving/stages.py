"""A replica's ranks at start-up: where its placement group put them, and how they run.

Runs inside the Serve replica (vLLM's driver) before the engine starts. It reads the bundle ->
node map of the replica's placement group and orders the ranks with `placement.rank_order`:

- On GPUs, vLLM's Ray executor starts one worker per bundle; the order goes to it as
  VLLM_RAY_BUNDLE_INDICES, so stage s runs on the node the order gives it.
- On CPU, vLLM 0.32 has no Ray executor (the CPU platform's `ray_device_key` is empty), so the
  multiprocessing executor runs the ranks. Across nodes it needs one process per node with
  the same arguments and that node's `node_rank` (vLLM's headless mode, `vllm serve --headless
  --node-rank N`): a `StageHost` actor in the first bundle of each other node is that process.
  The workers meet at `master_addr:master_port`, rank 0's TCP store on the driver's node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import ray

from r1platform.config import ModelSettings
from r1platform.serving.engine_args import Distribution, engine_args, resolve_model_path
from r1platform.serving.placement import PlacementError, rank_order, stage_nodes, world_size


def worker_pids(pid: int) -> list[int]:
    """vLLM worker processes under `pid` (they name themselves VLLM::Worker...)."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "Worker" in child.name() or "Worker" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:  # a worker that exited while we looked
            continue
    return found


@dataclass
class ReplicaStages:
    """The replica's distribution and the node of each pipeline stage."""

    dist: Distribution
    nodes: list[str]
    hosts: list[Any] = field(default_factory=list)  # StageHost handles, node rank 1..n-1
    runs: list[Any] = field(default_factory=list)  # their run() refs: alive while they are

    def where(self) -> list[dict[str, Any]]:
        hosts = ray.get([h.where.remote() for h in self.hosts], timeout=30) if self.hosts else []
        local = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "workers": worker_pids(os.getpid()),
        }
        return [local, *hosts]

    def shutdown(self) -> None:
        for host in self.hosts:
            ray.kill(host)


def current_bundle_nodes() -> tuple[Any, list[str]] | None:
    """The replica's placement group and the node of each of its bundles (None outside one)."""
    from ray.util import placement_group_table

    pg = ray.util.get_current_placement_group()
    if pg is None:
        return None
    table = placement_group_table(pg)["bundles_to_node_id"]
    return pg, [table[i] for i in range(len(pg.bundle_specs))]


def start_stages(model_id: str, ms: ModelSettings) -> ReplicaStages:
    from vllm.platforms import current_platform

    from r1platform.serving.engine_args import local_distribution

    here = ray.get_runtime_context().get_node_id()
    world = world_size(ms)
    placed = current_bundle_nodes() if world > 1 else None
    # Without a bundle per rank (one rank, or a fleet without pool units) every rank runs here.
    if placed is None or len(placed[1]) < world:
        return ReplicaStages(local_distribution(ms), [here] * ms.pipeline_parallel_size)
    pg, bundle_nodes = placed
    tp = ms.tensor_parallel_size
    order = rank_order(bundle_nodes[:world], here, tp)
    nodes = stage_nodes(order, bundle_nodes, tp)
    if current_platform.ray_device_key:
        # vLLM's Ray executor reads it in the engine process, which inherits this environment.
        os.environ["VLLM_RAY_BUNDLE_INDICES"] = ",".join(map(str, order))
        return ReplicaStages(Distribution("ray"), nodes)
    return _start_mp_nodes(model_id, ms, pg, order, bundle_nodes)


def _start_mp_nodes(
    model_id: str, ms: ModelSettings, pg: Any, order: list[int], bundle_nodes: list[str]
) -> ReplicaStages:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from r1platform.contracts.net import free_port

    tp = ms.tensor_parallel_size
    ranks_on: dict[str, list[int]] = {}
    for rank, bundle in enumerate(order):
        ranks_on.setdefault(bundle_nodes[bundle], []).append(rank)
    sizes = {len(r) for r in ranks_on.values()}
    if len(sizes) > 1:
        raise PlacementError(
            "vLLM's multiprocessing executor gives every node the same number of ranks; the "
            f"placement group put {[len(r) for r in ranks_on.values()]} on its nodes"
        )
    nnodes = len(ranks_on)
    addr = ray.util.get_node_ip_address()
    dist = Distribution("mp", nnodes, 0, addr, free_port()) if nnodes > 1 else Distribution("mp")
    hosts, runs = [], []
    for node_rank, ranks in enumerate(list(ranks_on.values())[1:], start=1):
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=pg, placement_group_bundle_index=order[ranks[0]]
        )
        remote = Distribution("mp", nnodes, node_rank, addr, dist.master_port)
        host = StageHost.options(scheduling_strategy=strategy).remote(
            model_id, ms.model_dump(), remote
        )
        hosts.append(host)
        runs.append(host.run.remote())
    return ReplicaStages(dist, stage_nodes(order, bundle_nodes, tp), hosts, runs)


@ray.remote(num_cpus=0, max_concurrency=2)
class StageHost:
    """The ranks of one non-driver node under vLLM's multiprocessing executor: vLLM's headless
    worker launcher (`vllm serve --headless`), in a Ray actor placed in that node's bundle of
    the replica's placement group. The replica owns it, so it ends with the replica."""

    def __init__(self, model_id: str, settings: dict[str, Any], dist: Distribution):
        self.model_id = model_id
        self.settings = ModelSettings.model_validate(settings)
        self.dist = dist

    def run(self) -> None:
        """Start this node's workers and block until they exit, as vLLM's headless mode does;
        they meet the driver's ranks at master_addr:master_port."""
        from vllm.v1.executor.multiproc_executor import MultiprocExecutor

        path = resolve_model_path(self.settings)
        config = engine_args(self.model_id, self.settings, path, self.dist).create_engine_config(
            headless=True
        )
        executor = MultiprocExecutor(config, monitor_workers=False)
        executor.start_worker_monitor(inline=True)

    def where(self) -> dict[str, Any]:
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "workers": worker_pids(os.getpid()),
        }

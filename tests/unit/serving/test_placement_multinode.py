"""Multi-node replicas: the placement group's bundles, the rank order the replica hands vLLM,
and what vLLM 0.32's own Ray executor code makes of it.

vLLM's functions run for real here (`get_bundles_for_indices`, `get_bundles_sorted_by_node`);
only what they ask Ray (the placement group table, the node list, the driver's node id) is
faked, because no multi-GPU cluster exists in a unit test.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import ray
import vllm.v1.executor.ray_utils as vllm_ray_utils
from r1platform.config import ModelSettings, Settings
from r1platform.serving.app import build_app, ingress_model
from r1platform.serving.engine_args import (
    Distribution,
    distribution_args,
    engine_args,
    executor_backend,
)
from r1platform.serving.placement import (
    PlacementError,
    engine_options,
    placement_strategy,
    rank_order,
    replica_bundles,
    stage_nodes,
)

R1_H100 = ModelSettings(accelerator_type="H100", tensor_parallel_size=8, pipeline_parallel_size=2)


def test_a_tp8_pp2_replica_is_one_group_of_sixteen_single_gpu_bundles_on_its_pool():
    ms = R1_H100.model_copy(update={"pool": "h100"})
    bundles = replica_bundles(ms, "gpu")
    assert len(bundles) == 16
    assert all(b["GPU"] == 1 and b["pool:h100"] == 0.001 for b in bundles)
    assert all(b["accelerator_type:H100"] == 0.001 for b in bundles)
    # The replica actor (vLLM's driver) takes bundle 0: it sits on a GPU node of the pool.
    assert bundles[0]["CPU"] == 1 and all("CPU" not in b for b in bundles[1:])
    assert placement_strategy(ms) == "PACK"
    assert placement_strategy(ms.model_copy(update={"pipeline_parallel_size": 1})) == (
        "STRICT_PACK"
    )
    sim = replica_bundles(ms, "simulated")
    assert [b["pool:h100"] for b in sim] == [1.0] * 16 and "GPU" not in sim[0]


# ---- what vLLM 0.32's Ray executors make of a placement ------------------------------------
class FakePG:
    def __init__(self, bundle_nodes: list[str]):
        self.bundle_specs = [{"GPU": 1.0} for _ in bundle_nodes]
        self.bundle_nodes = bundle_nodes


@pytest.fixture
def ray_sees(monkeypatch):
    """Make vLLM's ray_utils see `pg` placed as pg.bundle_nodes, with the driver on `driver`."""

    def install(pg: FakePG, driver: str) -> None:
        table = {"bundles_to_node_id": dict(enumerate(pg.bundle_nodes))}
        monkeypatch.setattr(vllm_ray_utils, "placement_group_table", lambda _pg: table)
        nodes = sorted(set(pg.bundle_nodes) | {driver})
        fleet = [
            {"NodeID": n, "NodeManagerAddress": f"10.0.0.{i}", "Alive": True}
            for i, n in enumerate(nodes)
        ]
        monkeypatch.setattr(ray, "nodes", lambda: fleet)
        ctx = SimpleNamespace(get_node_id=lambda: driver)
        monkeypatch.setattr(ray, "get_runtime_context", lambda: ctx)
        platform = SimpleNamespace(ray_device_key="GPU", device_name="cuda")
        monkeypatch.setattr(vllm_ray_utils, "current_platform", platform)

    return install


# Placements Ray's PACK strategy can give (bundle i on node[i]); the replica actor, and so
# vLLM's driver, is always on bundle 0's node. Node ids are chosen so that sorting by id puts
# the driver's node last, to tell "driver first" from "sorted".
PLACEMENTS = {
    "tp8xpp2, stage per node": (8, 2, ["n-b"] * 8 + ["n-a"] * 8),
    "tp8xpp2, interleaved": (8, 2, ["n-b", "n-a"] * 8),
    "tp4xpp4 on 8-GPU nodes": (4, 4, ["n-c"] * 4 + ["n-a"] * 8 + ["n-c"] * 4),
    "tp2xpp3 on three nodes": (2, 3, ["n-z", "n-y", "n-x", "n-x", "n-y", "n-z"]),
    "tp1xpp2 (the CPU test's shape)": (1, 2, ["n-b", "n-a"]),
}


@pytest.mark.parametrize(("tp", "pp", "nodes"), PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_vllm_ray_executor_runs_each_tp_group_on_one_node_and_stage0_beside_the_driver(
    ray_sees, tp, pp, nodes
):
    driver = nodes[0]
    pg = FakePG(nodes)
    ray_sees(pg, driver)
    order = rank_order(nodes, driver, tp)
    # RayExecutorV2 with VLLM_RAY_BUNDLE_INDICES=order: rank r runs in its r-th entry.
    placed = vllm_ray_utils.get_bundles_for_indices(pg, order, tp * pp)
    assert [bundle for bundle, _, _ in placed] == order
    rank_node = [node for _, node, _ in placed]
    expected_stages = stage_nodes(order, nodes, tp)
    for stage in range(pp):
        group = rank_node[stage * tp : (stage + 1) * tp]  # vLLM: rank = pp_rank * tp + tp_rank
        assert set(group) == {expected_stages[stage]}, f"stage {stage}'s TP group spans nodes"
    assert expected_stages[0] == driver
    assert Counter(rank_node) == Counter(nodes), "every bundle runs exactly one rank"
    # Without the variable, vLLM's own order (driver first, then by node id) keeps the same
    # TP groups together: the replica's order only fixes which non-driver node is which stage.
    own = vllm_ray_utils.get_bundles_sorted_by_node(pg)
    own_nodes = [node for _, node, _ in own]
    assert own_nodes[:tp] == [driver] * tp
    for stage in range(pp):
        assert len(set(own_nodes[stage * tp : (stage + 1) * tp])) == 1


@pytest.mark.parametrize(("tp", "pp", "nodes"), PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_the_legacy_ray_executor_reorders_nodes_but_keeps_tp_groups_whole(tp, pp, nodes):
    """VLLM_USE_RAY_V2_EXECUTOR_BACKEND=0: RayDistributedExecutor._init_workers_ray creates
    workers in VLLM_RAY_BUNDLE_INDICES order, then stable-sorts them by its closure
    `sort_by_driver_then_worker_ip`: (0 if ip == driver_ip else 1, ip_counts[ip], ip)."""
    ip = {n: f"10.0.0.{i}" for i, n in enumerate(sorted(set(nodes)))}
    order = rank_order(nodes, nodes[0], tp)
    worker_ips = [ip[nodes[b]] for b in order]
    counts = Counter(worker_ips)
    driver_ip = ip[nodes[0]]
    resorted = sorted(worker_ips, key=lambda w: (0 if w == driver_ip else 1, counts[w], w))
    for stage in range(pp):
        assert len(set(resorted[stage * tp : (stage + 1) * tp])) == 1
    assert resorted[0] == driver_ip


def test_without_the_order_bundle_order_alone_would_split_tp_groups(ray_sees):
    """Why the replica passes an order: PACK may interleave bundles across nodes, and vLLM
    taking bundle indices as given (VLLM_RAY_BUNDLE_INDICES=0..n-1) would then put one TP
    group on two nodes."""
    nodes = ["n-b", "n-a"] * 8
    pg = FakePG(nodes)
    ray_sees(pg, "n-b")
    naive = vllm_ray_utils.get_bundles_for_indices(pg, list(range(16)), 16)
    assert len({node for _, node, _ in naive[:8]}) == 2
    ordered = vllm_ray_utils.get_bundles_for_indices(pg, rank_order(nodes, "n-b", 8), 16)
    assert {node for _, node, _ in ordered[:8]} == {"n-b"}


def test_a_placement_that_splits_a_tp_group_is_refused_with_the_counts():
    nodes = ["n-a"] * 5 + ["n-b"] * 11  # a partly busy node: PACK filled its 5 free GPUs
    with pytest.raises(PlacementError, match=r"tensor_parallel_size=8.*5 bundle\(s\) on node n-a"):
        rank_order(nodes, "n-a", 8)


# ---- one engine-argument builder for CPU and GPU -------------------------------------------
def test_executor_is_ray_where_the_platform_names_a_ray_device_else_multiprocessing():
    assert executor_backend(1, "GPU") is None and executor_backend(1, "") is None
    assert executor_backend(16, "GPU") == "ray"
    assert executor_backend(2, "") == "mp"  # vLLM 0.32's CPU platform: ray_device_key == ""


def test_the_same_builder_makes_the_gpu_and_the_two_node_cpu_engine_args():
    cpu = ModelSettings(pipeline_parallel_size=2)
    path = "/models/tiny"
    two_nodes = Distribution("mp", nnodes=2, node_rank=1, master_addr="10.0.0.7", master_port=29600)
    a = engine_args("m", cpu, path, two_nodes)
    assert (a.pipeline_parallel_size, a.tensor_parallel_size) == (2, 1)
    assert a.distributed_executor_backend == "mp"
    assert (a.nnodes, a.node_rank, a.master_addr, a.master_port) == (2, 1, "10.0.0.7", 29600)
    # vLLM 0.32's CPU worker skips the pass that allocates a later stage's receive buffers.
    from r1platform.serving.cpu_pipeline import WORKER_CLS, PipelineCPUWorker

    assert a.worker_cls == WORKER_CLS
    assert WORKER_CLS.endswith(PipelineCPUWorker.__qualname__)
    one_node = distribution_args(cpu, Distribution("mp"))
    assert "nnodes" not in one_node and one_node["pipeline_parallel_size"] == 2
    g = engine_args(
        "r1",
        ModelSettings(tensor_parallel_size=8, pipeline_parallel_size=2),
        path,
        Distribution("ray"),
    )
    assert g.distributed_executor_backend == "ray" and g.worker_cls == "auto"
    assert (g.tensor_parallel_size, g.pipeline_parallel_size, g.nnodes) == (8, 2, 1)


@pytest.mark.parametrize("key", ["nnodes", "node_rank", "master_addr", "master_port"])
def test_engine_extra_cannot_override_where_the_stages_run(key):
    with pytest.raises(ValueError, match="placement group"):
        ModelSettings(engine_extra={key: 1})


# ---- the ingress never hosts a multi-node replica ------------------------------------------
def test_the_ingress_hosts_the_first_single_node_model_or_none():
    s = Settings(
        models={"r1": {"pipeline_parallel_size": 2}, "small": {}, "other": {}},
        serve={"placement": "simulated"},
    )
    assert ingress_model(s) == "small"
    only_staged = Settings(
        models={"r1": {"pipeline_parallel_size": 2}}, serve={"placement": "simulated"}
    )
    assert ingress_model(only_staged) is None
    app = build_app(only_staged)
    ingress = app._bound_deployment
    assert ingress._deployment_config.num_replicas == 1
    assert ingress.ray_actor_options == {"num_cpus": 0}, "no GPU, no placement group"
    assert ingress._replica_config.placement_group_bundles is None
    assert set(ingress.init_args[0]) == {"r1"}, "the staged model is behind a handle"


# ---- a new engine rolls with surge -------------------------------------------------------
def test_every_deployment_starts_replacements_before_the_old_replicas_drain():
    opts = engine_options("m", ModelSettings(pool="l4"), "simulated")
    assert opts["max_surge_percent"] == 100
    only_staged = Settings(
        models={"r1": {"pipeline_parallel_size": 2}}, serve={"placement": "simulated"}
    )
    ingress = build_app(only_staged)._bound_deployment
    assert ingress._deployment_config.max_surge_percent == 100

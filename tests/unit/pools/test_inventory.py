"""Discovery from Ray's node table and from Kubernetes V1Node objects."""

from __future__ import annotations

import json

from kubernetes.client import ApiClient
from r1platform.pools.fleet import Pool, node_labels, node_resources
from r1platform.pools.inventory import from_k8s, from_ray, merge


def _virtual(pool: Pool, alive: bool = True) -> dict:
    return {
        "NodeID": "x",
        "Alive": alive,
        "Resources": {"CPU": 1.0, "memory": 1e9, **node_resources(pool)},
        "Labels": node_labels(pool),
    }


def test_from_ray_understands_virtual_nodes_and_real_gpu_nodes():
    h100 = Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=2)
    l4 = Pool(name="l4", gpu="L4", nodes=1, gpus_per_node=1)
    nodes = [
        {"Alive": True, "Resources": {"CPU": 2.0}, "Labels": {}},  # head, no GPUs
        _virtual(h100),
        _virtual(h100),
        _virtual(h100, alive=False),  # dead nodes do not count
        _virtual(l4),
        # A real node as Ray reports it: GPU count plus accelerator_type marker valued 1.
        {"Alive": True, "Resources": {"CPU": 96.0, "GPU": 8.0, "accelerator_type:A100-80G": 1.0}},
        {
            "Alive": True,
            "Resources": {"CPU": 96.0, "GPU": 8.0},
            "Labels": {"ray.io/accelerator-type": "A100-80G"},
        },
    ]
    pools = {p.name: p for p in from_ray(nodes)}
    assert set(pools) == {"h100", "l4", "a100-80g"}
    assert (pools["h100"].nodes, pools["h100"].gpus_per_node, pools["h100"].gpu) == (2, 2, "H100")
    assert pools["l4"].gpus_capacity == 1
    assert (pools["a100-80g"].nodes, pools["a100-80g"].gpus_per_node) == (2, 8)


def _v1node(name, labels, gpus, unschedulable=False, taints=None):
    obj = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": unschedulable, "taints": taints or []},
        "status": {
            "capacity": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": str(gpus)},
            "allocatable": {"cpu": "95", "memory": "1000Gi", "nvidia.com/gpu": str(gpus)},
        },
    }
    # The client's own deserialiser, exactly as for a GET /api/v1/nodes/{name} response body.
    return ApiClient().deserialize(json.dumps(obj), "V1Node", "application/json")


def test_from_k8s_on_deserialised_v1nodes():
    gfd = {  # labels as NVIDIA GPU feature discovery writes them on an H100 node
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.memory": "81559",
        "karpenter.sh/nodepool": "serve-h100",
    }
    a100 = {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "nvidia.com/gpu.count": "8",
        "cloud.google.com/gke-nodepool": "train-a100",
    }
    taint = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    nodes = [
        _v1node("h1", gfd, 8, taints=taint),
        _v1node("h2", gfd, 8, taints=taint),
        _v1node("h3", gfd, 8, unschedulable=True),  # cordoned: not plannable
        _v1node("a1", a100, 8),
        _v1node("cpu", {"kubernetes.io/os": "linux"}, 0),
    ]
    pools = {p.name: p for p in from_k8s(nodes)}
    assert set(pools) == {"serve-h100", "train-a100"}
    assert pools["serve-h100"].gpu == "H100" and pools["serve-h100"].nodes == 2
    assert pools["serve-h100"].gpus_capacity == 16
    assert pools["serve-h100"].taints == ["nvidia.com/gpu=present:NoSchedule"]
    assert pools["train-a100"].gpu == "A100-40G"


def test_merge_keeps_configured_range_and_takes_live_count():
    cfg = [
        Pool(name="h100", gpu="H100", nodes=1, gpus_per_node=8, max_nodes=4, cost_per_gpu_hour=2.0)
    ]
    live = [
        Pool(name="h100", gpu="H100", nodes=3, gpus_per_node=8),
        Pool(name="l4", gpu="L4", nodes=1, gpus_per_node=1),
    ]
    merged = merge(cfg, live)
    assert merged[0].nodes == 3 and merged[0].max_nodes == 4 and merged[0].cost_per_gpu_hour == 2
    assert merged[1].name == "l4"

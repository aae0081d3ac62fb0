"""Pool discovery: from a Ray cluster's node table and from Kubernetes nodes.

Both produce the same `Pool` model as the pools YAML. Discovery sees what exists now, so
nodes = min_nodes = max_nodes = the live count unless a pools YAML widens the range
(`merge` keeps the YAML's autoscaling range and cost and takes the live node count).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from r1platform.contracts.resources import (
    ACCELERATOR_LABEL,
    POOL_LABEL,
    accelerator_key,
    accelerators_in,
    pool_key,
    pools_in,
)

from .catalog import Catalog, load_catalog
from .fleet import Pool

# Node-group labels set by the managed Kubernetes offerings and KubeRay; the first present names
# the pool, so one GPU type split over two node groups stays two pools.
K8S_POOL_LABELS = (
    POOL_LABEL,
    "ray.io/group",
    "karpenter.sh/nodepool",
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
)
GPU_PRODUCT = "nvidia.com/gpu.product"
GPU_COUNT = "nvidia.com/gpu.count"
GPU_MEMORY = "nvidia.com/gpu.memory"  # MiB, set by GPU feature discovery
GPU_RESOURCE = "nvidia.com/gpu"


def _pool_name(raw: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw.lower()).strip("-.")


def _group(rows: Iterable[tuple[str, str, int, dict[str, str], list[str]]]) -> list[Pool]:
    """rows: (pool, gpu, gpus_on_node, labels, taints) per node -> one Pool per (pool, gpu)."""
    groups: dict[tuple[str, str], list[tuple[int, dict[str, str], list[str]]]] = defaultdict(list)
    for pool, gpu, gpus, labels, taints in rows:
        groups[(pool, gpu)].append((gpus, labels, taints))
    names = defaultdict(int)
    for pool, _gpu in groups:
        names[pool] += 1
    pools = []
    for (pool, gpu), members in sorted(groups.items()):
        # A pool label reused across GPU types would merge unlike nodes; split it by type.
        name = pool if names[pool] == 1 else f"{pool}-{_pool_name(gpu)}"
        n = len(members)
        pools.append(
            Pool(
                name=name,
                gpu=gpu,
                nodes=n,
                # Nodes of a group are identical by construction; the max guards a node that
                # reports fewer healthy GPUs from shrinking the whole pool.
                gpus_per_node=max(m[0] for m in members),
                min_nodes=0,
                max_nodes=n,
                labels=_common_labels([m[1] for m in members]),
                taints=sorted({t for m in members for t in m[2]}),
            )
        )
    return pools


def _common_labels(labels: Sequence[Mapping[str, str]]) -> dict[str, str]:
    keep = (POOL_LABEL, ACCELERATOR_LABEL, *K8S_POOL_LABELS, GPU_PRODUCT)
    first = labels[0]
    return {
        k: str(first[k])
        for k in keep
        if k in first and all(lbl.get(k) == first[k] for lbl in labels)
    }


def from_ray(nodes: Sequence[Mapping[str, Any]], catalog: Catalog | None = None) -> list[Pool]:
    """Pools from `ray.nodes()`-shaped dicts.

    Understands the r1p virtual convention (resources `pool:<P>` and `accelerator_type:<X>` =
    GPUs per node, no "GPU") and real GPU nodes ("GPU": n plus Ray's `accelerator_type:<X>`: 1
    marker, or the `ray.io/accelerator-type` label). Dead and GPU-less nodes are skipped.
    """
    catalog = catalog or load_catalog()
    rows = []
    for node in nodes:
        if not node.get("Alive", node.get("alive", True)):
            continue
        res: Mapping[str, float] = node.get("Resources") or node.get("resources") or {}
        labels: Mapping[str, str] = node.get("Labels") or node.get("labels") or {}
        pool_res = pools_in(res)
        acc_res = accelerators_in(res)
        acc = labels.get(ACCELERATOR_LABEL) or (acc_res[0] if acc_res else None)
        if acc is None:
            continue
        gpu = catalog.try_resolve(acc)
        if gpu is None:
            continue
        pool = labels.get(POOL_LABEL) or (pool_res[0] if pool_res else None)
        if "GPU" in res:
            gpus = int(res["GPU"])
        elif pool is not None and pool_key(pool) in res:
            gpus = int(res[pool_key(pool)])
        else:
            gpus = int(res.get(accelerator_key(acc), 0))
        if gpus <= 0:
            continue
        pool = pool or labels.get("ray.io/node-group") or _pool_name(gpu)
        rows.append((pool, gpu, gpus, dict(labels), []))
    return _group(rows)


def from_ray_live(catalog: Catalog | None = None) -> list[Pool]:
    """Pools of the Ray cluster this process is connected to (ray.init must have run)."""
    import ray

    return from_ray(ray.nodes(), catalog)


def from_k8s(nodes: Sequence[Any], catalog: Catalog | None = None) -> list[Pool]:
    """Pools from `kubernetes.client.V1Node` objects (GPU feature discovery labels).

    GPU count: allocatable nvidia.com/gpu (what pods can actually get), else the
    nvidia.com/gpu.count label. Unschedulable (cordoned) nodes are skipped.
    """
    catalog = catalog or load_catalog()
    rows = []
    for node in nodes:
        meta, spec, status = node.metadata, node.spec, node.status
        labels = dict(meta.labels or {})
        product = labels.get(GPU_PRODUCT)
        if not product or (spec is not None and spec.unschedulable):
            continue
        mem_mib = labels.get(GPU_MEMORY)
        mem_gb = float(mem_mib) * 1.048576e-3 if mem_mib and mem_mib.isdigit() else None
        gpu = catalog.try_resolve(product, mem_gb)
        if gpu is None:
            continue
        alloc = (status.allocatable or {}) if status is not None else {}
        count = alloc.get(GPU_RESOURCE) or labels.get(GPU_COUNT) or "0"
        gpus = int(str(count))
        if gpus <= 0:
            continue
        pool = next((labels[k] for k in K8S_POOL_LABELS if labels.get(k)), _pool_name(gpu))
        taints = [
            f"{t.key}={t.value or ''}:{t.effect}" for t in ((spec.taints if spec else None) or [])
        ]
        rows.append((_pool_name(pool), gpu, gpus, labels, taints))
    return _group(rows)


def from_k8s_live(label_selector: str = GPU_PRODUCT, catalog: Catalog | None = None) -> list[Pool]:
    """Pools of the cluster in the current kubeconfig (or in-cluster service account)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    items = client.CoreV1Api().list_node(label_selector=label_selector).items
    return from_k8s(items, catalog)


def merge(configured: Sequence[Pool], discovered: Sequence[Pool]) -> list[Pool]:
    """Configured pools with live node counts; discovered pools nobody configured are added.

    The YAML owns the autoscaling range and price (discovery cannot see them); discovery owns
    how many nodes exist now.
    """
    live = {p.name: p for p in discovered}
    out = []
    for p in configured:
        d = live.pop(p.name, None)
        if d is None:
            out.append(p)
            continue
        nodes = d.nodes
        max_nodes = max(p.max_nodes or 0, nodes)
        out.append(p.model_copy(update={"nodes": nodes, "max_nodes": max_nodes}))
    return out + sorted(live.values(), key=lambda p: p.name)

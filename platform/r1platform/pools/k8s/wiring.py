"""In-cluster wiring of `r1p control --kubernetes`: API client, namespace, Ray token, pool
discovery merged over the pools file, and the actuators the controller runs with."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1platform.pools.actuators import RayAutoscalerCapacity

from .serve import RayServiceServeActuator

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from r1platform.pools.fleet import Fleet

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
GCS_PORT = 6379  # KubeRay's head service exposes the GCS here


class GcsAutoscalerCapacity(RayAutoscalerCapacity):
    """RayAutoscalerCapacity for a controller outside the Ray cluster: the same bundles and
    label selectors, sent straight to the GCS with autoscaler v2's SDK. A Ray Client (ray://)
    connection has no GCS client, which `request_resources` needs under autoscaler v2, and a
    driver that joins over the GCS address needs a raylet on its own host."""

    def __init__(self, gcs_address: str, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.gcs_address = gcs_address

    def request(self, gpus_by_pool: Mapping[str, int]) -> None:
        from ray.autoscaler.v2.sdk import request_cluster_resources

        bundles, selectors = self.bundles(gpus_by_pool)
        request_cluster_resources(
            self.gcs_address,
            [
                {"resources": b, "label_selector": s}
                for b, s in zip(bundles, selectors, strict=True)
            ],
        )


def gcs_address_for(address: str) -> str | None:
    """The GCS address of the cluster a Ray Client address points at (`ray://head:10001` ->
    `head:6379`); None for any other address (the driver then has Ray's own GCS client)."""
    if not address.startswith("ray://"):
        return None
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return f"{host}:{GCS_PORT}" if host else None


# ---------------------------------------------------------------- discovery and wiring
def k8s_live_fleet(
    configured: Fleet,
    core: Any,  # kubernetes.client.CoreV1Api
    ray_nodes: Callable[[], list[Mapping[str, Any]]] | None = None,
) -> Callable[[], Fleet]:
    """The pools file (the chart's pools) with live node counts, re-read every cycle: first the
    Kubernetes nodes GPU feature discovery labelled (`inventory.from_k8s`, the same as
    `from_k8s_live` but on this client), then the Ray cluster's own node table on top (which
    nodes Ray really has joined). The file owns prices and autoscaling ranges; discovery owns
    how many nodes exist. Pools the file does not name are not managed, and a discovery error
    keeps the view from before that source for this cycle."""
    from r1platform.pools.inventory import GPU_PRODUCT, from_k8s, from_ray, merge

    names = {p.name for p in configured.pools}

    def read() -> Fleet:
        pools = list(configured.pools)
        sources: list[Callable[[], list]] = [
            lambda: from_k8s(core.list_node(label_selector=GPU_PRODUCT).items, configured.catalog)
        ]
        if ray_nodes is not None:
            sources.append(lambda: from_ray(ray_nodes(), configured.catalog))
        for source in sources:
            try:
                discovered = source()
            except Exception:  # an API hiccup must not stop the loop
                continue
            pools = [p for p in merge(pools, discovered) if p.name in names]
        return configured.model_copy(update={"pools": pools})

    return read


def load_api_client() -> ApiClient:
    """In a pod: the service account; elsewhere: the current kubeconfig context."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def default_namespace(sa_file: Path = SA_NAMESPACE_FILE) -> str:
    """The pod's own namespace in a cluster, else the kubeconfig context's, else default."""
    if sa_file.exists():
        return sa_file.read_text().strip()
    try:
        from kubernetes import config

        _, ctx = config.list_kube_config_contexts()
        return (ctx.get("context") or {}).get("namespace") or "default"
    except Exception:
        return "default"


def ray_auth_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Environment changes that make `ray.init` present the cluster's token: Ray 2.60 reads
    RAY_AUTH_TOKEN (or a RAY_AUTH_TOKEN_PATH file) but sends it only in RAY_AUTH_MODE=token,
    which a Ray Client (ray://) connection does not switch on by itself."""
    has_token = environ.get("RAY_AUTH_TOKEN") or environ.get("RAY_AUTH_TOKEN_PATH")
    return {"RAY_AUTH_MODE": "token"} if has_token and "RAY_AUTH_MODE" not in environ else {}


def live_kubernetes(
    configured: Fleet,
    *,
    address: str,
    namespace: str | None,
    rayservice: str,
    metrics_url: str | None,
    rate_window_s: float,
    record_path: str | None,
    dry_run: bool = False,
):
    """(fleet reader, (load, serve, capacity, training)) for the controller in a cluster."""
    from kubernetes import client

    from r1platform import ray_auth, ray_join
    from r1platform.pools import actuators

    ray_auth.apply(ray_auth_env(os.environ))  # refreshes Ray's cached config if already loaded
    import ray

    ray_join.init_tolerant(
        address, namespace=actuators.NAMESPACE, ignore_reinit_error=True, logging_level="ERROR"
    )
    api = load_api_client()
    fleet = k8s_live_fleet(configured, client.CoreV1Api(api), ray.nodes)
    serve = RayServiceServeActuator(
        client.CustomObjectsApi(api),
        namespace or default_namespace(),
        rayservice,
        pools=lambda: [(p.name, p.gpu) for p in configured.pools],
        record_path=record_path,
        restore=not dry_run,
    )
    virtual = not any("GPU" in (n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive"))
    pools = configured.pools
    shape = ({p.name: p.gpus_per_node for p in pools}, {p.name: p.gpu for p in pools})
    gcs = gcs_address_for(address)
    cap = (
        GcsAutoscalerCapacity(gcs, *shape, virtual=virtual)
        if gcs
        else RayAutoscalerCapacity(*shape, virtual=virtual)
    )
    load = actuators.MetricsLoadSource(metrics_url, window_s=rate_window_s)
    return fleet, (load, serve, cap, actuators.RayActorTraining())

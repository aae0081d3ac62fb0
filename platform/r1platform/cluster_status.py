"""`r1p status`: what the local cluster runs, read live from Ray (nodes, replicas, jobs)."""

from __future__ import annotations

from r1platform.contracts import deployment_name
from r1platform.contracts.resources import POOL_LABEL, pool_key
from r1platform.localcluster import use_cluster_auth


def status_report(address: str, dashboard_url: str) -> dict:
    """Nodes with their pools, Serve deployments with the pool of each replica, and jobs."""
    import ray
    from ray import serve
    from ray.util.state import list_actors

    use_cluster_auth()
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        nodes = {}
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            labels = n.get("Labels") or {}
            res = n.get("Resources") or {}
            pool = labels.get(POOL_LABEL)
            gpu = labels.get("r1p.accelerator-type") or labels.get("ray.io/accelerator-type")
            gpus = res.get(pool_key(pool), 0) if pool else res.get("GPU", 0)
            nodes[n["NodeID"]] = {
                "node_id": n["NodeID"][:12],
                "role": labels.get("r1p.role", "worker"),
                "pool": pool or "-",
                "gpu": gpu or "-",
                "gpus": int(gpus),
                "simulated": labels.get("r1p.simulated") == "true",
                "cpus": res.get("CPU", 0),
            }
        replicas = []
        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
            if not a.class_name.startswith("ServeReplica:"):
                continue
            _, app, deployment = a.class_name.split(":", 2)
            node = nodes.get(a.node_id, {})
            # Only engine replicas hold pool GPUs; the ingress just happens to sit on a node.
            on_gpu = deployment_name.is_engine(deployment)
            replicas.append({
                "app": app, "deployment": deployment, "actor": a.actor_id[:12],
                "pool": node.get("pool", "?") if on_gpu else "-",
                "gpu": node.get("gpu", "?") if on_gpu else "(cpu only)",
                "node": node.get("node_id", "?"),
            })  # fmt: skip
        apps = {
            name: {
                "status": str(app.status.value if hasattr(app.status, "value") else app.status),
                "deployments": {
                    d: str(ds.status.value if hasattr(ds.status, "value") else ds.status)
                    for d, ds in app.deployments.items()
                },
            }
            for name, app in serve.status().applications.items()
        }
        jobs = []
        try:
            from ray.job_submission import JobSubmissionClient

            for j in JobSubmissionClient(dashboard_url).list_jobs():
                if str(getattr(j.type, "value", j.type)).upper() != "SUBMISSION":
                    continue  # drivers such as `r1p status` itself are not jobs
                jobs.append(
                    {
                        "id": j.submission_id or j.job_id,
                        "status": str(j.status.value),
                        "entrypoint": (j.entrypoint or "")[:60],
                    }
                )
        except Exception as err:  # the dashboard may be starting; status must still print
            jobs.append(
                {"id": "?", "status": f"unavailable: {type(err).__name__}", "entrypoint": ""}
            )
        from r1platform.pools.controller_actor import controller_health

        return {
            "nodes": list(nodes.values()),
            "apps": apps,
            "replicas": replicas,
            "jobs": jobs,
            "controller": controller_health(),  # the `r1p control --actor` loop, if any
        }
    finally:
        ray.shutdown()

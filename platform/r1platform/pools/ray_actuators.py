"""Live implementations of the controller's Protocols on Ray: Serve replica targets through
the dashboard's REST API, autoscaler capacity, and GRPO jobs through their control actors.

Conventions (see r1platform.contracts): a logical deployment D placed on pool P is the Serve
deployment `D@P`; a training job J is steered through its named actor in the platform's
namespace, which lives as long as the job (a missing actor means the job is not running).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from r1platform import ray_join
from r1platform.contracts import deployment_name
from r1platform.contracts.actors import NAMESPACE, training_actor_name
from r1platform.contracts.resources import ACCELERATOR_LABEL, POOL_LABEL, pool_key

from .fleet import Fleet
from .metrics_load import MetricsLoadSource
from .serve_config import carry_running

PoolPairs = Callable[[], Iterable[tuple[str, str]]]  # -> (pool name, GPU type) of the fleet


class RayServeActuator:
    """Replica targets through Serve's declarative REST API (what KubeRay's RayService does):
    read the applied config, set num_replicas of `D@P`, PUT it back.

    With `pools`, a name whose target is a GPU type (a model configured with only
    accelerator_type) is managed as the one pool of that type; without it, targets are taken
    to be pool names."""

    def __init__(
        self, dashboard: str = "http://127.0.0.1:8265", pools: PoolPairs | None = None
    ) -> None:
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        self.client = ServeSubmissionClient(dashboard)
        self.pools = pools
        self._names: dict[tuple[str, str], str] = {}  # (deployment, pool) -> Serve name

    def _config(self, details: dict[str, Any]) -> dict[str, Any]:
        apps = []
        for app in (details.get("applications") or {}).values():
            cfg = app.get("deployed_app_config")
            if cfg:
                apps.append(cfg)
        return {
            **{k: v for k, v in details.items() if k in ("http_options", "proxy_location")},
            "applications": apps,
        }

    def _resolve(self, name: str) -> tuple[str, str] | None:
        model, target = deployment_name.parse(name)
        if target is None:
            return None
        if self.pools is None:
            return model, target
        pool = deployment_name.resolve_pool(target, self.pools())
        return (model, pool) if pool else None

    def current_replicas(self) -> dict[tuple[str, str], int]:
        """Live targets of every `D@P` deployment (whether the count came from code or config)."""
        out = {}
        names = {}
        for app in (self.client.get_serve_details().get("applications") or {}).values():
            for name, dep in (app.get("deployments") or {}).items():
                key = self._resolve(name)
                target = dep.get("target_num_replicas")
                if key is not None and isinstance(target, int):
                    out[key] = target
                    names[key] = name
        self._names = names
        return out

    def layouts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """TP x PP of every `D@P` deployment: one placement-group bundle per tensor-parallel
        rank (serving.placement); a restarted controller pins these instead of re-planning
        the layout of replicas that already run."""
        out = {}
        for app in (self.client.get_serve_details().get("applications") or {}).values():
            for name, dep in (app.get("deployments") or {}).items():
                key = self._resolve(name)
                bundles = (dep.get("deployment_config") or {}).get("placement_group_bundles")
                if key is not None and bundles:
                    out[key] = (len(bundles), 1)
        return out

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
        """Override num_replicas of `D@P` in its app's config (adding the override if the count
        came from code) and PUT the whole config back, as a RayService update would."""
        name = self._names.get((deployment, pool)) or deployment_name.build(deployment, pool)
        details = self.client.get_serve_details()
        cfg = self._config(details)
        for app_name, app in (details.get("applications") or {}).items():
            if name not in (app.get("deployments") or {}):
                continue
            app_cfg = next(a for a in cfg["applications"] if a.get("name") == app_name)
            deps = app_cfg.setdefault("deployments", [])
            entry = next((d for d in deps if d.get("name") == name), None)
            if entry is None:
                entry = {"name": name}
                deps.append(entry)
            entry["num_replicas"] = int(replicas)
            entry.pop("autoscaling_config", None)  # the controller is the autoscaler
            self.client.deploy_applications(cfg)
            return
        raise LookupError(f"Serve deployment {name!r} not found in any application")

    def deploy(self, config: dict[str, Any]) -> None:
        """Apply a Serve config from `serve_config.serve_config(plan)`: its applications replace
        the running ones of the same name (others and the HTTP options stay), in one PUT, so
        Serve rolls every changed deployment (new TP, PP or profile) as one update."""
        cfg = self._config(self.client.get_serve_details())
        names = {a["name"] for a in config["applications"]}
        cfg["applications"] = [
            a for a in cfg["applications"] if a.get("name") not in names
        ] + carry_running(list(config["applications"]), cfg["applications"])
        self.client.deploy_applications(cfg)


class RayAutoscalerCapacity:
    """`ray.autoscaler.sdk.request_resources` with one bundle per node each pool should have;
    a label selector pins the bundle to the pool's worker group (KubeRay scales that group)."""

    def __init__(
        self, gpus_per_node: Mapping[str, int], gpu_of: Mapping[str, str], virtual: bool = True
    ) -> None:
        self.gpn, self.gpu_of, self.virtual = dict(gpus_per_node), dict(gpu_of), virtual

    def bundles(self, gpus_by_pool: Mapping[str, int]) -> tuple[list[dict], list[dict]]:
        bundles, selectors = [], []
        for pool, gpus in sorted(gpus_by_pool.items()):
            n = self.gpn.get(pool, 1)
            for _ in range(-(-gpus // n)):
                if self.virtual:
                    bundles.append({pool_key(pool): float(n)})
                    selectors.append({POOL_LABEL: pool})
                else:
                    bundles.append({"GPU": float(n)})
                    selectors.append({ACCELERATOR_LABEL: self.gpu_of[pool], POOL_LABEL: pool})
        return bundles, selectors

    def request(self, gpus_by_pool: Mapping[str, int]) -> None:
        from ray.autoscaler.sdk import request_resources

        bundles, selectors = self.bundles(gpus_by_pool)
        request_resources(bundles=bundles, bundle_label_selectors=selectors)


class RayActorTraining:
    """TrainingActuator over each job's named control actor. Every call waits for the actor's
    answer (up to `timeout_s`): a request the actor never received raises, so the controller
    records it as failed instead of booking GPUs that will not move."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s

    def _actor(self, job: str):
        import ray

        try:
            return ray.get_actor(training_actor_name(job), namespace=NAMESPACE)
        except ValueError:
            return None

    def current_gpus(self, job: str) -> int | None:
        """None when the job has no control actor (not submitted yet, or finished)."""
        import ray

        a = self._actor(job)
        return int(ray.get(a.current_gpus.remote(), timeout=self.timeout_s)) if a else None

    def job_state(self, job: str):
        """GPUs, pool, state and the request not yet taken (a restarted controller's
        recovery reads this); None when the job is not running."""
        import ray

        from .recovery import JobState

        a = self._actor(job)
        if a is None:
            return None
        return JobState.from_status(ray.get(a.status.remote(), timeout=self.timeout_s))

    def _require(self, job: str):
        a = self._actor(job)
        if a is None:
            name = training_actor_name(job)
            raise LookupError(f"training job {job!r} is not running (no actor {name})")
        return a

    def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
        import ray

        ray.get(self._require(job).checkpoint_and_shrink.remote(int(gpus)), timeout=self.timeout_s)

    def grow(self, job: str, gpus: int, pool: str) -> None:
        import ray

        ray.get(self._require(job).grow.remote(int(gpus), pool), timeout=self.timeout_s)


def live_fleet(configured: Fleet) -> Callable[[], Fleet]:
    """The pools YAML merged with what Ray reports now, re-read every cycle (inventory.merge):
    the YAML owns prices and autoscaling ranges, the cluster owns how many nodes exist, so a
    pool that holds more nodes than its configured max is planned at its real size. Pools the
    YAML does not name are not managed. A discovery error keeps the configured view for that
    cycle."""
    from .inventory import from_ray_live, merge

    def read() -> Fleet:
        try:
            discovered = from_ray_live(configured.catalog)
        except Exception:  # a GCS hiccup must not stop the loop
            return configured
        configured_names = {p.name for p in configured.pools}
        pools = [p for p in merge(configured.pools, discovered) if p.name in configured_names]
        return configured.model_copy(update={"pools": pools})

    return read


def live(
    address: str,
    metrics_url: str | None,
    dashboard: str = "http://127.0.0.1:8265",
    rate_window_s: float = 30.0,
    configured: Fleet | None = None,
):
    """(load, serve, capacity, training) on the Ray cluster at `address`."""
    import ray

    from .inventory import from_ray_live

    ray_join.init_tolerant(
        address, namespace=NAMESPACE, ignore_reinit_error=True, logging_level="ERROR"
    )
    pools = from_ray_live()
    virtual = not any("GPU" in (n.get("Resources") or {}) for n in ray.nodes())
    cap = RayAutoscalerCapacity(
        {p.name: p.gpus_per_node for p in pools}, {p.name: p.gpu for p in pools}, virtual=virtual
    )
    known = list(configured.pools) if configured is not None else pools
    serve = RayServeActuator(dashboard, pools=lambda: [(p.name, p.gpu) for p in known])
    load = MetricsLoadSource(metrics_url, window_s=rate_window_s)
    return load, serve, cap, RayActorTraining()

"""Live implementations of the controller's Protocols (Ray Serve, Ray autoscaler, GRPO jobs),
plus the offline set `r1p control --dry-run` uses.

Conventions other parts implement against:
- A logical deployment D placed on pool P is the Serve deployment named `D@P`
  (`serve_name`/`parse_serve_name`); its replicas carry resource `pool:P` (virtual nodes) or
  `accelerator_type:X` (real GPUs).
- A training job J is controlled through a named Ray actor `r1p-train-J` in namespace
  `r1platform` with methods current_gpus() -> int, checkpoint_and_shrink(gpus) and
  grow(gpus, pool). The GRPO trainer implements that side; the actor lives as long as the job,
  so a missing actor means the job is not running.
"""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .controller import DeploymentLoad
from .fleet import ACCELERATOR_LABEL, POOL_LABEL, Fleet
from .workloads import Workloads

SEP = "@"
NAMESPACE = "r1platform"
ACTOR_NAME = "r1p-pools-controller"


def serve_name(deployment: str, pool: str) -> str:
    return f"{deployment}{SEP}{pool}"


def parse_serve_name(name: str) -> tuple[str, str | None]:
    d, sep, p = name.rpartition(SEP)
    return (d, p) if sep else (name, None)


# ---------------------------------------------------------------- load from Serve metrics
_COLUMNS = {
    "serve_deployment_request_counter": 0,
    "serve_replica_processing_queries": 1,
    "serve_deployment_queued_queries": 2,
    "r1p_requests": 0,
    "r1p_requests_in_flight": 1,
}

Series = tuple[str, int, tuple[tuple[str, str], ...]]  # (deployment, column, all labels)


def _is_inference_route(route: str | None) -> bool:
    return route is None or (route.startswith("/v1/") and route != "/v1/models")


def parse_serve_series(text: str) -> dict[Series, float]:
    """Prometheus text -> one value per series that describes Serve load, keyed by logical
    deployment, column (0 requests_total, 1 ongoing, 2 queued) and the series' own labels.

    Ray Serve exports serve_deployment_request_counter (per replica), serve_replica_processing_
    queries (in flight per replica) and serve_deployment_queued_queries (waiting in routers);
    Ray prefixes them with "ray_". Per-pool Serve deployments `D@P` count for D.
    The OpenAI ingress's own /metrics (r1p_requests_total, r1p_requests_in_flight, labelled by
    model = logical deployment) is understood too (exact, but one replica's view).
    """
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Series, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name = s.name.removeprefix("ray_").removesuffix("_total")
            label = "model" if name.startswith("r1p_") else "deployment"
            if name not in _COLUMNS or label not in s.labels or s.labels[label] == "unknown":
                continue
            if not _is_inference_route(s.labels.get("route")):
                continue  # health probes and scrapes are not load
            d, _ = parse_serve_name(s.labels[label])
            key = (d, _COLUMNS[name], tuple(sorted({**s.labels, "__name__": name}.items())))
            out[key] = out.get(key, 0.0) + float(s.value)
    return out


def parse_serve_metrics(text: str) -> dict[str, tuple[float, float, float]]:
    """Prometheus text -> logical deployment -> (requests_total, ongoing, queued)."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for (d, col, _), v in parse_serve_series(text).items():
        acc[d][col] += v
    return {d: (v[0], v[1], v[2]) for d, v in acc.items()}


def counter_increase(prev: Mapping[Series, float], cur: Mapping[Series, float]) -> dict[str, float]:
    """Requests per logical deployment between two scrapes, per series as Prometheus' rate()
    does: a counter that went down was reset and counts from 0, a series that disappeared
    (replica stopped) adds nothing, and a new series counts only from its first sample on.
    Ray exports a replica's counter only after its first requests, so a new replica's first
    sample already holds ~10 s of them: counting it would read as a spike that over-scales."""
    out: dict[str, float] = defaultdict(float)
    for key, v in cur.items():
        if key[1] != 0 or key not in prev:
            continue
        before = prev[key]
        out[key[0]] += v - before if v >= before else v
    return dict(out)


class MetricsLoadSource:
    """LoadSource over Prometheus text endpoints: an explicit URL, or every Ray node's
    metrics-export port (Serve's own per-replica metrics: with several replicas of the ingress
    that is the only complete view). The request rate is the counters' increase over the last
    `window_s` (Prometheus `rate()` semantics), so the export interval of Ray's metrics agent
    does not turn a steady load into spikes."""

    def __init__(self, url: str | None = None, timeout_s: float = 2.0, window_s: float = 30.0):
        self.url, self.timeout_s, self.window_s = url, timeout_s, window_s
        self._last: tuple[float, dict[Series, float]] | None = None
        self._steps: deque[tuple[float, float, dict[str, float]]] = deque()  # (t, dt, increase)

    def _urls(self) -> list[str]:
        if self.url:
            return [self.url]
        import ray

        return [
            f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in ray.nodes()
            if n.get("Alive") and n.get("MetricsExportPort")
        ]

    def scrape(self) -> dict[Series, float]:
        merged: dict[Series, float] = defaultdict(float)
        for url in self._urls():
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                    text = r.read().decode()
            except OSError:
                continue  # a node that went away: its replicas are gone too
            for key, v in parse_serve_series(text).items():
                merged[key] += v
        return dict(merged)

    def read(self) -> dict[str, DeploymentLoad]:
        return self.observe(time.monotonic(), self.scrape())

    def observe(self, now: float, series: dict[Series, float]) -> dict[str, DeploymentLoad]:
        """Fold one scrape taken at `now` into the window and return the load it implies."""
        if self._last is not None and now > self._last[0]:
            self._steps.append((now, now - self._last[0], counter_increase(self._last[1], series)))
        self._last = (now, series)
        while self._steps and self._steps[0][0] - self._steps[0][1] < now - self.window_s - 1e-9:
            if len(self._steps) == 1:
                break  # a read interval longer than the window: keep the one we have
            self._steps.popleft()
        span = sum(dt for _, dt, _ in self._steps)
        total: dict[str, float] = defaultdict(float)
        for _, _, inc in self._steps:
            for d, v in inc.items():
                total[d] += v
        gauges: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for (d, col, _), v in series.items():
            if col:
                gauges[d][col - 1] += v
            else:
                gauges.setdefault(d, [0.0, 0.0])
        return {
            d: DeploymentLoad(
                ongoing=g[0], queued=g[1], request_rate=total.get(d, 0.0) / span if span else 0.0
            )
            for d, g in gauges.items()
        }


# ---------------------------------------------------------------- Serve replicas
class RayServeActuator:
    """Replica targets through Serve's declarative REST API (what KubeRay's RayService does):
    read the applied config, set num_replicas of `D@P`, PUT it back."""

    def __init__(self, dashboard: str = "http://127.0.0.1:8265") -> None:
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        self.client = ServeSubmissionClient(dashboard)

    def _config(self) -> dict[str, Any]:
        details = self.client.get_serve_details()
        apps = []
        for app in (details.get("applications") or {}).values():
            cfg = app.get("deployed_app_config")
            if cfg:
                apps.append(cfg)
        return {
            **{k: v for k, v in details.items() if k in ("http_options", "proxy_location")},
            "applications": apps,
        }

    def current_replicas(self) -> dict[tuple[str, str], int]:
        """Live targets of every `D@P` deployment (whether the count came from code or config)."""
        out = {}
        for app in (self.client.get_serve_details().get("applications") or {}).values():
            for name, dep in (app.get("deployments") or {}).items():
                d, p = parse_serve_name(name)
                target = dep.get("target_num_replicas")
                if p is not None and isinstance(target, int):
                    out[(d, p)] = target
        return out

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
        """Override num_replicas of `D@P` in its app's config (adding the override if the count
        came from code) and PUT the whole config back, as a RayService update would."""
        name = serve_name(deployment, pool)
        details = self.client.get_serve_details()
        cfg = self._config()
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


# ---------------------------------------------------------------- autoscaler capacity
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
                    bundles.append({f"pool:{pool}": float(n)})
                    selectors.append({POOL_LABEL: pool})
                else:
                    bundles.append({"GPU": float(n)})
                    selectors.append({ACCELERATOR_LABEL: self.gpu_of[pool], POOL_LABEL: pool})
        return bundles, selectors

    def request(self, gpus_by_pool: Mapping[str, int]) -> None:
        from ray.autoscaler.sdk import request_resources

        bundles, selectors = self.bundles(gpus_by_pool)
        request_resources(bundles=bundles, bundle_label_selectors=selectors)


# ---------------------------------------------------------------- training jobs
class RayActorTraining:
    """TrainingActuator over each job's named control actor (see module docstring)."""

    def _actor(self, job: str):
        import ray

        try:
            return ray.get_actor(f"r1p-train-{job}", namespace=NAMESPACE)
        except ValueError:
            return None

    def current_gpus(self, job: str) -> int | None:
        """None when the job has no control actor (not submitted yet, or finished)."""
        import ray

        a = self._actor(job)
        return int(ray.get(a.current_gpus.remote(), timeout=10)) if a else None

    def _require(self, job: str):
        a = self._actor(job)
        if a is None:
            raise LookupError(f"training job {job!r} is not running (no actor r1p-train-{job})")
        return a

    def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
        self._require(job).checkpoint_and_shrink.remote(int(gpus))

    def grow(self, job: str, gpus: int, pool: str) -> None:
        self._require(job).grow.remote(int(gpus), pool)


# ---------------------------------------------------------------- offline (dry run)
class StaticLoad:
    """The workloads file's request rates as if measured (no queue)."""

    def __init__(self, workloads: Workloads) -> None:
        self.rates = {w.name: w.request_rate for w in workloads.serving}

    def read(self) -> dict[str, DeploymentLoad]:
        return {d: DeploymentLoad(0.0, 0.0, r) for d, r in self.rates.items()}


class MemoryServe:
    def __init__(self) -> None:
        self.replicas: dict[tuple[str, str], int] = {}

    def current_replicas(self) -> dict[tuple[str, str], int]:
        return {k: v for k, v in self.replicas.items() if v > 0}

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
        self.replicas[(deployment, pool)] = replicas


class MemoryCapacity:
    def __init__(self) -> None:
        self.requested: dict[str, int] = {}

    def request(self, gpus_by_pool: Mapping[str, int]) -> None:
        self.requested = dict(gpus_by_pool)


class MemoryTraining:
    """Jobs that checkpoint and release after `release_after` reads of current_gpus."""

    def __init__(self, release_after: int = 1) -> None:
        self.gpus: dict[str, int] = {}
        self.pool: dict[str, str] = {}
        self.pending: dict[str, list[int]] = {}
        self.checkpoints: dict[str, int] = defaultdict(int)
        self.release_after = release_after

    def current_gpus(self, job: str) -> int:
        if job in self.pending:
            target, left = self.pending[job]
            if left <= 1:  # the checkpoint finished: the job releases its GPUs
                self.gpus[job] = target
                del self.pending[job]
            else:
                self.pending[job] = [target, left - 1]
        return self.gpus.get(job, 0)

    def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
        self.checkpoints[job] += 1
        self.pending[job] = [gpus, self.release_after]

    def grow(self, job: str, gpus: int, pool: str) -> None:
        self.gpus[job] = gpus
        self.pool[job] = pool


def offline(workloads: Workloads):
    return StaticLoad(workloads), MemoryServe(), MemoryCapacity(), MemoryTraining()


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
):
    import ray

    from .inventory import from_ray_live

    ray.init(address=address, namespace=NAMESPACE, ignore_reinit_error=True, logging_level="ERROR")
    pools = from_ray_live()
    virtual = not any("GPU" in (n.get("Resources") or {}) for n in ray.nodes())
    cap = RayAutoscalerCapacity(
        {p.name: p.gpus_per_node for p in pools}, {p.name: p.gpu for p in pools}, virtual=virtual
    )
    load = MetricsLoadSource(metrics_url, window_s=rate_window_s)
    return load, RayServeActuator(dashboard), cap, RayActorTraining()


def start_controller_actor(
    pools: Path,
    workloads: Path,
    cfg,
    *,
    address: str | None,
    metrics_url: str | None,
    record_path: Path | None,
    dashboard: str = "http://127.0.0.1:8265",
) -> str:
    """Run the loop as a detached Ray actor (survives the CLI; one per cluster)."""
    import ray

    ray.init(
        address=address or "auto",
        namespace=NAMESPACE,
        ignore_reinit_error=True,
        logging_level="ERROR",
    )
    pools_text, wl_text = Path(pools).read_text(), Path(workloads).read_text()

    @ray.remote(num_cpus=0)
    class ControllerActor:
        def __init__(self) -> None:
            import tempfile

            from .controller import Controller
            from .fleet import load_fleet
            from .workloads import load_workloads

            d = Path(tempfile.mkdtemp())
            (d / "pools.yaml").write_text(pools_text)
            (d / "workloads.yaml").write_text(wl_text)
            fleet = load_fleet(d / "pools.yaml")
            wl = load_workloads(d / "workloads.yaml", fleet.catalog)
            parts = live("auto", metrics_url, dashboard, cfg.rate_window_s)
            self.ctl = Controller(
                live_fleet(fleet),
                wl,
                *parts,
                cfg,
                record_path=str(record_path) if record_path else None,
            )

        def run(self) -> None:
            self.ctl.run()

    a = ControllerActor.options(name=ACTOR_NAME, lifetime="detached", get_if_exists=True).remote()
    a.run.remote()
    return ACTOR_NAME

"""LoadSource over Prometheus text: Ray Serve's own per-replica metrics, or the OpenAI
ingress's /metrics. Request rates follow Prometheus rate() semantics over a window."""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Mapping

from r1platform.contracts import deployment_name

from .protocols import DeploymentLoad

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
            d, _ = deployment_name.parse(s.labels[label])
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

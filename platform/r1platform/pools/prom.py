"""The controller's Prometheus metrics, on a registry of their own (`r1p control
--metrics-port N` serves exactly these, nothing of the process's default registry).

- r1p_controller_replicas{deployment,pool}: replica target after each cycle;
- r1p_controller_gpus_lent_total / r1p_controller_gpus_reclaimed_total: GPUs moved to / from
  training by applied lend / reclaim decisions;
- r1p_controller_decisions_total{kind}: decisions recorded, by kind (error ones included);
- r1p_controller_forecast_error: relative error of the previous cycle's demand forecast
  against the rate observed this cycle;
- r1p_controller_cycle_errors_total: cycles that failed (dashboard, GCS or an actuator).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from . import decisions as rec

_COUNTERS = (
    "r1p_controller_gpus_lent",
    "r1p_controller_gpus_reclaimed",
    "r1p_controller_decisions",
    "r1p_controller_cycle_errors",
)
# prometheus_client exposes a counter `x` as `x_total` plus its creation time `x_created`.
EXPORTED_NAMES: frozenset[str] = frozenset(
    {"r1p_controller_replicas", "r1p_controller_forecast_error"}
    | {f"{c}_total" for c in _COUNTERS}
    | {f"{c}_created" for c in _COUNTERS}
)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.replicas = Gauge(
            "r1p_controller_replicas",
            "Replica target per deployment and pool after the last cycle.",
            ["deployment", "pool"],
            registry=r,
        )
        self.gpus_lent = Counter(
            "r1p_controller_gpus_lent", "GPUs lent to training by applied decisions.", registry=r
        )
        self.gpus_reclaimed = Counter(
            "r1p_controller_gpus_reclaimed",
            "GPUs reclaimed from training by applied decisions.",
            registry=r,
        )
        self.decisions = Counter(
            "r1p_controller_decisions", "Decisions recorded, by kind.", ["kind"], registry=r
        )
        self.forecast_error = Gauge(
            "r1p_controller_forecast_error",
            "Relative error of the previous cycle's demand forecast vs the rate observed now.",
            registry=r,
        )
        self.cycle_errors = Counter(
            "r1p_controller_cycle_errors", "Reconcile cycles that failed.", registry=r
        )

    def record(
        self,
        decisions: Iterable[rec.Decision],
        replicas: Mapping[tuple[str, str], int] | None = None,
        forecast_error: float | None = None,
    ) -> None:
        """Fold one cycle in: its decisions, the replica targets after it, the forecast error."""
        for d in decisions:
            self.decisions.labels(kind=d.kind).inc()
            if d.kind == "error":
                self.cycle_errors.inc()
            elif d.applied and d.kind == "lend":
                self.gpus_lent.inc(max(d.after - d.before, 0))
            elif d.applied and d.kind == "reclaim":
                self.gpus_reclaimed.inc(max(d.before - d.after, 0))
        if replicas is not None:
            self.replicas.clear()  # a deployment scaled to zero drops out
            for (dep, pool), n in replicas.items():
                self.replicas.labels(deployment=dep, pool=pool).set(n)
        if forecast_error is not None:
            self.forecast_error.set(forecast_error)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve this registry at http://addr:port/metrics from a daemon thread."""
        start_http_server(port, addr=addr, registry=self.registry)

"""Live-actuator helpers that need no cluster: metric parsing and autoscaler bundles."""

from __future__ import annotations

import pytest
from r1platform.contracts import deployment_name
from r1platform.pools.actuators import RayAutoscalerCapacity, parse_serve_metrics

# Shaped like Ray's Prometheus export (ray_ prefix, counters with _total).
METRICS = """\
# HELP ray_serve_deployment_request_counter_total The number of queries processed.
# TYPE ray_serve_deployment_request_counter_total counter
ray_serve_deployment_request_counter_total{app="r1",deployment="chat@h100",replica="a"} 120.0
ray_serve_deployment_request_counter_total{app="r1",deployment="chat@l4",replica="b"} 30.0
ray_serve_deployment_request_counter_total{app="r1",deployment="Ingress",replica="c"} 150.0
# HELP ray_serve_replica_processing_queries Current in-flight queries.
# TYPE ray_serve_replica_processing_queries gauge
ray_serve_replica_processing_queries{app="r1",deployment="chat@h100",replica="a"} 7.0
ray_serve_replica_processing_queries{app="r1",deployment="chat@l4",replica="b"} 2.0
# HELP ray_serve_deployment_queued_queries Queued queries.
# TYPE ray_serve_deployment_queued_queries gauge
ray_serve_deployment_queued_queries{app="r1",deployment="chat@h100"} 4.0
"""


def test_parse_serve_metrics_sums_pools_per_deployment():
    m = parse_serve_metrics(METRICS)
    assert m["chat"] == (150.0, 9.0, 4.0)
    assert m["Ingress"] == (150.0, 0.0, 0.0)


def test_serve_name_round_trip():
    assert deployment_name.parse(deployment_name.build("r1-7b", "h100")) == ("r1-7b", "h100")
    assert deployment_name.parse("Ingress") == ("Ingress", None)


def test_autoscaler_bundles_one_per_node_pinned_to_the_pool():
    cap = RayAutoscalerCapacity({"h100": 8, "l4": 1}, {"h100": "H100", "l4": "L4"})
    bundles, selectors = cap.bundles({"h100": 12, "l4": 2})
    assert bundles == [{"pool:h100": 8.0}] * 2 + [{"pool:l4": 1.0}] * 2
    assert selectors[0] == {"r1p.pool": "h100"}
    real = RayAutoscalerCapacity({"h100": 8}, {"h100": "H100"}, virtual=False)
    b, s = real.bundles({"h100": 8})
    assert b == [{"GPU": 8.0}] and s == [{"ray.io/accelerator-type": "H100", "r1p.pool": "h100"}]


def test_ingress_metrics_are_a_load_source():
    from r1platform.pools.actuators import parse_serve_metrics

    text = (
        "# TYPE r1p_requests counter\n"
        'r1p_requests_total{endpoint="chat",model="tiny-r1",status="200"} 7.0\n'
        'r1p_requests_total{endpoint="chat",model="tiny-r1",status="400"} 2.0\n'
        'r1p_requests_total{endpoint="chat",model="unknown",status="404"} 5.0\n'
        "# TYPE r1p_requests_in_flight gauge\n"
        'r1p_requests_in_flight{model="tiny-r1"} 3.0\n'
    )
    assert parse_serve_metrics(text) == {"tiny-r1": (9.0, 3.0, 0.0)}


def _counter(**replicas: float) -> str:
    lines = ["# TYPE ray_serve_deployment_request_counter_total counter"]
    for r, v in replicas.items():
        lines.append(
            f'ray_serve_deployment_request_counter_total{{deployment="chat@l4",replica="{r}"}} {v}'
        )
    return "\n".join(lines) + "\n"


def test_rate_is_windowed_and_survives_replica_restarts_and_removals():
    from r1platform.pools.actuators import MetricsLoadSource, parse_serve_series

    src = MetricsLoadSource(url="unused", window_s=20)
    read = lambda t, **reps: src.observe(t, parse_serve_series(_counter(**reps)))["chat"]  # noqa: E731
    assert read(0, a=100).request_rate == 0  # baseline
    # Ray's agent exports every ~10 s: reads in between see no change, then a jump.
    assert read(5, a=100).request_rate == 0
    assert read(10, a=150).request_rate == pytest.approx(5.0)
    assert read(15, a=150).request_rate == pytest.approx(50 / 15)
    assert read(20, a=200).request_rate == pytest.approx(5.0)
    # Replica b appears (counted from its first sample on, as Prometheus' rate() does: its
    # first sample lumps ~10 s of requests), a's counter resets, a is removed: no negative
    # increase and no spike.
    assert read(30, a=200, b=50).request_rate == pytest.approx(50 / 20)
    assert read(40, a=30, b=100).request_rate == pytest.approx((30 + 50) / 20)
    assert read(50, b=150).request_rate == pytest.approx((30 + 50 + 50) / 20)
    assert read(80, b=150).request_rate == 0  # the window moved past the last request


def test_probes_and_scrapes_are_not_load():
    text = (
        "# TYPE ray_serve_deployment_request_counter_total counter\n"
        'ray_serve_deployment_request_counter_total{deployment="chat@l4",route="/v1/chat/completions"} 5\n'
        'ray_serve_deployment_request_counter_total{deployment="chat@l4",route="/v1/completions"} 2\n'
        'ray_serve_deployment_request_counter_total{deployment="chat@l4",route="/"} 40\n'
        'ray_serve_deployment_request_counter_total{deployment="chat@l4",route="/v1/models"} 3\n'
    )
    assert parse_serve_metrics(text)["chat"] == (7.0, 0.0, 0.0)


def test_live_fleet_merges_what_ray_reports_each_cycle(monkeypatch):
    from r1platform.pools import inventory
    from r1platform.pools.actuators import live_fleet
    from r1platform.pools.catalog import load_catalog
    from r1platform.pools.fleet import Fleet, Pool

    cat = load_catalog()
    yaml_pools = [Pool(name="l4", gpu="L4", nodes=1, gpus_per_node=4, max_nodes=2)]
    configured = Fleet(pools=yaml_pools, catalog=cat)
    seen = [
        [Pool(name="l4", gpu="L4", nodes=3, gpus_per_node=4), Pool(name="x", gpu="T4", nodes=1,
                                                                   gpus_per_node=1)],
    ]  # fmt: skip

    def discovered(catalog=None):
        if not seen:
            raise ConnectionError("GCS unavailable")
        return seen.pop()

    monkeypatch.setattr(inventory, "from_ray_live", discovered)
    read = live_fleet(configured)
    now = read()
    assert [(p.name, p.nodes, p.gpus_capacity) for p in now.pools] == [("l4", 3, 12)]
    assert read() == configured  # discovery failed: the configured view for this cycle

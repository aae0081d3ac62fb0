"""The controller's live Serve side against a real app: the ingress metrics as its load source,
and replica counts of `model@pool` changed through Serve's declarative REST API, the way
`r1p up` deploys and a KubeRay RayService would."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    import ray
    from r1platform import localcluster
    from r1platform.models.tiny import ensure_tiny_model
    from ray import serve

    ensure_tiny_model()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the REST client below sends no token
    dash = _free_port()
    ray.init(address="local", num_cpus=6, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=dash, resources={"pool:l4": 4, "accelerator_type:L4": 4})  # fmt: skip
    cfg = tmp_path_factory.mktemp("live") / "settings.yaml"
    cfg.write_text(
        "models:\n  tiny-r1: {pool: l4, autoscaling: {min_replicas: 1, max_replicas: 1}}\n"
    )
    port = _free_port()
    dashboard = f"http://127.0.0.1:{dash}"
    localcluster.deploy_serve_app(dashboard, str(cfg), port)
    base = f"http://127.0.0.1:{port}"
    assert localcluster.wait_for_models(base, ["tiny-r1"], timeout_s=300)
    yield {"base": base, "dashboard": dashboard}
    serve.shutdown()
    ray.shutdown()


def _chat(base: str) -> None:
    body = {"model": "tiny-r1", "messages": [{"role": "user", "content": "3+4"}], "max_tokens": 8}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text


def test_ingress_metrics_are_the_controllers_load_source(live_app):
    from r1platform.pools.actuators import MetricsLoadSource

    load = MetricsLoadSource(url=f"{live_app['base']}/metrics")
    load.read()  # the first read only sets the baseline for the rate
    for _ in range(6):
        _chat(live_app["base"])
    time.sleep(0.5)
    now = load.read()["tiny-r1"]
    assert now.request_rate > 0 and now.ongoing == 0


def test_serve_actuator_scales_model_at_pool(live_app):
    from r1platform.pools.actuators import RayServeActuator
    from ray import serve

    act = RayServeActuator(live_app["dashboard"])
    assert act.current_replicas() == {("tiny-r1", "l4"): 1}
    act.set_replicas("tiny-r1", "l4", 2)
    deadline = time.monotonic() + 300
    while True:
        dep = serve.status().applications["r1"].deployments["tiny-r1@l4"]
        running = dep.replica_states.get("RUNNING", 0)
        if (
            running == 2
            and str(dep.status.value if hasattr(dep.status, "value") else dep.status) == "HEALTHY"
        ):
            break
        assert time.monotonic() < deadline, f"still {dep.replica_states}"
        time.sleep(2)
    assert act.current_replicas() == {("tiny-r1", "l4"): 2}
    _chat(live_app["base"])

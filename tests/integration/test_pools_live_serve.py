"""The controller's live Serve side against a real app: the ingress metrics as its load source,
and replica counts of `model@pool` changed through Serve's declarative REST API, the way
`r1p up` deploys and a KubeRay RayService would."""

from __future__ import annotations

import os
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    import ray
    from r1platform import localcluster
    from r1platform.contracts.net import free_port
    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.pools.fleet import Pool, node_resources
    from ray import serve

    ensure_tiny_model()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the REST client below sends no token
    dash = free_port()
    l4 = node_resources(Pool(name="l4", gpu="L4", nodes=1, gpus_per_node=4))
    ray.init(address="local", num_cpus=6, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=dash, resources=l4)  # fmt: skip
    cfg = tmp_path_factory.mktemp("live") / "settings.yaml"
    cfg.write_text(
        "models:\n  tiny-r1: {pool: l4, autoscaling: {min_replicas: 1, max_replicas: 1}}\n"
    )
    port = free_port()
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
    # A counter series exists once it has counted something, and (as Prometheus' rate()) the
    # load source counts a series from its first sample on: make it exist, then baseline.
    _chat(live_app["base"])
    load.read()
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


def test_controller_scales_serving_on_a_live_burst_and_traces_it(live_app, tmp_path):
    """One reconcile cycle against the live app: measured load → plan → Serve replicas, with
    the decision in the record and as pools.reconcile > pools.scale spans."""
    from r1platform import telemetry
    from r1platform.pools.actuators import (
        MemoryCapacity,
        MemoryTraining,
        MetricsLoadSource,
        RayServeActuator,
    )
    from r1platform.pools.controller import Controller, ControllerConfig
    from r1platform.pools.fleet import load_fleet
    from r1platform.pools.workloads import load_workloads

    spans = telemetry.in_memory_exporter()
    (tmp_path / "pools.yaml").write_text(
        "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 4, min_nodes: 1, max_nodes: 1}\n"
    )
    # A measured 3 rps per CPU-run replica: far below the L4 roofline, so a burst needs more.
    (tmp_path / "workloads.yaml").write_text(
        "serving:\n  - {name: tiny-r1, model: tiny-r1, request_rate: 0.1, avg_input_tokens: 10,\n"
        "     avg_output_tokens: 8, slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.1},\n"
        "     replica_rps: {L4: 3.0}}\n"
    )
    fleet = load_fleet(tmp_path / "pools.yaml")
    act = RayServeActuator(live_app["dashboard"])
    act.set_replicas("tiny-r1", "l4", 1)
    ctl = Controller(
        fleet,
        load_workloads(tmp_path / "workloads.yaml", fleet.catalog),
        MetricsLoadSource(url=f"{live_app['base']}/metrics"),
        act,
        MemoryCapacity(),
        MemoryTraining(),
        ControllerConfig(interval_s=1, lookahead_s=0),
        record_path=str(tmp_path / "decisions.jsonl"),
    )
    ctl.step()  # baseline read
    t0 = time.monotonic()
    for i in range(12):  # a paced burst of ~4 requests/s
        _chat(live_app["base"])
        time.sleep(max(0.0, t0 + (i + 1) * 0.25 - time.monotonic()))
    decisions = ctl.step()
    scale = [d for d in decisions if d.kind == "scale" and d.target == "tiny-r1"]
    assert scale and scale[0].pool == "l4" and scale[0].before == 1 and scale[0].after >= 2
    deadline = time.monotonic() + 120  # Serve applies a PUT config asynchronously
    while act.current_replicas()[("tiny-r1", "l4")] != scale[0].after:
        assert time.monotonic() < deadline, "Serve never took the controller's replica target"
        time.sleep(1)
    names = [s.name for s in spans.get_finished_spans()]
    assert {"pools.reconcile", "pools.plan", "pools.scale"} <= set(names)
    sc = next(s for s in spans.get_finished_spans() if s.name == "pools.scale")
    assert sc.attributes["deployment"] == "tiny-r1" and sc.attributes["before"] == 1
    assert sc.attributes["cost_per_hour_after"] > sc.attributes["cost_per_hour_before"]
    assert (tmp_path / "decisions.jsonl").read_text().count('"scale"') >= 1


def test_the_plans_serve_config_is_what_serve_runs(live_app):
    """plan -> serve_config -> RayServeActuator.deploy on the live app: Serve runs the plan's
    layout (read back from Serve's own applied config) and the model answers."""
    from r1platform.pools.actuators import RayServeActuator
    from r1platform.pools.catalog import load_catalog
    from r1platform.pools.fleet import Fleet, Pool
    from r1platform.pools.plan_model import PlanRequest
    from r1platform.pools.planner import plan_one_layout
    from r1platform.pools.serve_config import layout_of, layouts_from_config, serve_config
    from r1platform.pools.workloads import ServingWorkload, SloSpec, Workloads
    from ray import serve

    fleet = Fleet(
        pools=[Pool(name="l4", gpu="L4", nodes=1, gpus_per_node=4)], catalog=load_catalog()
    )
    w = ServingWorkload(name="tiny-r1", model="tiny-r1", request_rate=1.0, avg_input_tokens=20,
                        avg_output_tokens=20, slo=SloSpec(ttft_p99_s=5, tpot_p99_s=1),
                        replica_rps={"L4": 5.0}, min_replicas=1)  # fmt: skip
    p = plan_one_layout(PlanRequest(fleet, Workloads(serving=[w])))
    cfg = serve_config(p, models={"tiny-r1": {"max_model_len": 256}})
    act = RayServeActuator(live_app["dashboard"])
    act.deploy(cfg)
    deadline = time.monotonic() + 300
    while True:
        app = serve.status().applications["r1"]
        status = str(getattr(app.status, "value", app.status))
        applied = act.client.get_serve_details()["applications"]["r1"]["deployed_app_config"]
        if (
            status == "RUNNING"
            and applied.get("import_path") == cfg["applications"][0]["import_path"]
        ):
            break
        assert time.monotonic() < deadline, f"app never ran the plan's config: {status}"
        time.sleep(2)
    assert layouts_from_config({"applications": [applied]}) == [layout_of(s) for s in p.serving]
    assert act.current_replicas() == {("tiny-r1", "l4"): p.serving[0].replicas}
    _chat(live_app["base"])

"""The plan is what gets deployed: plan -> Serve config -> Settings round-trips; `r1p plan` uses
the controller's one-layout rule and prints the engine profile; the Serve actuators (REST
locally, serveConfigV2 on Kubernetes) deploy exactly that document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from k8s_fake import FakeKube
from kubernetes import client
from r1platform.pools.catalog import load_catalog
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.k8s import RayServiceServeActuator
from r1platform.pools.plan_model import PlanRequest
from r1platform.pools.planner import plan, plan_one_layout
from r1platform.pools.ray_actuators import RayServeActuator
from r1platform.pools.serve_config import (
    ServeConfigError,
    carry_running,
    layout_of,
    layouts_from_config,
    serve_config,
)
from r1platform.pools.workloads import ServingWorkload, SloSpec, Workloads
from typer.testing import CliRunner

from pools.test_size_mix import H200, _fleet, _mixed

ROOT = Path(__file__).resolve().parents[3]


def _w(name: str, model: str, rate: float, gpu_types=None) -> ServingWorkload:
    return ServingWorkload(
        name=name,
        model=model,
        request_rate=rate,
        avg_input_tokens=1000,
        avg_output_tokens=1500,
        slo=SloSpec(ttft_p99_s=10, tpot_p99_s=0.2),
        context_tokens=8192,
        gpu_types=gpu_types,
    )


def _mixed_fleet() -> Fleet:
    pools = [
        Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=8, max_nodes=2),
        Pool(name="a100", gpu="A100-80G", nodes=2, gpus_per_node=8, max_nodes=2),
        Pool(name="v100", gpu="V100-32G", nodes=4, gpus_per_node=8, max_nodes=4),
        Pool(name="l4", gpu="L4", nodes=4, gpus_per_node=1, max_nodes=4),
    ]
    return Fleet(pools=pools, catalog=load_catalog())


def _plan():
    wl = Workloads(
        serving=[
            _w("r1", "deepseek-ai/DeepSeek-R1", 0.5, ["H100"]),
            _w("qwen7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 1.0, ["V100-32G"]),
            _w("llama70b", "DeepSeek-R1-Distill-Llama-70B", 0.3, ["A100-80G"]),
            _w("tiny", "tiny-r1", 0.1, ["L4"]),
        ]
    )
    return plan_one_layout(PlanRequest(_mixed_fleet(), wl))


def test_plan_to_serve_config_to_settings_round_trips():
    p = _plan()
    cfg = serve_config(p, serve={"host": "0.0.0.0"})
    assert layouts_from_config(cfg) == sorted(
        (layout_of(s) for s in p.serving), key=lambda x: (x.deployment, x.pool)
    )
    # Survives the trip through YAML (serveConfigV2 is a YAML string).
    assert layouts_from_config(yaml.safe_load(yaml.safe_dump(cfg))) == layouts_from_config(cfg)
    by = {x.deployment: x for x in layouts_from_config(cfg)}
    assert (by["r1"].tp, by["r1"].pp, by["r1"].quantization) == (8, 2, "fp8")
    assert (by["qwen7b"].dtype, by["qwen7b"].quantization) == ("float16", None)  # Volta
    assert (by["llama70b"].dtype, by["llama70b"].quantization) == ("bfloat16", None)  # Ampere
    assert by["tiny"].dtype is None  # the CPU engine keeps float32


def test_kubernetes_serve_config_refuses_the_haproxy_ingress():
    # The pods' environment fixes the ingress at start; a deploy claiming HAProxy would
    # start replicas' HTTP servers with nothing in front of them.
    with pytest.raises(ServeConfigError, match=r"serve\.ingress 'haproxy'"):
        serve_config(_plan(), serve={"host": "0.0.0.0", "ingress": "haproxy"})
    cfg = serve_config(_plan(), serve={"ingress": "proxy"})
    assert cfg["applications"][0]["runtime_env"]["env_vars"]["RAY_SERVE_ENABLE_HA_PROXY"] == "0"


def test_serve_config_is_a_valid_serve_document_with_single_node_models_first():
    from ray.serve.schema import ServeDeploySchema

    cfg = serve_config(_plan())
    ServeDeploySchema.model_validate(cfg)
    app = cfg["applications"][0]
    first = next(iter(app["args"]["models"].values()))
    assert first["pipeline_parallel_size"] == 1  # the ingress-hosted model never spans nodes
    assert app["args"]["models"]["r1"]["path"] == "deepseek-ai/DeepSeek-R1"
    assert {d["name"] for d in app["deployments"]} == {
        "r1@h100",
        "qwen7b@v100",
        "llama70b@a100",
        "tiny@l4",
    }


def test_r1_is_never_planned_on_v100():
    wl = Workloads(serving=[_w("r1", "deepseek-r1", 0.5)])
    fleet = Fleet(pools=_mixed_fleet().pools[2:3], catalog=load_catalog())
    with pytest.raises(Exception, match="cannot run its FP8 checkpoint on V100-32G"):
        plan(PlanRequest(fleet, wl))
    assert {s.pool for s in plan(PlanRequest(_mixed_fleet(), wl)).serving} != {"v100"}


def test_a_deployment_on_two_pools_is_refused_with_the_reason():
    p = plan(
        PlanRequest(_fleet(H200), Workloads(serving=[_mixed("chat", "r1-distill-qwen-32b", 5)]))
    )
    assert len({(s.tp, s.pp) for s in p.serving}) > 1  # plan() alone mixes layouts here
    with pytest.raises(ServeConfigError, match="several pools/layouts"):
        serve_config(p)


def test_r1p_plan_uses_the_controllers_one_layout_rule_and_prints_the_profile(tmp_path):
    from r1platform.cli import app

    pools = tmp_path / "pools.yaml"
    pools.write_text(
        yaml.safe_dump({"pools": [{"name": "h200", "gpu": "H200", "nodes": 2, "gpus_per_node": 8}]})
    )
    work = tmp_path / "work.yaml"
    mix = [
        {"share": c.share, "input_tokens": c.input_tokens, "output_tokens": c.output_tokens}
        for c in _mixed("chat", "r1-distill-qwen-32b", 5).size_mix
    ]
    row = _mixed("chat", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 5).model_dump(
        exclude_none=True, exclude={"size_mix"}
    )
    work.write_text(yaml.safe_dump({"serving": [{**row, "size_mix": mix}]}))
    out = tmp_path / "serve.yaml"
    res = CliRunner().invoke(
        app, ["plan", "-p", str(pools), "-w", str(work), "-f", "json", "--serve-config", str(out)]
    )
    assert res.exit_code == 0, res.output
    serving = json.loads(res.output)["serving"]
    # plan() alone mixes TP1, TP2 and TP4 here; r1p plan, like the controller, does not.
    assert len({(s["tp"], s["pp"]) for s in serving}) == 1
    assert serving[0]["quantization"] == "fp8" and serving[0]["fp8_kernel"] == "w8a8"
    assert layouts_from_config(yaml.safe_load(out.read_text()))[0].tp == serving[0]["tp"]
    table = CliRunner().invoke(app, ["plan", "-p", str(pools), "-w", str(work)])
    assert "fp8(w8a8)/bf16 kv auto" in table.output


class _Client:
    def __init__(self, details):
        self.details, self.deployed = details, []

    def get_serve_details(self):
        return self.details

    def deploy_applications(self, cfg):
        self.deployed.append(cfg)


def test_ray_serve_actuator_deploys_the_plans_config_in_one_put():
    other = {"name": "other", "import_path": "x:y"}
    old = {"name": "r1", "import_path": "serve_apps.r1_chat:app"}
    details = {
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": {
            "r1": {"deployed_app_config": old, "deployments": {}},
            "other": {"deployed_app_config": other, "deployments": {}},
        },
    }
    act = RayServeActuator.__new__(RayServeActuator)
    act.client = _Client(details)
    cfg = serve_config(_plan())
    act.deploy(cfg)
    (sent,) = act.client.deployed
    assert sent["http_options"] == details["http_options"]
    assert sent["applications"] == [other, cfg["applications"][0]]


def test_rayservice_actuator_deploys_into_serve_config_v2_and_owns_its_counts():
    fake = FakeKube()
    chart = {"applications": [{"name": "r1", "import_path": "serve_apps.r1_chat:app"}]}
    fake.add(
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": "r1", "namespace": "ml"},
            "spec": {"serveConfigV2": yaml.safe_dump(chart)},
        }
    )
    api = client.CustomObjectsApi(fake.client())
    act = RayServiceServeActuator(api, "ml", "r1", sleep=lambda s: None)
    cfg = serve_config(_plan())
    act.deploy(cfg)
    stored = fake.get("ray.io", "rayservices", "ml", "r1")
    doc = yaml.safe_load(stored["spec"]["serveConfigV2"])
    assert layouts_from_config(doc) == layouts_from_config(cfg)
    assert act.current_replicas()[("r1", "h100")] == 1
    assert act.owned["r1@h100"] == 1


def test_a_deploy_keeps_the_operators_keys_and_model_extras_from_the_running_app():
    cfg = serve_config(_plan())
    running = {
        "name": "r1",
        "import_path": "serve_apps.r1_chat:build_app_from_args",
        "runtime_env": {"env_vars": {"R1P_CONFIG": "/etc/r1p/settings.yaml"}},
        "args": {
            "serve": {"api_keys": ["sk-operator"]},
            "models": {"r1": {"max_model_len": 4096, "tensor_parallel_size": 4}},
        },
    }
    (app,) = carry_running(cfg["applications"], [running])
    assert app["args"]["serve"] == {"api_keys": ["sk-operator"]}
    assert app["args"]["models"]["r1"]["max_model_len"] == 4096
    # The plan's layout wins over the running one; only what the plan does not decide is kept.
    assert app["args"]["models"]["r1"]["tensor_parallel_size"] == 8
    assert app["runtime_env"] == running["runtime_env"]
    assert layouts_from_config({"applications": [app]}) == layouts_from_config(cfg)
    # An application that is not running yet is deployed as planned.
    assert carry_running(cfg["applications"], []) == cfg["applications"]


def test_both_serve_actuators_carry_the_running_keys_into_a_deploy():
    running = {
        "name": "r1",
        "import_path": "serve_apps.r1_chat:build_app_from_args",
        "args": {"serve": {"api_keys": ["sk-operator"]}, "models": {}},
    }
    act = RayServeActuator.__new__(RayServeActuator)
    act.client = _Client({"applications": {"r1": {"deployed_app_config": running}}})
    act.deploy(serve_config(_plan()))
    (sent,) = act.client.deployed
    assert sent["applications"][0]["args"]["serve"] == {"api_keys": ["sk-operator"]}

    fake = FakeKube()
    fake.add(
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": "r1", "namespace": "ml"},
            "spec": {"serveConfigV2": yaml.safe_dump({"applications": [running]})},
        }
    )
    k8s = RayServiceServeActuator(
        client.CustomObjectsApi(fake.client()), "ml", "r1", sleep=lambda s: None
    )
    k8s.deploy(serve_config(_plan()))
    doc = yaml.safe_load(fake.get("ray.io", "rayservices", "ml", "r1")["spec"]["serveConfigV2"])
    assert doc["applications"][0]["args"]["serve"] == {"api_keys": ["sk-operator"]}

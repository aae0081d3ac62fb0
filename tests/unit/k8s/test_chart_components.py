"""The optional parts: the controller (its pools and workloads go through the platform's own
loaders), GRPO in both modes (its flags go through the job's own parser), the OTLP collector
and the Grafana dashboard ConfigMap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from r1platform.k8s.render import DEFAULT_RELEASE, cluster_specs
from r1platform.pools.fleet import load_fleet
from r1platform.pools.workloads import load_workloads
from r1platform.training.settings import parse_settings

from .conftest import rendered_case

HEAD_SVC = f"{DEFAULT_RELEASE}-head-svc"


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def token_from_secret(env: dict[str, dict[str, Any]]) -> bool:
    ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    return env["RAY_AUTH_MODE"]["value"] == "token" and ref == {
        "name": f"{DEFAULT_RELEASE}-ray-auth",
        "key": "auth_token",
    }


@pytest.mark.parametrize("case_name", ["everything", "cpu-dev"])
def test_controller_runs_r1p_control_in_cluster(case_name: str, tmp_path: Path) -> None:
    case = rendered_case(case_name)
    name = f"{DEFAULT_RELEASE}-controller"
    dep = one(case.objects, "Deployment", name)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["r1p"]
    args = c["args"]
    assert args[:2] == ["control", "--kubernetes"]
    assert f"--address=ray://{HEAD_SVC}:10001" in args and "--metrics-port=9400" in args
    assert c["ports"] == [{"containerPort": 9400, "name": "metrics"}]
    assert pod["serviceAccountName"] == name and dep["spec"]["replicas"] == 1
    env = env_map(c)
    assert token_from_secret(env)
    assert env["R1P_K8S_RAYSERVICE"]["value"] == DEFAULT_RELEASE
    if case.full["otelCollector"]["enabled"]:
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == (
            f"http://{DEFAULT_RELEASE}-otel-collector:4318"
        )
    # The controller's inputs load with the platform's own parsers.
    cm = one(case.objects, "ConfigMap", name)
    (tmp_path / "pools.yaml").write_text(cm["data"]["pools.yaml"])
    (tmp_path / "workloads.yaml").write_text(cm["data"]["workloads.yaml"])
    fleet = load_fleet(tmp_path / "pools.yaml")
    assert [p.name for p in fleet.pools] == [p["name"] for p in case.full["pools"]]
    assert [p.gpus_per_node for p in fleet.pools] == [p["gpusPerNode"] for p in case.full["pools"]]
    wl = load_workloads(tmp_path / "workloads.yaml", fleet.catalog)
    models = {m["id"] for m in case.full["models"]}
    assert wl.serving and {w.model for w in wl.serving} <= models
    binding = one(case.objects, "RoleBinding", name)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": "r1-platform"}
    ]


def test_grpo_job_submits_to_the_stable_head_service_with_the_token() -> None:
    case = rendered_case("everything")
    (job,) = case.kinds("Job")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["ray", "job", "submit"]
    assert c["args"][:3] == [f"--address=http://{HEAD_SVC}:8265", "--working-dir=/app", "--"]
    entry = c["args"][3:]
    assert entry[:2] == ["python", "jobs/grpo.py"]
    assert "--checkpoint_uri=s3://r1-checkpoints/grpo-7b" in entry
    assert pod["restartPolicy"] == "Never" and token_from_secret(env_map(c))
    settings = parse_settings(entry[2:])  # the job's own parser accepts every flag
    assert settings.max_steps == 500 and settings.checkpoint_uri == "s3://r1-checkpoints/grpo-7b"


def test_grpo_rayjob_has_its_own_cluster_and_a_restricted_submitter() -> None:
    case = rendered_case("grpo-rayjob")
    (rj,) = case.kinds("RayJob")
    spec = rj["spec"]
    argv = yaml.safe_load("[" + spec["entrypoint"].replace("' '", "', '") + "]")
    assert argv[:2] == ["python", "jobs/grpo.py"]
    assert parse_settings(argv[2:]).checkpoint_uri == "s3://r1-checkpoints/grpo-1.5b"
    assert spec["shutdownAfterJobFinishes"] is True
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": "/app"}
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["a100"]
    sub = spec["submitterPodTemplate"]["spec"]
    assert sub["securityContext"]["runAsNonRoot"] is True
    assert sub["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    ports = {
        p["name"]
        for p in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
            "ports"
        ]
    }
    assert "serve" not in ports
    assert len(list(cluster_specs(case.objects))) == 2  # the serving cluster and the job's own


def test_gcs_fault_tolerance_uses_redis_by_secret_reference() -> None:
    case = rendered_case("everything")
    (svc,) = case.kinds("RayService")
    ft = svc["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert ft == {
        "redisAddress": "redis.r1-platform.svc:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "r1-redis", "key": "password"}}},
    }


def test_otel_collector_receives_otlp_and_exports_to_the_configured_backend() -> None:
    case = rendered_case("everything")
    cm = one(case.objects, "ConfigMap", f"{DEFAULT_RELEASE}-otel-collector")
    conf = yaml.safe_load(cm["data"]["config.yaml"])
    assert set(conf["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert conf["exporters"] == {"otlphttp": {"endpoint": "http://tempo.monitoring.svc:4318"}}
    assert conf["service"]["pipelines"]["traces"]["exporters"] == ["otlphttp"]
    svc = one(case.objects, "Service", f"{DEFAULT_RELEASE}-otel-collector")
    assert {p["port"] for p in svc["spec"]["ports"]} == {4317, 4318}


def test_pod_monitors_scrape_ray_serve_and_controller_pods_directly() -> None:
    case = rendered_case("everything")
    pms = {p["metadata"]["name"]: p for p in case.kinds("PodMonitor")}
    ray = pms[f"{DEFAULT_RELEASE}-ray"]["spec"]["podMetricsEndpoints"]
    assert {(e["port"], e["path"]) for e in ray} == {("metrics", "/metrics"), ("serve", "/metrics")}
    # Ray's port carries the GRPO series with their own `job` label: keep it.
    assert [e.get("honorLabels") for e in ray if e["port"] == "metrics"] == [True]
    ctl = pms[f"{DEFAULT_RELEASE}-controller"]["spec"]["podMetricsEndpoints"]
    assert [(e["port"], e["path"]) for e in ctl] == [("metrics", "/metrics")]
    assert all(p["metadata"]["labels"]["release"] == "kube-prometheus-stack" for p in pms.values())


def test_grafana_dashboard_configmap_ships_the_repo_json() -> None:
    case = rendered_case("everything")
    cm = one(case.objects, "ConfigMap", f"{DEFAULT_RELEASE}-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(cm["data"]["r1-platform.json"])
    repo = Path(__file__).resolve().parents[3] / "helm/r1-platform/dashboards/r1-platform.json"
    assert shipped == json.loads(repo.read_text())

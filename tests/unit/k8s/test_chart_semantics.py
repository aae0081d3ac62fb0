"""What the rendered objects mean: one worker group per pool with its GPUs and accelerator
declared, settings the platform's own models accept, secrets only by reference, least-privilege
RBAC, restricted security everywhere (including the containers KubeRay injects), pinned images."""

from __future__ import annotations

from typing import Any

import pytest
from r1platform.config import ModelSettings, Settings
from r1platform.k8s.render import (
    DEFAULT_RELEASE,
    cluster_specs,
    containers_of,
    pod_specs,
    serve_config,
    settings_document,
)
from r1platform.pools.catalog import load_catalog
from r1platform.pools.k8s import CLUSTER_SCOPED, RBAC_RULES
from r1platform.serving.placement import engine_deployment_name

from .conftest import Rendered, rendered_case


def merged(case: Rendered, key: str) -> Any:
    return case.full[key]


def rayservice_spec(case: Rendered) -> dict[str, Any]:
    (svc,) = case.kinds("RayService")
    return svc["spec"]["rayClusterConfig"]


def test_one_worker_group_per_pool_in_order(case: Rendered) -> None:
    pools = merged(case, "pools")
    gpu_mode = merged(case, "mode") == "gpu"
    groups = rayservice_spec(case)["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == [p["name"] for p in pools]
    catalog = load_catalog()
    for pool, g in zip(pools, groups, strict=True):
        assert (g["minReplicas"], g["maxReplicas"], g["replicas"]) == (
            pool["minReplicas"],
            pool["maxReplicas"],
            pool["replicas"],
        )
        assert g["labels"]["ray.io/accelerator-type"] == pool["gpu"]
        assert f"accelerator_type:{pool['gpu']}" in g["resources"]
        assert g["resources"][f"pool:{pool['name']}"] == str(pool["gpusPerNode"])
        assert g["rayStartParams"] == {}
        pod = g["template"]["spec"]
        limits = pod["containers"][0]["resources"].get("limits", {})
        if gpu_mode:
            assert limits["nvidia.com/gpu"] == pool["gpusPerNode"]
        else:
            assert "nvidia.com/gpu" not in limits
        if pool.get("nodeSelector"):
            assert pod["nodeSelector"] == pool["nodeSelector"] and "affinity" not in pod
        elif gpu_mode:
            (term,) = pod["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"]
            (expr,) = term["matchExpressions"]
            assert expr["key"] == "nvidia.com/gpu.product" and expr["operator"] == "In"
            assert expr["values"] == list(catalog[pool["gpu"]].k8s_products)
        expected_idle = pool.get(
            "idleTimeoutSeconds", merged(case, "autoscaler")["idleTimeoutSeconds"]
        )
        assert g["idleTimeoutSeconds"] == expected_idle
        shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert shm and shm[0]["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_head_has_no_gpus_and_autoscaler_v2(case: Rendered) -> None:
    spec = rayservice_spec(case)
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in str(head["template"]["spec"]["containers"][0]["resources"])
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    # The controller's Ray Client connects would otherwise fail now and then (ray_join).
    env = {e["name"]: e.get("value") for e in head["template"]["spec"]["containers"][0]["env"]}
    assert env["GRPC_ENABLE_FORK_SUPPORT"] == "false"


def test_every_ray_container_has_the_serve_env(case: Rendered) -> None:
    """The same Serve settings as `r1p up` gives its raylets, the proxy guard among them: they
    are read when Ray starts, so they must be in each head and worker container."""
    from r1platform.serving.tuning import SERVE_ENV

    spec = rayservice_spec(case)
    for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert {k: env.get(k) for k in SERVE_ENV} == SERVE_ENV, group.get("groupName", "head")


def test_token_auth_and_upgrade_strategy(case: Rendered) -> None:
    (svc,) = case.kinds("RayService")
    spec = svc["spec"]
    assert spec["rayClusterConfig"]["authOptions"] == {
        "mode": "token",
        "secretName": f"{DEFAULT_RELEASE}-ray-auth",
    }
    assert spec["upgradeStrategy"]["type"] in ("NewCluster", "None")


def test_settings_document_is_valid_platform_settings(
    case: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in __import__("os").environ if v.startswith("R1P_")]:
        monkeypatch.delenv(var)
    doc = settings_document(case.objects)
    settings = Settings(**doc)
    models = merged(case, "models")
    assert list(settings.models) == [m["id"] for m in models]
    for m in models:
        ms = settings.models[m["id"]]
        assert ms.accelerator_type == m["gpuTypes"][0]
        assert ms.path == m.get("path")
        assert ms.tensor_parallel_size == m.get("tensorParallelSize", 1)
        assert ms.autoscaling.min_replicas == m.get("minReplicas", 1)
        if m.get("engine"):
            assert doc["models"][m["id"]]["engine_extra"] == m["engine"]
    assert settings.serve.host == "0.0.0.0"
    assert settings.serve.api_keys == []  # keys only ever come from the Secret


def test_serve_config_runs_the_platform_app_on_all_interfaces(case: Rendered) -> None:
    cfg = serve_config(case.objects)
    assert cfg["http_options"] == {"host": "0.0.0.0", "port": merged(case, "serve")["port"]}
    (app,) = cfg["applications"]
    assert app["import_path"] == "serve_apps.r1_chat:app"
    assert app["runtime_env"]["env_vars"]["R1P_CONFIG"] == "/etc/r1p/settings.yaml"
    settings = settings_document(case.objects)["models"]
    # Every model@gpu deployment is listed by name only: the counts belong to the controller.
    assert app["deployments"] == [
        {"name": engine_deployment_name(mid, ModelSettings(**ms))} for mid, ms in settings.items()
    ]


def test_every_ray_pod_mounts_the_settings_configmap(case: Rendered) -> None:
    for _owner, spec in cluster_specs(case.objects):
        for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            pod = g["template"]["spec"]
            vol = next(v for v in pod["volumes"] if v["name"] == "settings")
            assert vol["configMap"]["name"] == f"{DEFAULT_RELEASE}-settings"
            env = {e["name"]: e for e in pod["containers"][0]["env"]}
            assert env["R1P_CONFIG"]["value"] == "/etc/r1p/settings.yaml"


SECRET_ENV = ("R1P_API_KEYS", "RAY_AUTH_TOKEN", "HF_TOKEN", "REDIS_PASSWORD")


def test_secrets_are_referenced_never_inlined(case: Rendered) -> None:
    assert case.kinds("Secret") == []
    for where, pod in pod_specs(case.objects):
        for c in containers_of(pod):
            for e in c.get("env") or []:
                if e["name"] in SECRET_ENV:
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], (where, e)
    keys_secret = merged(case, "apiKeys")["existingSecret"]
    head_env = {
        e["name"]: e
        for e in rayservice_spec(case)["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    }
    if keys_secret:
        assert head_env["R1P_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == keys_secret
    else:
        assert "R1P_API_KEYS" not in head_env
    gcs = rayservice_spec(case).get("gcsFaultToleranceOptions")
    if gcs and "redisPassword" in gcs:
        assert set(gcs["redisPassword"]) == {"valueFrom"}


def expected_rbac() -> dict[str, list[dict[str, Any]]]:
    """Role and ClusterRole rules built from the controller's own list of the calls it makes."""
    out: dict[str, list[dict[str, Any]]] = {"ClusterRole": [], "Role": []}
    for r in RBAC_RULES:
        kind = "ClusterRole" if (r.api_group, r.resource) in CLUSTER_SCOPED else "Role"
        out[kind].append(
            {"apiGroups": [r.api_group], "resources": [r.resource], "verbs": list(r.verbs)}
        )
    return out


def test_rbac_is_exactly_the_controllers_calls(case: Rendered) -> None:
    enabled = merged(case, "controller")["enabled"]
    for kind, rules in expected_rbac().items():
        objs = case.kinds(kind)
        if not enabled:
            assert objs == []
            continue
        (role,) = objs
        assert role["rules"] == rules
        verbs = {v for rule in role["rules"] for v in rule["verbs"]}
        assert verbs <= {"get", "list", "watch", "patch"}
        assert "*" not in str(role["rules"])


def _secure(c: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    problems = []
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot")
    if sc.get("runAsUser", psc.get("runAsUser")) == 0:
        problems.append("runAsUser 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation")
    if sc.get("privileged"):
        problems.append("privileged")
    caps = sc.get("capabilities") or {}
    if caps.get("drop") != ["ALL"] or caps.get("add"):
        problems.append("capabilities")
    seccomp = sc.get("seccompProfile", psc.get("seccompProfile")) or {}
    if seccomp.get("type") != "RuntimeDefault":
        problems.append("seccompProfile")
    return problems


def test_every_container_is_restricted_including_injected_ones(case: Rendered) -> None:
    seen = set()
    for where, pod in pod_specs(case.objects, injected=True):
        assert not pod.get("hostNetwork") and not pod.get("hostPID")
        for c in containers_of(pod):
            seen.add(c["name"])
            assert _secure(c, pod) == [], (where, c["name"])
    assert {"autoscaler", "wait-gcs-ready", "ray-head", "ray-worker"} <= seen


def test_no_image_is_latest_or_untagged(case: Rendered) -> None:
    images = [
        c["image"]
        for _w, pod in pod_specs(case.objects)
        for c in containers_of(pod)
        if "image" in c
    ]
    for _owner, spec in cluster_specs(case.objects):
        images.append(spec["autoscalerOptions"]["image"])
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), image


def test_network_policy_closes_ray_ports_keeps_serve_open(case: Rendered) -> None:
    (np,) = case.kinds("NetworkPolicy")
    rules = np["spec"]["ingress"]
    open_rules = [r for r in rules if "from" not in r]
    (open_rule,) = open_rules
    open_ports = {p["port"] for p in open_rule["ports"]}
    assert merged(case, "serve")["port"] in open_ports
    assert open_ports.isdisjoint({6379, 8265, 10001})
    peer_rules = [r for r in rules if "from" in r]
    release_only = [r for r in peer_rules if "ports" not in r]
    assert release_only[0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": DEFAULT_RELEASE}}}
    ]
    for r in peer_rules:
        if "ports" in r:
            assert {p["port"] for p in r["ports"]} == {8265}


def test_zero_idle_timeout_is_kept_not_defaulted() -> None:
    from r1platform.k8s.render import render_objects

    pool = {
        "name": "l4",
        "gpu": "L4",
        "gpusPerNode": 1,
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": 1,
        "idleTimeoutSeconds": 0,
    }
    model = {"id": "m", "gpuTypes": ["L4"], "maxModelLen": 1024}
    (svc,) = [
        o for o in render_objects({"pools": [pool], "models": [model]}) if o["kind"] == "RayService"
    ]
    assert svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["idleTimeoutSeconds"] == 0


def test_model_pinned_to_one_of_two_pools_of_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from r1platform.k8s.render import render_objects

    for var in [v for v in __import__("os").environ if v.startswith("R1P_")]:
        monkeypatch.delenv(var)
    pool = {
        "name": "l4a",
        "gpu": "L4",
        "gpusPerNode": 1,
        "replicas": 1,
        "minReplicas": 0,
        "maxReplicas": 2,
    }
    values = {
        "pools": [pool, {**pool, "name": "l4b"}],
        "models": [{"id": "m", "gpuTypes": ["L4"], "pool": "l4b", "maxModelLen": 2048}],
    }
    objs = render_objects(values)
    settings = Settings(**settings_document(objs))
    assert settings.models["m"].pool == "l4b"
    assert serve_config(objs)["applications"][0]["deployments"] == [{"name": "m@l4b"}]


def test_r1_tp8_pp2_across_two_8_gpu_h100_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's DeepSeek-R1 RayService sample, from the chart: one replica of TP8 x PP2 over the two
    8-GPU nodes of the h100 worker group, the head lending no GPU, and the engine profile the
    planner prints for H100 (FP8 W8A8, bf16 activations)."""
    from r1platform.pools.engine_profiles import profile_of_model

    for var in [v for v in __import__("os").environ if v.startswith("R1P_")]:
        monkeypatch.delenv(var)
    case = rendered_case("r1-h100-tp8pp2")
    (group,) = rayservice_spec(case)["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == 2
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 8
    assert rayservice_spec(case)["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    ms = Settings(**settings_document(case.objects)).models["deepseek-r1"]
    assert (ms.tensor_parallel_size, ms.pipeline_parallel_size) == (8, 2)
    assert ms.path == "deepseek-ai/DeepSeek-R1" and ms.accelerator_type == "H100"
    profile = ms.engine_profile("H100")
    assert profile == profile_of_model("deepseek-ai/DeepSeek-R1", load_catalog()["H100"])
    assert (profile.dtype, profile.quantization, profile.fp8_kernel) == ("bfloat16", "fp8", "w8a8")
    (app,) = serve_config(case.objects)["applications"]
    assert app["deployments"] == [{"name": "deepseek-r1@H100"}]

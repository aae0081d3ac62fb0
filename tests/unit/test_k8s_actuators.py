"""The controller's Kubernetes actuators against an in-process API server (k8s_fake) driven
through the real `kubernetes` client: replica counts in serveConfigV2, resourceVersion
conflicts retried on fresh state, counts restored after a helm reset, discovery, RBAC."""

from __future__ import annotations

import json

import pytest
import yaml
from k8s_fake import FakeKube
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pools.one_pool_world import chat
from r1platform import localcluster
from r1platform.pools import decisions as rec
from r1platform.pools.actuators import MemoryCapacity, MemoryTraining, StaticLoad
from r1platform.pools.catalog import load_catalog
from r1platform.pools.controller import Controller, ControllerConfig
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.k8s import (
    CLUSTER_SCOPED,
    RBAC_RULES,
    REPLICAS_ANNOTATION,
    RayServiceConfigError,
    RayServiceConflictError,
    RayServiceServeActuator,
    default_namespace,
    gcs_address_for,
    k8s_live_fleet,
    ray_auth_env,
    rbac_calls,
)
from r1platform.pools.workloads import Workloads
from r1platform.telemetry import in_memory_exporter

_SPANS = in_memory_exporter()
NS, NAME = "ml", "r1"
RS = ("ray.io", "rayservices", NS, NAME)
WORKERS = [{"groupName": "h100", "replicas": 2, "minReplicas": 0, "maxReplicas": 4}]


def chart_serve_config(counts: dict[str, int]) -> str:
    """serveConfigV2 as the chart renders it: the local cluster's Serve document (same shape)
    listening on 0.0.0.0, with every model@pool deployment listed with its count."""
    doc = localcluster.serve_config("configs/local.yaml", 8000)
    doc["http_options"]["host"] = "0.0.0.0"
    doc["applications"][0]["deployments"] = [
        {"name": n, "num_replicas": c} for n, c in counts.items()
    ]
    return yaml.safe_dump(doc, sort_keys=False)


CHART = {"chat@h100": 1, "chat@l4": 1}


def rayservice(counts=CHART) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "serveConfigV2": chart_serve_config(counts),
            "rayClusterConfig": {"rayVersion": "2.60.0", "workerGroupSpecs": WORKERS},
        },
    }


def node(name: str, pool: str, product: str, gpus: int) -> client.V1Node:
    labels = {"nvidia.com/gpu.product": product, "karpenter.sh/nodepool": pool}
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        status=client.V1NodeStatus(allocatable={"nvidia.com/gpu": str(gpus)}),
    )


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)  # configs/local.yaml is relative to the repo


@pytest.fixture
def fake() -> FakeKube:
    f = FakeKube()
    f.add(rayservice())
    f.add(node("gpu-a", "h100", "NVIDIA-H100-80GB-HBM3", 8))
    f.add(node("gpu-b", "h100", "NVIDIA-H100-80GB-HBM3", 8))
    f.add(node("gpu-c", "l4", "NVIDIA-L4", 4))
    f.add(client.V1Node(metadata=client.V1ObjectMeta(name="cpu-0", labels={"role": "cpu"})))
    return f


def actuator(fake: FakeKube, **kw) -> RayServiceServeActuator:
    api = client.CustomObjectsApi(fake.client())
    return RayServiceServeActuator(api, NS, NAME, sleep=lambda s: None, **kw)


def spec_counts(fake: FakeKube) -> dict[str, int | None]:
    doc = yaml.safe_load(fake.get(*RS)["spec"]["serveConfigV2"])
    return {d["name"]: d.get("num_replicas") for d in doc["applications"][0]["deployments"]}


def helm_upgrade(fake: FakeKube, counts=CHART) -> None:
    """What `helm upgrade` does to a RayService whose serveConfigV2 the controller changed: its
    three-way merge writes the chart's string back (no precondition); annotations it never
    rendered are left alone."""
    fake.write(*RS, {"spec": {"serveConfigV2": chart_serve_config(counts)}})


# ------------------------------------------------------------------ scaling via serveConfigV2
def test_set_replicas_patches_serve_config_with_resource_version(fake):
    serve = actuator(fake)
    before = fake.get(*RS)
    serve.set_replicas("chat", "h100", 3)

    after = fake.get(*RS)
    assert spec_counts(fake) == {"chat@h100": 3, "chat@l4": 1}
    assert serve.current_replicas() == {("chat", "h100"): 3, ("chat", "l4"): 1}
    # Everything else in the document and the spec is as the chart rendered it.
    old_doc, new_doc = (yaml.safe_load(o["spec"]["serveConfigV2"]) for o in (before, after))
    old_doc["applications"][0]["deployments"][0]["num_replicas"] = 3
    assert new_doc == old_doc
    assert after["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]
    # The patch was conditional on the version it read.
    patches = [r for r in fake.requests if r.verb == "patch"]
    assert len(patches) == 1
    assert patches[0].body["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert set(patches[0].body["spec"]) == {"serveConfigV2"}  # never worker-group replicas
    assert json.loads(after["metadata"]["annotations"][REPLICAS_ANNOTATION]) == {"chat@h100": 3}


def test_set_replicas_replaces_autoscaling_config_and_skips_no_op(fake):
    doc = yaml.safe_load(fake.get(*RS)["spec"]["serveConfigV2"])
    entry = doc["applications"][0]["deployments"][1]
    del entry["num_replicas"]
    entry["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 4}
    fake.write(*RS, {"spec": {"serveConfigV2": yaml.safe_dump(doc)}})
    serve = actuator(fake)
    assert serve.current_replicas() == {("chat", "h100"): 1}  # an autoscaled count is not fixed

    serve.set_replicas("chat", "l4", 2)
    entry = yaml.safe_load(fake.get(*RS)["spec"]["serveConfigV2"])["applications"][0][
        "deployments"
    ][1]
    assert entry == {"name": "chat@l4", "num_replicas": 2}
    rv = fake.get(*RS)["metadata"]["resourceVersion"]
    serve.set_replicas("chat", "l4", 2)  # already so and already ours: no write
    assert fake.get(*RS)["metadata"]["resourceVersion"] == rv


def test_deployment_named_by_gpu_type_is_managed_as_that_pool(fake):
    fake.add(rayservice({"chat@H100": 1}))
    serve = actuator(fake, pools=lambda: [("h100", "H100"), ("l4", "L4")])
    assert serve.current_replicas() == {("chat", "h100"): 1}
    serve.set_replicas("chat", "h100", 2)
    assert spec_counts(fake) == {"chat@H100": 2}


def test_bad_requests_fail_with_clear_errors(fake):
    serve = actuator(fake)
    with pytest.raises(RayServiceConfigError, match=r"'chat@a100' is not listed .* ml/r1"):
        serve.set_replicas("chat", "a100", 1)
    with pytest.raises(ValueError, match="replicas must be >= 0"):
        serve.set_replicas("chat", "h100", -1)
    fake.write(*RS, {"spec": {"serveConfigV2": "applications: [unclosed"}})
    with pytest.raises(RayServiceConfigError, match="not YAML"):
        serve.current_replicas()
    missing = RayServiceServeActuator(client.CustomObjectsApi(fake.client()), NS, "nope")
    with pytest.raises(ApiException) as e:
        missing.current_replicas()
    assert e.value.status == 404
    assert not [r for r in fake.requests if r.verb == "patch"]


# ------------------------------------------------------------------ optimistic concurrency
def test_conflict_is_retried_on_fresh_state_and_both_changes_survive(fake):
    serve = actuator(fake)
    writes = []

    def concurrent_writer(req):
        # Between the controller's read and its patch, someone else scales chat@l4 and edits
        # the cluster spec.
        if req.verb == "patch" and not writes:
            writes.append(req)
            helm_upgrade(fake, {"chat@h100": 1, "chat@l4": 4})
            fake.write(*RS, {"spec": {"rayClusterConfig": {"rayVersion": "2.60.1"}}})

    fake.hooks.append(concurrent_writer)
    serve.set_replicas("chat", "h100", 3)

    assert spec_counts(fake) == {"chat@h100": 3, "chat@l4": 4}
    assert fake.get(*RS)["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.1"
    verbs = [r.verb for r in fake.requests if r.resource == "rayservices"]
    assert verbs == ["get", "patch", "get", "patch"]  # the 409, then a re-read and a re-patch
    first, second = (r for r in fake.requests if r.verb == "patch")
    assert first.body["metadata"]["resourceVersion"] != second.body["metadata"]["resourceVersion"]


def test_conflicts_are_bounded_and_never_overwrite(fake):
    serve = actuator(fake, max_attempts=3)
    n = iter(range(2, 100))

    def always_first(req):
        if req.verb == "patch":
            helm_upgrade(fake, {"chat@h100": 1, "chat@l4": next(n)})

    fake.hooks.append(always_first)
    with pytest.raises(RayServiceConflictError, match=r"ml/r1 changed under each of 3 attempts"):
        serve.set_replicas("chat", "h100", 3)
    assert len([r for r in fake.requests if r.verb == "patch"]) == 3
    assert spec_counts(fake) == {"chat@h100": 1, "chat@l4": 4}  # the other writer's last state
    assert serve.owned == {}  # nothing recorded as set


# ------------------------------------------------------------------ replica ownership
def _controller(fake, tmp_path, serve, rate=80.0):
    fleet = Fleet(
        pools=[
            Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=8),
            Pool(name="l4", gpu="L4", nodes=1, gpus_per_node=4),
        ],
        catalog=load_catalog(),
    )
    wl = Workloads(
        serving=[chat(rate)],
    )
    path = str(tmp_path / "decisions.jsonl")
    serve.record_path = path
    clock = iter(float(t) for t in range(1000, 10**6, 30))
    ctl = Controller(
        fleet,
        wl,
        StaticLoad(wl),
        serve,
        MemoryCapacity(),
        MemoryTraining(),
        ControllerConfig(),
        record_path=path,
        clock=lambda: next(clock),
    )
    serve.cycle = lambda: ctl.mem.cycle
    return ctl, path


def test_helm_upgrade_reset_is_restored_within_one_cycle(fake, tmp_path):
    serve = actuator(fake)
    ctl, path = _controller(fake, tmp_path, serve)
    first = ctl.step()
    scaled = {(d.target, d.pool): d.after for d in first if d.kind == "scale"}
    n = scaled[("chat", "h100")]
    assert n > CHART["chat@h100"]  # the load needs more than the chart's count
    assert spec_counts(fake)["chat@h100"] == n

    helm_upgrade(fake)
    assert spec_counts(fake)["chat@h100"] == 1
    _SPANS.clear()
    second = ctl.step()

    assert spec_counts(fake)["chat@h100"] == n  # back after one cycle
    assert not [d for d in second if d.kind == "scale" and d.target == "chat"]  # saw n, not 1
    restores = [d for d in rec.read_last(50, path) if d.kind == "restore"]
    assert [(d.cycle, d.target, d.pool, d.before, d.after) for d in restores] == [
        (2, "chat", "h100", 1, n)
    ]
    assert "helm upgrade" in restores[0].reason
    spans = {s.name: s for s in _SPANS.get_finished_spans()}
    restore = spans["pools.restore"]
    assert (restore.attributes["before"], restore.attributes["after"]) == (1, n)
    assert restore.parent.span_id == spans["pools.reconcile"].context.span_id
    assert restores[0].trace_id == f"{restore.context.trace_id:032x}"
    assert spans["pools.reconcile"].attributes["serve.replicas_restored"] == f"chat@h100:1->{n}"


def test_ownership_survives_a_controller_restart(fake):
    actuator(fake).set_replicas("chat", "h100", 5)
    helm_upgrade(fake)  # the upgrade also rolled the controller pod: its memory is gone
    fresh = actuator(fake, record=False)
    assert fresh.current_replicas()[("chat", "h100")] == 5
    assert spec_counts(fake)["chat@h100"] == 5
    assert fresh.restores == [("chat@h100", 1, 5)]


def test_a_deployment_the_chart_dropped_is_not_re_added(fake):
    serve = actuator(fake, record=False)
    serve.set_replicas("chat", "l4", 3)
    helm_upgrade(fake, {"chat@h100": 1})  # the model left the l4 pool
    assert serve.current_replicas() == {("chat", "h100"): 1}
    assert spec_counts(fake) == {"chat@h100": 1}
    assert not serve.restores


# ------------------------------------------------------------------ discovery
def _configured() -> Fleet:
    return Fleet(
        pools=[
            Pool(name="h100", gpu="H100", nodes=1, gpus_per_node=8, max_nodes=4),
            Pool(name="l4", gpu="L4", nodes=0, gpus_per_node=4, max_nodes=2),
            Pool(name="a100", gpu="A100-80G", nodes=1, gpus_per_node=8, max_nodes=1),
        ],
        catalog=load_catalog(),
    )


def test_k8s_discovery_merges_live_nodes_over_the_pools_file(fake):
    fake.add(node("gpu-x", "unmanaged", "NVIDIA-L4", 4))
    core = client.CoreV1Api(fake.client())
    fleet = k8s_live_fleet(_configured(), core)()
    by = {p.name: p for p in fleet.pools}
    assert set(by) == {"h100", "l4", "a100"}  # pools the file does not name are not managed
    assert (by["h100"].nodes, by["h100"].max_nodes) == (2, 4)  # live count, file's range
    assert (by["l4"].nodes, by["l4"].max_nodes) == (1, 2)
    assert by["a100"].nodes == 1  # nothing discovered: as configured
    lists = [r for r in fake.requests if r.verb == "list"]
    assert [r.query["labelSelector"] for r in lists] == ["nvidia.com/gpu.product"]


def test_ray_view_goes_over_k8s_and_errors_keep_the_previous_view(fake):
    core = client.CoreV1Api(fake.client())
    ray_nodes = [
        {
            "Alive": True,
            "Resources": {"GPU": 8.0, "CPU": 32.0},
            "Labels": {"ray.io/accelerator-type": "H100", "r1p.pool": "h100"},
        }
    ]
    fleet = k8s_live_fleet(_configured(), core, lambda: ray_nodes)()
    h100 = next(p for p in fleet.pools if p.name == "h100")
    assert (h100.nodes, h100.max_nodes) == (1, 4)  # Ray has joined one of the two k8s nodes

    def broken():
        raise ConnectionError("GCS unavailable")

    fleet = k8s_live_fleet(_configured(), core, broken)()
    assert next(p for p in fleet.pools if p.name == "h100").nodes == 2  # the k8s view stands
    fake.rules["controller"] = set()  # every API call now refused (403)
    fleet = k8s_live_fleet(_configured(), core)()
    assert fleet == _configured()


# ------------------------------------------------------------------ RBAC
def test_rbac_rules_are_exactly_the_calls_made(fake, tmp_path):
    """A full exercise (discovery, reads, scaling, a conflict, a restore, a controller cycle)
    under an API server that enforces RBAC_RULES: nothing is refused, and every rule is used."""
    fake.allow("controller", rbac_calls())
    conflicted = []

    def once(req):
        if req.verb == "patch" and req.user == "controller" and not conflicted:
            conflicted.append(req)
            helm_upgrade(fake, {"chat@h100": 1, "chat@l4": 2})

    fake.hooks.append(once)
    k8s_live_fleet(_configured(), client.CoreV1Api(fake.client()))()
    serve = actuator(fake)
    serve.set_replicas("chat", "h100", 2)
    helm_upgrade(fake)
    ctl, _ = _controller(fake, tmp_path, serve)
    ctl.step()

    assert conflicted and spec_counts(fake)["chat@h100"] >= 2
    assert fake.calls("controller") == rbac_calls()
    assert not any(
        r.verb in ("create", "update", "delete", "deletecollection") for r in fake.requests
    )


def test_rbac_rules_shape():
    assert all(r.verbs and "*" not in r.verbs and r.resource != "*" for r in RBAC_RULES)
    assert {(r.api_group, r.resource) for r in RBAC_RULES} >= CLUSTER_SCOPED
    assert rbac_calls() == {
        ("", "nodes", "list"),
        ("ray.io", "rayservices", "get"),
        ("ray.io", "rayservices", "patch"),
    }


def test_fake_refuses_calls_outside_the_rules(fake):
    fake.allow("controller", {("ray.io", "rayservices", "get")})
    with pytest.raises(ApiException) as e:
        actuator(fake).set_replicas("chat", "h100", 2)
    assert e.value.status == 403


# ------------------------------------------------------------------ wiring helpers
def test_ray_auth_env_turns_token_mode_on_only_with_a_token():
    assert ray_auth_env({"RAY_AUTH_TOKEN": "t"}) == {"RAY_AUTH_MODE": "token"}
    assert ray_auth_env({"RAY_AUTH_TOKEN_PATH": "/var/run/ray/token"}) == {"RAY_AUTH_MODE": "token"}
    assert ray_auth_env({"RAY_AUTH_TOKEN": "t", "RAY_AUTH_MODE": "disabled"}) == {}
    assert ray_auth_env({}) == {}


def test_gcs_address_is_the_ray_client_hosts_gcs_port():
    assert gcs_address_for("ray://r1-head-svc:10001") == "r1-head-svc:6379"
    assert gcs_address_for("ray://10.0.0.7:10001") == "10.0.0.7:6379"
    assert gcs_address_for("10.0.0.7:6379") is None  # a driver with its own GCS client
    assert gcs_address_for("auto") is None


def test_default_namespace_prefers_the_pods_own(tmp_path, monkeypatch):
    sa = tmp_path / "namespace"
    sa.write_text("serving\n")
    assert default_namespace(sa) == "serving"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    assert default_namespace(tmp_path / "missing") == "default"


# ------------------------------------------------------------------ r1p control --kubernetes
def _control(tmp_path, *args):
    import typer
    from r1platform.pools.cli import register
    from typer.testing import CliRunner

    (tmp_path / "pools.yaml").write_text(
        "pools:\n"
        "  - {name: h100, gpu: H100, nodes: 1, gpus_per_node: 8, min_nodes: 0, max_nodes: 4}\n"
        "  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 4, min_nodes: 0, max_nodes: 2}\n"
    )
    (tmp_path / "workloads.yaml").write_text(
        "serving:\n"
        "  - {name: chat, model: r1-distill-qwen-7b, request_rate: 80, avg_input_tokens: 500,\n"
        "     avg_output_tokens: 800, slo: {ttft_p99_s: 2.0, tpot_p99_s: 0.03}}\n"
    )
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    base = [
        "control",
        "--pools",
        tmp_path / "pools.yaml",
        "--workloads",
        tmp_path / "workloads.yaml",
    ]
    return CliRunner().invoke(app, [str(a) for a in [*base, *args]])


def test_control_kubernetes_wires_the_k8s_actuators(fake, tmp_path, monkeypatch):
    import ray
    from r1platform.pools.k8s import wiring

    inits, asks = [], []
    monkeypatch.setattr(ray, "init", lambda **kw: inits.append(kw))
    monkeypatch.setattr(ray, "nodes", lambda: [])
    monkeypatch.setattr(wiring, "load_api_client", lambda: fake.client())
    monkeypatch.setattr(
        wiring.GcsAutoscalerCapacity, "request", lambda self, g: asks.append((self.gcs_address, g))
    )
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("R1P_K8S_RAYSERVICE", NAME)
    fake.allow("controller", rbac_calls())
    r = _control(
        tmp_path,
        "--kubernetes",
        "--namespace",
        NS,
        "--address",
        "ray://r1-head-svc:10001",
        "--metrics-url",
        "http://127.0.0.1:9/metrics",
        "--decisions-file",
        tmp_path / "d.jsonl",
        "--once",
    )
    assert r.exit_code == 0, r.output
    assert [(i["address"], i["namespace"]) for i in inits] == [
        ("ray://r1-head-svc:10001", "r1platform")
    ]
    import os

    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert spec_counts(fake)["chat@h100"] > 1  # scaled through serveConfigV2
    assert asks and asks[0][0] == "r1-head-svc:6379" and set(asks[0][1]) == {"h100", "l4"}
    assert asks[0][1]["h100"] > 0
    assert fake.calls("controller") <= rbac_calls()
    assert [d.kind for d in rec.read_last(10, tmp_path / "d.jsonl")] == ["scale"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kubernetes", "--rayservice", "r1"], "--kubernetes needs --address"),
        (["--kubernetes", "--address", "ray://h:10001"], "--kubernetes needs --rayservice"),
        (["--kubernetes", "--actor", "--address", "a", "--rayservice", "r"], "not for --actor"),
        (["--metrics-port", "0"], "--metrics-port"),
    ],
)
def test_control_kubernetes_bad_flags(tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("R1P_K8S_RAYSERVICE", raising=False)
    r = _control(tmp_path, *args)
    assert r.exit_code != 0
    assert message in r.output.replace("\n", " ")

"""`r1p control --kubernetes` as the chart's controller pod runs it, against a real Ray head.

A Ray head with token auth on holds a virtual 8-GPU H100 pool. The controller runs in its own
process and connects over Ray Client (`ray://`) with only RAY_AUTH_TOKEN set, as the pod gets
it from the Secret. Its Kubernetes API is the in-process fake from the unit tests, served over
HTTP through a kubeconfig and enforcing RBAC_RULES. One cycle must do three things:
- scale `chat@h100` in the RayService's serveConfigV2 with a resourceVersion precondition;
- leave the worker group's replicas alone;
- put the pool's node bundles into the GCS as autoscaler v2 resource constraints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from r1platform.contracts.net import free_port
from r1platform.pools import decisions as rec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))  # the fake API server lives with the unit tests
from k8s_fake import FakeKube, kubeconfig, serve_http  # noqa: E402

pytestmark = pytest.mark.integration
RAY = str(Path(sys.executable).with_name("ray"))
R1P = str(Path(sys.executable).with_name("r1p"))
TOKEN = "k8s-controller-test-token"
NS, NAME = "ml", "r1"
POOLS = (
    "pools:\n  - {name: h100, gpu: H100, nodes: 1, gpus_per_node: 8, min_nodes: 0, max_nodes: 4}\n"
)
WORKLOADS = (
    "serving:\n"
    "  - {name: chat, model: r1-distill-qwen-7b, request_rate: 80, avg_input_tokens: 500,\n"
    "     avg_output_tokens: 800, slo: {ttft_p99_s: 2.0, tpot_p99_s: 0.03}}\n"
)
SERVE_CONFIG = {
    "http_options": {"host": "0.0.0.0", "port": 8000},
    "applications": [
        {
            "name": "r1",
            "route_prefix": "/",
            "import_path": "serve_apps.r1_chat:app",
            "deployments": [{"name": "chat@h100", "num_replicas": 1}],
        }
    ],
}
WORKERS = [{"groupName": "h100", "replicas": 1, "minReplicas": 0, "maxReplicas": 4}]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    return {**env, **extra}


@pytest.fixture
def ray_head(tmp_path):
    # The GCS on KubeRay's port: the controller derives `<head>:6379` from its ray:// address.
    gcs, client = 6379, free_port()
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    start = [
        RAY,
        "start",
        "--head",
        f"--port={gcs}",
        f"--ray-client-server-port={client}",
        "--num-cpus=2",
        "--num-gpus=0",
        '--resources={"pool:h100": 8, "accelerator_type:H100": 8}',
        "--labels=r1p.pool=h100",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    out = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    try:
        yield f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_control_kubernetes_one_cycle_over_ray_client(ray_head, tmp_path):
    gcs, client_address, head_env = ray_head
    fake = FakeKube()
    fake.add(
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "serveConfigV2": yaml.safe_dump(SERVE_CONFIG),
                "rayClusterConfig": {"rayVersion": "2.60.0", "workerGroupSpecs": WORKERS},
            },
        }
    )
    from r1platform.pools.k8s import rbac_calls

    fake.allow("controller", rbac_calls())
    url, httpd = serve_http(fake)
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig(url, NS)))
    (tmp_path / "pools.yaml").write_text(POOLS)
    (tmp_path / "workloads.yaml").write_text(WORKLOADS)
    decisions = tmp_path / "decisions.jsonl"
    try:
        run = subprocess.run(
            [
                R1P,
                "control",
                "--kubernetes",
                "--pools",
                str(tmp_path / "pools.yaml"),
                "--workloads",
                str(tmp_path / "workloads.yaml"),
                "--address",
                client_address,
                "--rayservice",
                NAME,
                "--metrics-url",
                "http://127.0.0.1:9/metrics",  # no load endpoint: plan from the file's rate
                "--decisions-file",
                str(decisions),
                "--once",
            ],
            # What the pod has: the token from the Secret (no mode), a kubeconfig-less API
            # access here replaced by KUBECONFIG; the namespace from the kubeconfig context.
            env=_env(RAY_AUTH_TOKEN=TOKEN, KUBECONFIG=str(tmp_path / "kubeconfig")),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        httpd.shutdown()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    stored = fake.get("ray.io", "rayservices", NS, NAME)
    doc = yaml.safe_load(stored["spec"]["serveConfigV2"])
    (entry,) = doc["applications"][0]["deployments"]
    recorded = rec.read_last(20, decisions)
    assert not [d for d in recorded if d.error], recorded  # capacity asks are recorded on error
    scales = [d for d in recorded if d.kind == "scale"]
    assert [(d.target, d.pool, d.before, d.applied) for d in scales] == [("chat", "h100", 1, True)]
    assert entry == {"name": "chat@h100", "num_replicas": scales[0].after}
    assert stored["spec"]["rayClusterConfig"]["workerGroupSpecs"] == WORKERS
    patches = [r for r in fake.requests if r.verb == "patch"]
    assert patches and all("resourceVersion" in p.body["metadata"] for p in patches)
    assert fake.calls("controller") <= rbac_calls()

    # The capacity ask reached the GCS as autoscaler v2 cluster resource constraints.
    probe = (
        "import json; from google.protobuf.json_format import MessageToDict;"
        "from ray._raylet import GcsClient;"
        "from ray.autoscaler.v2.sdk import get_cluster_resource_state;"
        f"s = get_cluster_resource_state(GcsClient({gcs!r}));"
        "print(json.dumps(MessageToDict(s)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=head_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    constraints = json.loads(out.stdout.strip().splitlines()[-1]).get(
        "clusterResourceConstraints", []
    )
    text = json.dumps(constraints)
    assert "pool:h100" in text and "r1p.pool" in text, constraints

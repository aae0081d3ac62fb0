"""A replica whose pipeline stages run on two nodes, live: a local Ray cluster with a head and
three virtual nodes of one simulated pool (one GPU unit each), the app deployed through
Serve's REST API as `r1p up` deploys it, real vLLM CPU engines.

`tiny-pp2` has pipeline_parallel_size=2: its placement group (PACK, one bundle per GPU unit)
lands on two nodes, and its stages run under vLLM's multiprocessing executor with one vLLM
"node" per Ray node (`nnodes=2`; stage 1 in a StageHost actor in the other node's bundle).
`tiny-r1` is the same model as one stage, hosted inside the ingress.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

POOL = "mn"
STAGED = "tiny-pp2"
STAGED_DEPLOYMENT = f"{STAGED}@{POOL}"
PROMPTS = ["12+35", "7*8=", "hello there"]


def settings_yaml(staged_pp: int) -> str:
    return (
        "serve: {placement: simulated}\n"
        "models:\n"
        "  tiny-r1: {}\n"
        f"  {STAGED}: {{pool: {POOL}, pipeline_parallel_size: {staged_pp}}}\n"
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    import ray
    from r1platform import localcluster
    from r1platform.contracts.net import free_port
    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.pools.fleet import Pool, node_resources
    from ray import serve
    from ray.cluster_utils import Cluster

    ensure_tiny_model()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the REST client below sends no token
    dash = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "gcs_server_port": free_port(),
            "dashboard_agent_listen_port": free_port(),
            "num_cpus": 4,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dash,
        },
    )
    unit = node_resources(Pool(name=POOL, gpu="L4", nodes=1, gpus_per_node=1))
    for _ in range(3):
        cluster.add_node(num_cpus=2, resources=unit)
    ray.init(address=cluster.address)
    tmp = tmp_path_factory.mktemp("multinode")
    cfg = tmp / "pp2.yaml"
    cfg.write_text(settings_yaml(2))
    port = free_port()
    dashboard = f"http://127.0.0.1:{dash}"
    t0 = time.monotonic()
    localcluster.deploy_serve_app(dashboard, str(cfg), port)
    base = f"http://127.0.0.1:{port}"
    assert localcluster.wait_for_models(base, ["tiny-r1", STAGED], timeout_s=300)
    print(f"\n[multinode] app up in {time.monotonic() - t0:.0f}s")
    yield {"base": base, "dashboard": dashboard, "port": port, "tmp": tmp}
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def staged_where() -> dict:
    from ray import serve

    handle = serve.get_deployment_handle(STAGED_DEPLOYMENT, app_name="r1")
    return handle.where.remote().result(timeout_s=60)


def pool_placement_groups() -> list[dict]:
    from ray.util import placement_group_table

    return [
        pg
        for pg in placement_group_table().values()
        if pg["state"] == "CREATED" and any(f"pool:{POOL}" in b for b in pg["bundles"].values())
    ]


def greedy_tokens(base: str, model: str, prompt: str) -> list[str]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 48,
        "temperature": 0,
        "logprobs": True,
    }
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    tokens = [t["token"] for t in choice["logprobs"]["content"]]
    assert tokens, "the model generated nothing"
    return tokens


def test_the_two_stages_run_on_the_two_nodes_the_placement_group_gave(fleet):
    import ray

    (pg,) = pool_placement_groups()
    bundle_nodes = [pg["bundles_to_node_id"][i] for i in range(len(pg["bundles"]))]
    assert len(bundle_nodes) == 2 and bundle_nodes[0] != bundle_nodes[1], bundle_nodes
    pool_nodes = {
        n["NodeID"] for n in ray.nodes() if n["Alive"] and f"pool:{POOL}" in n["Resources"]
    }
    assert set(bundle_nodes) <= pool_nodes, "both stages on nodes of the pool"
    where = staged_where()
    stages = where["stages"]
    assert [s["node_id"] for s in stages] == bundle_nodes, "stage s runs in bundle s's node"
    assert where["node_id"] == bundle_nodes[0], "the replica (vLLM's driver) holds stage 0"
    for s in stages:
        assert s["workers"], f"no vLLM worker process under the stage host on {s['node_id']}"
    assert stages[0]["pid"] != stages[1]["pid"]


def test_the_staged_replica_answers_chat_token_for_token_like_one_stage(fleet):
    for prompt in PROMPTS:
        one = greedy_tokens(fleet["base"], "tiny-r1", prompt)
        two = greedy_tokens(fleet["base"], STAGED, prompt)
        assert two == one, f"{prompt!r}: PP2 {two} != PP1 {one}"


class Traffic:
    """Streaming chat requests to one model, back to back from a few threads, until stopped."""

    def __init__(self, base: str, model: str, threads: int = 2):
        self.base, self.model = base, model
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _one(self, client: httpx.Client) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "12+35"}],
            "max_tokens": 24,
            "stream": True,
        }
        with client.stream("POST", f"{self.base}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                self.failed.append(f"HTTP {r.status_code}: {r.read()[:200]!r}")
                return
            lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
        if lines[-1:] != ["data: [DONE]"] or any('"error"' in ln for ln in lines):
            self.failed.append(f"stream ended badly: {lines[-2:]}")
            return
        self.ok += 1

    def _loop(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                try:
                    self._one(client)
                except httpx.HTTPError as err:
                    self.failed.append(f"{type(err).__name__}: {err}")

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=150)


def test_changing_pp_rolls_the_deployment_without_a_failed_request(fleet):
    """PP2 -> PP1 through a redeploy: Serve starts the new replica (surge) while the old one
    serves, then drains the old one. Requests stream throughout; none may fail."""
    from r1platform import localcluster
    from ray import serve

    def replica_states() -> dict[str, int] | None:
        app = serve.status().applications.get("r1")
        dep = app.deployments.get(STAGED_DEPLOYMENT) if app else None
        return dict(dep.replica_states) if dep else None  # None: between two app builds

    cfg = Path(fleet["tmp"]) / "pp1.yaml"
    cfg.write_text(settings_yaml(1))
    seen: list[dict[str, int]] = []
    t0 = time.monotonic()
    with Traffic(fleet["base"], STAGED) as traffic:
        time.sleep(2)  # requests in flight before the change
        localcluster.deploy_serve_app(fleet["dashboard"], str(cfg), fleet["port"])
        deadline = time.monotonic() + 480
        while True:
            states = replica_states()
            if states is None:
                time.sleep(0.25)
                continue
            seen.append(states)
            if states == {"RUNNING": 1} and len(staged_where()["stages"]) == 1:
                break
            assert time.monotonic() < deadline, f"rollout not done: {seen[-5:]}"
            time.sleep(0.25)
        during = traffic.ok
        time.sleep(4)  # and after it, on the new layout
    print(
        f"\n[multinode] rollout {time.monotonic() - t0:.0f}s, {traffic.ok} requests "
        f"({during} until the old replica was gone), states seen: "
        + json.dumps(sorted({json.dumps(s, sort_keys=True) for s in seen}))
    )
    assert traffic.failed == [], traffic.failed[:5]
    assert during > 0 and traffic.ok > during
    assert all(s.get("RUNNING", 0) >= 1 for s in seen), "a moment with no running replica"
    assert any(sum(s.values()) >= 2 for s in seen), "the new replica never ran beside the old"
    # Serve removes a stopped replica's placement group right after the replica.
    pgs = wait_for(
        lambda: (lambda p: p if len(p) == 1 else None)(pool_placement_groups()),
        "the old two-node placement group to go",
        timeout=60,
    )
    assert len(pgs[0]["bundles"]) == 1

"""`serve.ingress: haproxy` on the local cluster, tried as a user would (budget: 4 min).

`r1p up` with the setting -> HAProxy listens on serve.port and forwards to the ingress
replica's own HTTP server (Serve's direct ingress), not through Serve's proxy actor -> a streamed
chat completion, a refused key and a bad request all answer as they do through the proxy
-> `r1p down` leaves no HAProxy behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
R1P = str(Path(sys.executable).with_name("r1p"))
KEY = "sk-haproxy-test"
POOLS = "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 1, min_nodes: 1, max_nodes: 1}\n"
SETTINGS = (
    "serve: {ingress: haproxy, port: 8011}\n"
    f"api_keys: [{KEY}]\n"
    "models:\n  tiny-r1: {pool: l4, max_model_len: 256}\n"
)
BASE = "http://127.0.0.1:8011"


def r1p(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_ENABLE_")}
    return subprocess.run(
        [R1P, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def processes(name: str) -> list[str]:
    """Live processes whose name or program is `name` (not any that merely mention it).

    Zombies are left out: Serve replaces HAProxy on every config change (`-sf` the old pid),
    and the old process stays a zombie, named `haproxy` with no command line, until Serve's
    event loop reaps it. CI once picked such a zombie as "the" HAProxy and found no `-f`.
    """
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        argv = p.info.get("cmdline") or [""]
        if p.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if p.info.get("name") == name or Path(argv[0]).name == name:
            found.append(" ".join(argv))
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("haproxy")
    (d / "pools.yaml").write_text(POOLS)
    (d / "settings.yaml").write_text(SETTINGS)
    up = r1p("up", "--pools", str(d / "pools.yaml"), "--config", str(d / "settings.yaml"))
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        yield d
    finally:
        down = r1p("down", timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


def test_no_proxy_actor_and_haproxy_in_front(cluster):
    from r1platform import localcluster

    state = localcluster.load_state()
    assert state is not None and state.ingress == "haproxy"
    running = processes("haproxy")
    assert running, "HAProxy is not running"
    assert httpx.get(f"{BASE}/health", timeout=10).status_code == 200
    # HAProxy's backends are the ingress replicas' own HTTP servers (Serve's direct ingress),
    # each answering by itself; Serve's proxy actor is only the backup server.
    # Serve adds a replica to HAProxy's config after it is ready, asynchronously; until then
    # the backup server (the proxy actor) answers /health. Wait for the replica entry.
    # Several may be alive at once while an old one drains after a reload; all read one file.
    argv = running[0].split()
    path, deadline = Path(argv[argv.index("-f") + 1]), time.monotonic() + 60
    while True:
        cfg = path.read_text()
        replicas = re.findall(r"^\s*server (\S+) (\S+):(\d+) check(?!.*backup)", cfg, re.M)
        if replicas or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert replicas, cfg
    for _, host, port in replicas:
        assert httpx.get(f"http://{host}:{port}/health", timeout=10).status_code == 200


def test_streamed_chat_through_haproxy(cluster):
    body = {
        "model": "tiny-r1",
        "messages": [{"role": "user", "content": "What is 2+3?"}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    events = []
    with httpx.stream(
        "POST", f"{BASE}/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_client_mistakes_are_4xx_through_haproxy(cluster):
    url = f"{BASE}/v1/chat/completions"
    body = {"model": "tiny-r1", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    bad = httpx.post(
        url,
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert bad.status_code == 400, bad.text
    assert KEY not in bad.text


def test_down_leaves_no_haproxy(cluster):
    down = r1p("down", timeout=120)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not processes("haproxy"), processes("haproxy")

"""The `r1p up` pool scene the controller scenarios share (tests/integration/test_pools_cycle.py,
test_controller_fault.py): Ray head + a virtual L4 node with 4 `pool:l4` units, one tiny-r1
Serve deployment on vLLM CPU engines, `r1p control` with minutes made seconds, and open-loop
chat bursts against Serve."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
R1P = str(Path(sys.executable).with_name("r1p"))
DASHBOARD = "http://127.0.0.1:8265"
POOLS = "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 4, min_nodes: 1, max_nodes: 1}\n"
# Serving replicas take 0.25 of the virtual node's 2 CPUs, so 3 replicas + 1 train worker, or
# 1 replica + 2 workers, fit beside each other: the pool's 4 GPU units are the constraint.
SETTINGS = """models:
  tiny-r1:
    pool: l4
    num_cpus: 0.25
    max_model_len: 256
    autoscaling: {min_replicas: 1, max_replicas: 1}
serve: {host: 127.0.0.1, port: %d}
"""
# Minutes become seconds; the policy is the production one.
CONTROL_ENV = {
    "R1P_CONTROL_LEND_RESERVE": "0",
    "R1P_CONTROL_LOOKAHEAD_S": "0",
    "R1P_CONTROL_RATE_WINDOW_S": "30",
    "R1P_CONTROL_DOWN_COOLDOWN_S": "30",
    "R1P_CONTROL_DOWN_STABILIZATION_S": "30",
    "R1P_CONTROL_LEND_COOLDOWN_S": "30",
}


def running_replicas() -> int:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    details = ServeSubmissionClient(DASHBOARD).get_serve_details()
    dep = details["applications"]["r1"]["deployments"]["tiny-r1@l4"]
    return sum(1 for r in dep.get("replicas", []) if r.get("state") == "RUNNING")


class Burst:
    """Open-loop chat requests at a fixed arrival rate until stopped (one thread per request,
    so slow answers never bunch later arrivals together); every answer must be a 200."""

    def __init__(self, base: str, rps: float) -> None:
        self.base, self.rps = base, rps
        self.stop_at: float | None = None
        self.codes: list[int] = []
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> None:
        body = {"model": "tiny-r1", "messages": [{"role": "user", "content": "3+4"}],
                "max_tokens": 8}  # fmt: skip
        try:
            r = httpx.post(f"{self.base}/v1/chat/completions", json=body, timeout=300)
            self.codes.append(r.status_code)
        except httpx.HTTPError as e:
            self.errors.append(repr(e))

    def _run(self) -> None:
        t0 = time.monotonic()
        i = 0
        while self.stop_at is None:
            t = threading.Thread(target=self._one, daemon=True)
            t.start()
            self.threads.append(t)
            i += 1
            time.sleep(max(0.0, t0 + i / self.rps - time.monotonic()))

    def start(self) -> Burst:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_at = time.monotonic()
        self.thread.join()
        for t in self.threads:
            t.join(timeout=300)


def up_cluster(tmp_path_factory: Any, name: str, workloads: str) -> Iterator[dict[str, Any]]:
    """`r1p up` with POOLS and SETTINGS, workloads.yaml written beside them; yields the folder and
    Serve's base URL, and takes the cluster down after (a module fixture's body)."""
    from r1platform.contracts.net import free_port
    from r1platform.localcluster import local_env, use_cluster_auth
    from r1platform.models.tiny import ensure_tiny_model

    ensure_tiny_model()
    d = tmp_path_factory.mktemp(name)
    port = free_port()
    (d / "pools.yaml").write_text(POOLS)
    (d / "settings.yaml").write_text(SETTINGS % port)
    (d / "workloads.yaml").write_text(workloads)
    os.environ.update(local_env())  # RAY_AUTH_MODE etc. for the Jobs/Serve REST clients here
    up = subprocess.run(
        [R1P, "up", "--pools", str(d / "pools.yaml"), "--config", str(d / "settings.yaml")],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        use_cluster_auth()  # token auth is on: the Jobs client and `r1p control` present it
        yield {"dir": d, "base": f"http://127.0.0.1:{port}"}
    finally:
        subprocess.run([R1P, "down"], capture_output=True, cwd=ROOT, timeout=120)


def control_command(d: Path) -> list[str]:
    """`r1p control` on the scene's pools and workloads, every 2 s, decisions to a JSONL file."""
    return [R1P, "control", "-p", str(d / "pools.yaml"), "-w", str(d / "workloads.yaml"),
            "--address", "127.0.0.1:6379", "--dashboard", DASHBOARD, "--interval", "2",
            "--decisions-file", str(d / "decisions.jsonl")]  # fmt: skip


def submit_grpo(jobs: Any, run_name: str, workers: int, b: int, out: Path) -> str:
    """`ray job submit` of jobs/grpo.py in the l4 pool: B prompts x G=4 a step, 32 new tokens,
    no eval or checkpoint of its own (only the resizes take checkpoints), until stopped."""
    args = ["--run_name", run_name, "--train_pool", "l4", "--num_workers", str(workers),
            "--prompts_per_step", str(b), "--group_size", "4", "--max_new_tokens", "32",
            "--eval_size", "8", "--eval_every", "100000", "--save_every", "100000",
            "--max_steps", "100000", "--max_failures", "0", "--no-rollout_compile",
            "--output_dir", str(out)]  # fmt: skip
    return jobs.submit_job(
        entrypoint="python jobs/grpo.py " + " ".join(args),
        runtime_env={"working_dir": str(ROOT),
                     "excludes": [".venv*", ".git", "**/__pycache__", "outputs", "*.egg-info"]},
    )  # fmt: skip

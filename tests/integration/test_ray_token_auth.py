"""Ray token auth on the local cluster, and a clean `r1p down`, tried as a user would.

`r1p up` (token auth on by default) -> a Ray job submitted with the token succeeds, and its
driver joins the cluster over authenticated gRPC -> submissions without it, or with a wrong
one, are refused -> `r1p status` works with the stored token -> `r1p down` leaves no Ray
current-cluster file behind -> `python jobs/grpo.py --max_steps 1` runs on a local Ray of its
own instead of sitting in GCS timeouts on the dead head, even when a crash left the file.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
R1P = str(Path(sys.executable).with_name("r1p"))
DASHBOARD = "http://127.0.0.1:8265"
GCS = "127.0.0.1:6379"
POOLS = "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 1, min_nodes: 1, max_nodes: 1}\n"
SETTINGS = "models:\n  tiny-r1: {pool: l4}\n"
# What a user's shell has: no auth settings of its own, no RAY_ADDRESS.
USER_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"}
}


def r1p(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [R1P, *args], capture_output=True, text=True, cwd=ROOT, env=USER_ENV, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from r1platform import localcluster, ray_auth

    d = tmp_path_factory.mktemp("auth")
    (d / "pools.yaml").write_text(POOLS)
    (d / "settings.yaml").write_text(SETTINGS)
    # This process talks to the cluster as an outsider: token only where a test passes it.
    ray_auth.apply({"RAY_AUTH_MODE": "disabled"})
    up = r1p(
        "up", "--no-serve", "--pools", str(d / "pools.yaml"), "--config", str(d / "settings.yaml")
    )
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert "token auth on" in up.stdout
        state = localcluster.load_state()
        assert state is not None and state.auth_mode == "token"
        token_file = ray_auth.token_path(localcluster.state_dir())
        yield {"dir": d, "token_file": token_file, "token": token_file.read_text().strip()}
    finally:
        r1p("down", timeout=120)


def _wait_job(client, job_id: str, timeout: float = 90) -> str:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            return status.value
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f}s")


def test_token_file_is_owner_only(cluster):
    mode = stat.S_IMODE(cluster["token_file"].stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert len(cluster["token"]) == 64


def test_job_with_the_token_runs_and_its_driver_joins_over_authenticated_grpc(cluster):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(DASHBOARD, headers={"Authorization": f"Bearer {cluster['token']}"})
    probe = "import ray; ray.init(); print('nodes', len(ray.nodes()))"
    job_id = client.submit_job(entrypoint=f'python -c "{probe}"')
    status = _wait_job(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == "SUCCEEDED", logs[-2000:]
    assert "nodes 2" in logs, logs[-2000:]  # the head and the one virtual l4 node


def test_jobs_api_refuses_a_missing_or_wrong_token(cluster):
    from ray.job_submission import JobSubmissionClient

    body = {"entrypoint": "echo should-not-run"}
    missing = httpx.post(f"{DASHBOARD}/api/jobs/", json=body, timeout=10)
    assert missing.status_code == 401, missing.text
    wrong = httpx.post(
        f"{DASHBOARD}/api/jobs/",
        json=body,
        headers={"Authorization": "Bearer " + "0" * 64},
        timeout=10,
    )
    assert wrong.status_code == 403, wrong.text
    # Ray's own client, with no token, gets Ray's authentication error.
    with pytest.raises(Exception, match=r"(?i)authentication"):
        JobSubmissionClient(DASHBOARD).submit_job(entrypoint="echo should-not-run")
    ok = JobSubmissionClient(DASHBOARD, headers={"Authorization": f"Bearer {cluster['token']}"})
    assert all("should-not-run" not in (j.entrypoint or "") for j in ok.list_jobs())


def test_a_driver_run_by_hand_joins_the_running_cluster_with_the_token(cluster):
    # The join path `python jobs/grpo.py` takes (training.job calls ray_init_address).
    probe = (
        "import ray; from r1platform.localcluster import ray_init_address; "
        "a = ray_init_address(None); ray.init(address=a); print('joined', a, len(ray.nodes()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True, text=True, cwd=ROOT, env=USER_ENV, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"joined {GCS} 2" in out.stdout, out.stdout[-2000:]


def test_r1p_status_presents_the_stored_token(cluster):
    out = r1p("status", timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "l4" in out.stdout and "L4" in out.stdout


def test_down_then_grpo_by_hand_does_not_wait_on_the_dead_head(cluster):
    import psutil
    from r1platform import localcluster, ray_join

    down = r1p("down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert ray_join.read_current_cluster() != GCS, "r1p down left Ray's current-cluster file"
    assert localcluster.load_state() is None
    assert not ray_join.gcs_alive(GCS)
    port = int(GCS.rsplit(":", 1)[1])
    left = [
        " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if "ray.util.client.server" in (p.info["cmdline"] or [])
        and any(a.endswith(f":{port}") for a in p.info["cmdline"])
    ]
    assert not left, f"r1p down left the head's Ray Client server running: {left}"
    # A crash (kill -9, reboot) leaves the file behind too; the job must not trust it.
    ray_join.current_cluster_file().write_text(GCS)
    out = cluster["dir"] / "grpo"
    args = ["--max_steps", "1", "--prompts_per_step", "2", "--group_size", "2",
            "--max_new_tokens", "16", "--eval_size", "4", "--eval_every", "1000",
            "--save_every", "1000", "--no-rollout_compile", "--output_dir", str(out)]  # fmt: skip
    t0 = time.monotonic()
    job = subprocess.run(
        [sys.executable, "jobs/grpo.py", *args],
        capture_output=True, text=True, cwd=ROOT, env=USER_ENV, timeout=240,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert '"status": "SUCCEEDED"' in job.stdout, job.stdout[-3000:]
    assert ray_join.read_current_cluster() != GCS, "the stale file was not cleared"
    print(f"grpo.py --max_steps 1 after r1p down: {took:.0f}s")

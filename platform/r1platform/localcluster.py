"""The embedded local platform: a Ray head plus virtual worker nodes that declare a GPU fleet.

Each virtual node is a real raylet (`ray start`) on this machine whose custom resources stand
for its pool's GPUs, so Ray's scheduler places replicas and training workers on pools exactly
as it would on real GPU nodes. It is labelled *simulated* wherever GPU names are shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from r1platform.contracts import deployment_name
from r1platform.contracts.net import free_port
from r1platform.contracts.resources import POOL_LABEL, pool_key
from r1platform.pools.fleet import Pool, node_labels, node_resources

__all__ = ["free_port"]

RAY_RESERVED_LABEL_PREFIX = "ray.io/"


@dataclass(frozen=True)
class ClusterSpec:
    gcs_port: int = 6379
    dashboard_port: int = 8265
    head_cpus: int = 4
    node_cpus: int = 2
    node_object_store_bytes: int = 150 * 1024**2


@dataclass
class ClusterState:
    gcs_address: str
    dashboard_url: str
    serve_url: str
    pools: list[str]
    started_at: float


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def head_command(spec: ClusterSpec, agent_port: int) -> list[str]:
    # Every raylet's dashboard agent binds a fixed port (52365) unless told otherwise; several
    # nodes on one host would collide and the head would lose the agent that runs Ray jobs.
    return [
        ray_bin(), "start", "--head",
        "--node-ip-address", "127.0.0.1",
        "--port", str(spec.gcs_port),
        "--num-cpus", str(spec.head_cpus),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(spec.dashboard_port),
        "--disable-usage-stats",
        "--labels", "r1p.role=head",
        "--dashboard-agent-listen-port", str(agent_port),
    ]  # fmt: skip


def virtual_node_commands(
    pools: list[Pool], spec: ClusterSpec, agent_ports: list[int]
) -> list[list[str]]:
    cmds = []
    ports = iter(agent_ports)
    for pool in pools:
        # Ray reserves ray.io/* labels for itself; real GPU nodes get ray.io/accelerator-type
        # from Ray, virtual ones carry the same fact under r1p.accelerator-type.
        labels = {k: v for k, v in node_labels(pool).items() if not k.startswith("ray.io/")}
        labels["r1p.accelerator-type"] = pool.gpu
        labels["r1p.simulated"] = "true"
        label_arg = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        for _ in range(pool.nodes):
            cmds.append([
                ray_bin(), "start",
                "--address", f"127.0.0.1:{spec.gcs_port}",
                "--node-ip-address", "127.0.0.1",
                "--num-cpus", str(spec.node_cpus),
                "--object-store-memory", str(spec.node_object_store_bytes),
                "--resources", json.dumps(node_resources(pool)),
                "--labels", label_arg,
                "--dashboard-agent-listen-port", str(next(ports)),
                # One log monitor per host: the head's already tails every node's log files
                # (they share the session dir), and more would print each line N times.
                "--include-log-monitor", "false",
                "--disable-usage-stats",
            ])  # fmt: skip
    return cmds


def state_path() -> Path:
    base = Path(os.environ.get("R1P_CACHE_DIR", Path.home() / ".cache" / "r1platform"))
    return base / "local-cluster.json"


def save_state(state: ClusterState) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(state), indent=2))


def load_state() -> ClusterState | None:
    path = state_path()
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


def local_env() -> dict[str, str]:
    """The embedded cluster is a single-user dev cluster; Ray 2.60 turns token auth on for a
    head when ~/.ray/auth_token exists but not for joining nodes, which then cannot connect.
    One explicit mode for every process of ours keeps them consistent."""
    # Job entrypoints say plain `python`: it must be this environment's interpreter.
    from r1platform.serving.tuning import serve_env

    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        **os.environ,
        **serve_env(),
        "PATH": path,
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    }


def run_checked(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=local_env())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {' | '.join(tail)}")


def wait_http(url: str, timeout_s: float, ok_status: int = 200) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == ok_status:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def session_name(gcs_port: int) -> str | None:
    """The Ray session of the GCS serving gcs_port (every process of a Ray cluster, on every
    node, carries the session name on its command line)."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if not cmdline or not cmdline[0].endswith("gcs_server"):
            continue
        if f"--gcs_server_port={gcs_port}" not in cmdline:
            continue
        for arg in cmdline:
            m = re.search(r"(session_\d{4}-\d\d-\d\d_[\d_]+)", arg)
            if m:
                return m.group(1)
    return None


def wait_for_models(base_url: str, models: list[str], timeout_s: float) -> bool:
    """Until /health is ready and lists exactly these models (a redeploy swaps the app)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base_url}/health", timeout=5)
            if r.status_code == 200 and sorted(r.json().get("models", [])) == sorted(models):
                return True
        except httpx.HTTPError:
            pass
        time.sleep(2)
    return False


def cluster_pids(gcs_port: int) -> list[int]:
    """Processes of *our* cluster only: other Ray clusters on this machine are left alone."""
    import psutil

    session = session_name(gcs_port)
    if session is None:
        return []
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if proc.info["pid"] != os.getpid() and session in cmdline:
            pids.append(proc.info["pid"])
    return pids


def stop_cluster(gcs_port: int, grace_s: float = 5.0) -> int:
    import psutil

    pids = cluster_pids(gcs_port)
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            # vLLM engine cores are children of replica workers; take them down too.
            procs.extend(p.children(recursive=True))
            procs.append(p)
        except psutil.NoSuchProcess:
            continue
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    state_path().unlink(missing_ok=True)
    return len(pids)


# ---- up / status ---------------------------------------------------------------------------
SERVE_APP_NAME = "r1"


def up(pools: list[Pool], spec: ClusterSpec, serve_port: int, log: callable) -> ClusterState:  # type: ignore[valid-type]
    """Start head + virtual nodes, deploy serve_apps.r1_chat:app, wait for /health."""
    existing = load_state()
    if existing and cluster_pids(spec.gcs_port):
        raise RuntimeError(
            f"a local r1p cluster is already running at {existing.gcs_address}; run `r1p down`"
        )
    log("starting Ray head")
    run_checked(head_command(spec, free_port()))
    n_nodes = sum(p.nodes for p in pools)
    for i, cmd in enumerate(
        virtual_node_commands(pools, spec, [free_port() for _ in range(n_nodes)])
    ):
        log(f"starting virtual node {i + 1} ({cmd[cmd.index('--labels') + 1]})")
        run_checked(cmd)
    state = ClusterState(
        gcs_address=f"127.0.0.1:{spec.gcs_port}",
        dashboard_url=f"http://127.0.0.1:{spec.dashboard_port}",
        serve_url=f"http://127.0.0.1:{serve_port}/v1",
        pools=[p.name for p in pools],
        started_at=time.time(),
    )
    save_state(state)
    log("deploying serve_apps.r1_chat:app")
    deploy_serve_app(state.dashboard_url, os.environ["R1P_CONFIG"], serve_port)
    log("waiting for /health")
    if not wait_http(f"http://127.0.0.1:{serve_port}/health", timeout_s=600):
        raise RuntimeError("the serve app did not become healthy within 600 s (see `r1p status`)")
    return state


def engine_deployment_names(config_path: str) -> list[str]:
    """The `model@pool` Serve deployment of every model that settings file serves."""
    from r1platform.config import load_settings
    from r1platform.serving.placement import engine_deployment_name

    before = os.environ.get("R1P_CONFIG")
    os.environ["R1P_CONFIG"] = config_path  # the file the replicas will read
    try:
        settings = load_settings()
    finally:
        if before is None:
            os.environ.pop("R1P_CONFIG")
        else:
            os.environ["R1P_CONFIG"] = before
    return [engine_deployment_name(mid, ms) for mid, ms in settings.models.items()]


def serve_config(config_path: str, port: int) -> dict:
    """Serve's declarative config for the app: the same document a KubeRay RayService carries
    in serveConfigV2, so `r1p control` scales it the same way on both.

    Every `model@pool` deployment is listed from the start. Serve 2.60 merges the app's
    runtime_env into a deployment's actor options only for deployments the config lists, so
    the controller's first replica override on an unlisted one changed its actor options and
    rolled every running replica (minutes of engine start-up, at the start of a burst)."""
    from r1platform.serving.tuning import serve_env

    return {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": SERVE_APP_NAME,
                "route_prefix": "/",
                "import_path": "serve_apps.r1_chat:app",
                "runtime_env": {"env_vars": {"R1P_CONFIG": config_path, **serve_env()}},
                "deployments": [{"name": n} for n in engine_deployment_names(config_path)],
            }
        ],
    }


def deploy_serve_app(dashboard_url: str, config_path: str, port: int) -> None:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    os.environ.update(local_env())
    deadline = time.monotonic() + 60
    while True:  # the dashboard's Serve module comes up a little after the head
        try:
            ServeSubmissionClient(dashboard_url).deploy_applications(
                serve_config(config_path, port)
            )
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def status_report(address: str, dashboard_url: str) -> dict:
    """Nodes with their pools, Serve deployments with the pool of each replica, and jobs."""
    import ray
    from ray import serve
    from ray.util.state import list_actors

    os.environ.update(local_env())
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        nodes = {}
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            labels = n.get("Labels") or {}
            res = n.get("Resources") or {}
            pool = labels.get(POOL_LABEL)
            gpu = labels.get("r1p.accelerator-type") or labels.get("ray.io/accelerator-type")
            gpus = res.get(pool_key(pool), 0) if pool else res.get("GPU", 0)
            nodes[n["NodeID"]] = {
                "node_id": n["NodeID"][:12],
                "role": labels.get("r1p.role", "worker"),
                "pool": pool or "-",
                "gpu": gpu or "-",
                "gpus": int(gpus),
                "simulated": labels.get("r1p.simulated") == "true",
                "cpus": res.get("CPU", 0),
            }
        replicas = []
        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
            if not a.class_name.startswith("ServeReplica:"):
                continue
            _, app, deployment = a.class_name.split(":", 2)
            node = nodes.get(a.node_id, {})
            # Only engine replicas hold pool GPUs; the ingress just happens to sit on a node.
            on_gpu = deployment_name.is_engine(deployment)
            replicas.append({
                "app": app, "deployment": deployment, "actor": a.actor_id[:12],
                "pool": node.get("pool", "?") if on_gpu else "-",
                "gpu": node.get("gpu", "?") if on_gpu else "(cpu only)",
                "node": node.get("node_id", "?"),
            })  # fmt: skip
        apps = {
            name: {
                "status": str(app.status.value if hasattr(app.status, "value") else app.status),
                "deployments": {
                    d: str(ds.status.value if hasattr(ds.status, "value") else ds.status)
                    for d, ds in app.deployments.items()
                },
            }
            for name, app in serve.status().applications.items()
        }
        jobs = []
        try:
            from ray.job_submission import JobSubmissionClient

            for j in JobSubmissionClient(dashboard_url).list_jobs():
                if str(getattr(j.type, "value", j.type)).upper() != "SUBMISSION":
                    continue  # drivers such as `r1p status` itself are not jobs
                jobs.append(
                    {
                        "id": j.submission_id or j.job_id,
                        "status": str(j.status.value),
                        "entrypoint": (j.entrypoint or "")[:60],
                    }
                )
        except Exception as err:  # the dashboard may be starting; status must still print
            jobs.append(
                {"id": "?", "status": f"unavailable: {type(err).__name__}", "entrypoint": ""}
            )
        return {"nodes": list(nodes.values()), "apps": apps, "replicas": replicas, "jobs": jobs}
    finally:
        ray.shutdown()

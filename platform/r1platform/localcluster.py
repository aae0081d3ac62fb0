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

from r1platform import ray_auth, ray_join
from r1platform.config import Settings
from r1platform.contracts.net import free_port
from r1platform.contracts.paths import cache_dir
from r1platform.pools.fleet import Pool, node_labels, node_resources
from r1platform.serving.tuning import Ingress

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
    auth_mode: str = "disabled"  # Ray token auth: "token" or "disabled" (older state files)
    ingress: Ingress = "proxy"  # serve.ingress the cluster was started with (tuning.py)


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
        labels = {
            k: v
            for k, v in node_labels(pool).items()
            if not k.startswith(RAY_RESERVED_LABEL_PREFIX)
        }
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
    return cache_dir() / "local-cluster.json"


def state_dir() -> Path:
    """Where `r1p up` keeps the cluster's state and its Ray auth token."""
    return state_path().parent


def save_state(state: ClusterState) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(state), indent=2))


def load_state() -> ClusterState | None:
    path = state_path()
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


def cluster_auth_env(state: ClusterState | None = None) -> dict[str, str]:
    """The Ray auth environment of the local cluster (`state`, else the running one's).

    One explicit mode for every process of ours: Ray 2.60 decides a process's mode from
    RAY_AUTH_MODE, ~/.ray/auth_token and how it connects, and processes that decide
    differently cannot talk to each other."""
    state = state or load_state()
    return ray_auth.auth_env(state.auth_mode if state else "disabled", state_dir())


def use_cluster_auth(state: ClusterState | None = None) -> dict[str, str]:
    """Put this process in the local cluster's auth mode, for its ray.init and its Jobs/Serve
    REST clients (which then send the token themselves)."""
    env = cluster_auth_env(state)
    ray_auth.apply(env)
    return env


def auth_headers_for(dashboard_url: str) -> dict[str, str]:
    """The Authorization header for the local cluster's dashboard; none for other clusters."""
    state = load_state()
    if state is None or state.dashboard_url != dashboard_url:
        return {}
    return ray_auth.auth_headers(state.auth_mode, state_dir())


def local_env(auth: dict[str, str] | None = None, ingress: Ingress | None = None) -> dict[str, str]:
    """Environment for the local cluster's processes: `auth` and `ingress` (default: the
    running cluster's)."""
    # Job entrypoints say plain `python`: it must be this environment's interpreter.
    from r1platform.serving.tuning import serve_env

    # One read of the state file serves both defaults.
    state = load_state() if ingress is None or auth is None else None
    if ingress is None:
        ingress = state.ingress if state else "proxy"
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        **os.environ,
        **serve_env(ingress),
        "PATH": path,
        **(auth if auth is not None else cluster_auth_env(state)),
    }


def gcs_port_of(state: ClusterState) -> int:
    return int(state.gcs_address.rsplit(":", 1)[1])


def cluster_alive(state: ClusterState | None) -> bool:
    """The one liveness check for the local cluster: its GCS accepts connections, now."""
    return state is not None and ray_join.gcs_alive(state.gcs_address)


def ray_init_address(address: str | None) -> str | None:
    """For anything that joins "a running local Ray" (a GRPO job run by hand, the demo): the
    address to pass to ray.init, after checking the cluster is alive (see ray_join). Joining
    the local r1p cluster puts this process in its auth mode; a dead one's state is removed."""
    state = load_state()
    target = ray_join.join_address(address, state.gcs_address if state else None)
    if state is None:
        return target
    if cluster_alive(state):
        if state.gcs_address in (target, address, os.environ.get(ray_join.RAY_ADDRESS_ENV)):
            use_cluster_auth(state)
    else:
        state_path().unlink(missing_ok=True)
    return target


def run_checked(
    cmd: list[str], auth: dict[str, str] | None = None, ingress: Ingress | None = None
) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=local_env(auth, ingress))
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
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] != os.getpid() and is_cluster_process(cmdline, session, gcs_port):
            pids.append(proc.info["pid"])
    return pids


def is_cluster_process(cmdline: list[str], session: str, gcs_port: int) -> bool:
    """Whether a process belongs to the cluster of this session and GCS port. Ray names the
    session in nearly every process's arguments; the head's Ray Client server is the exception
    (only `--address=<ip>:<gcs port>`), and matching on the session alone left one alive,
    holding port 10001, after every `r1p down`."""
    if session in " ".join(cmdline):
        return True
    if "ray.util.client.server" not in cmdline:
        return False
    return any(a.startswith("--address=") and a.endswith(f":{gcs_port}") for a in cmdline)


def stop_cluster(gcs_port: int, grace_s: float = 5.0) -> int:
    """Stop our cluster's processes and remove what `ray stop` would (Ray's current-cluster
    file, the session_latest link) so nothing later joins the dead head."""
    import psutil

    session = session_name(gcs_port)
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
    gcs_address = f"127.0.0.1:{gcs_port}"
    if not ray_join.gcs_alive(gcs_address):  # never the files of a cluster that still runs
        ray_join.clear_stale_ray_state(gcs_address, session)
    state_path().unlink(missing_ok=True)
    return len(pids)


# ---- up / status ---------------------------------------------------------------------------
SERVE_APP_NAME = "r1"


def up(
    pools: list[Pool],
    spec: ClusterSpec,
    serve_port: int,
    log: callable,  # type: ignore[valid-type]
    *,
    auth: bool = True,
    serve: bool = True,
) -> ClusterState:
    """Start head + virtual nodes (with Ray token auth unless auth=False), then deploy
    serve_apps.r1_chat:app and wait for /health unless serve=False."""
    existing = load_state()
    if existing and cluster_pids(spec.gcs_port):
        raise RuntimeError(
            f"a local r1p cluster is already running at {existing.gcs_address}; run `r1p down`"
        )
    mode = "token" if auth else "disabled"
    if auth:
        ray_auth.ensure_token(state_dir())
    auth_env = ray_auth.auth_env(mode, state_dir())
    # Serve reads the ingress switches when each process starts, so they go in at `ray start`.
    ingress = settings_of(os.environ["R1P_CONFIG"]).serve.ingress if serve else "proxy"
    log(f"starting Ray head (token auth {'on' if auth else 'OFF'})")
    run_checked(head_command(spec, free_port()), auth_env, ingress)
    n_nodes = sum(p.nodes for p in pools)
    for i, cmd in enumerate(
        virtual_node_commands(pools, spec, [free_port() for _ in range(n_nodes)])
    ):
        log(f"starting virtual node {i + 1} ({cmd[cmd.index('--labels') + 1]})")
        run_checked(cmd, auth_env, ingress)
    state = ClusterState(
        gcs_address=f"127.0.0.1:{spec.gcs_port}",
        dashboard_url=f"http://127.0.0.1:{spec.dashboard_port}",
        serve_url=f"http://127.0.0.1:{serve_port}/v1",
        pools=[p.name for p in pools],
        started_at=time.time(),
        auth_mode=mode,
        ingress=ingress,
    )
    save_state(state)
    use_cluster_auth(state)
    if not serve:
        return state
    log("deploying serve_apps.r1_chat:app")
    deploy_serve_app(state.dashboard_url, os.environ["R1P_CONFIG"], serve_port)
    log("waiting for /health")
    if not wait_http(f"http://127.0.0.1:{serve_port}/health", timeout_s=600):
        raise RuntimeError("the serve app did not become healthy within 600 s (see `r1p status`)")
    return state


def settings_of(config_path: str) -> Settings:
    """The settings the replicas will see for this R1P_CONFIG file."""
    from r1platform.config import load_settings

    before = os.environ.get("R1P_CONFIG")
    os.environ["R1P_CONFIG"] = config_path  # the file the replicas will read
    try:
        settings = load_settings()
    finally:
        if before is None:
            os.environ.pop("R1P_CONFIG")
        else:
            os.environ["R1P_CONFIG"] = before
    return settings


def engine_deployment_names(config_path: str) -> list[str]:
    """The `model@pool` Serve deployment of every model that settings file serves."""
    from r1platform.serving.placement import engine_deployment_name

    models = settings_of(config_path).models
    return [engine_deployment_name(mid, ms) for mid, ms in models.items()]


def serve_config(config_path: str, port: int) -> dict:
    """Serve's declarative config for the app: the same document a KubeRay RayService carries
    in serveConfigV2, so `r1p control` scales it the same way on both.

    Every `model@pool` deployment is listed from the start. Serve 2.60 merges the app's
    runtime_env into a deployment's actor options only for deployments the config lists, so
    the controller's first replica override on an unlisted one changed its actor options and
    rolled every running replica (minutes of engine start-up, at the start of a burst)."""
    from r1platform.serving.tuning import serve_env

    # serve.host: loopback by default; 0.0.0.0 where the proxy must be reachable from outside
    # (a Kubernetes pod). Serve applies http_options when it starts, not on a redeploy.
    serve = settings_of(config_path).serve
    return {
        "http_options": {"host": serve.host, "port": port},
        "applications": [
            {
                "name": SERVE_APP_NAME,
                "route_prefix": "/",
                "import_path": "serve_apps.r1_chat:app",
                "runtime_env": {
                    "env_vars": {"R1P_CONFIG": config_path, **serve_env(serve.ingress)}
                },
                "deployments": [{"name": n} for n in engine_deployment_names(config_path)],
            }
        ],
    }


def deploy_serve_app(dashboard_url: str, config_path: str, port: int) -> None:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    headers = auth_headers_for(dashboard_url)
    # Another cluster's dashboard (a test's own ray.init) keeps this process's auth mode.
    os.environ.update(local_env(auth=None if headers else {}))
    deadline = time.monotonic() + 60
    while True:  # the dashboard's Serve module comes up a little after the head
        try:
            ServeSubmissionClient(dashboard_url, headers=headers).deploy_applications(
                serve_config(config_path, port)
            )
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)

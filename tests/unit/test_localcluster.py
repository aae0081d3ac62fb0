import json
import os
import socket
import stat
import time

import pytest
from r1platform import localcluster, ray_auth, ray_join
from r1platform.pools.fleet import load_pools


def test_virtual_nodes_declare_pool_gpus_and_safe_labels():
    pools = load_pools("configs/pools/local.yaml")
    spec = localcluster.ClusterSpec()
    ports = list(range(40000, 40000 + sum(p.nodes for p in pools)))
    cmds = localcluster.virtual_node_commands(pools, spec, ports)
    assert len(cmds) == sum(p.nodes for p in pools)
    l4 = next(c for c in cmds if "r1p.pool=l4" in c[c.index("--labels") + 1])
    resources = json.loads(l4[l4.index("--resources") + 1])
    assert resources == {"pool:l4": 4.0, "accelerator_type:L4": 4.0}
    assert "GPU" not in resources, "a CPU host must not pretend to have CUDA devices"
    for c in cmds:
        labels = c[c.index("--labels") + 1]
        assert "ray.io/" not in labels and "r1p.simulated=true" in labels
        assert c[c.index("--include-log-monitor") + 1] == "false"
    agent_ports = [int(c[c.index("--dashboard-agent-listen-port") + 1]) for c in cmds]
    assert agent_ports == ports, "each raylet on the host needs its own agent port"


def test_head_binds_dashboard_to_loopback():
    cmd = localcluster.head_command(localcluster.ClusterSpec(dashboard_port=9999), 41000)
    assert cmd[cmd.index("--dashboard-host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--dashboard-port") + 1] == "9999"


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("R1P_CACHE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))  # Ray's temp dir is /tmp/ray here
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "tmp" / "ray").mkdir(parents=True)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    yield tmp_path / "state"
    # Joining applies the auth env process-wide, Ray's cached config included: put both back.
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    ray_auth.apply({})  # refreshes Ray's cached config from the restored environment


def _state(auth_mode: str, gcs: str = "127.0.0.1:6379") -> localcluster.ClusterState:
    return localcluster.ClusterState(
        gcs_address=gcs,
        dashboard_url="http://127.0.0.1:8265",
        serve_url="http://127.0.0.1:8000/v1",
        pools=["l4"],
        started_at=0.0,
        auth_mode=auth_mode,
    )


def test_local_env_pins_the_clusters_auth_mode(state_dir, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the caller's own mode does not leak in
    assert localcluster.local_env()["RAY_AUTH_MODE"] == "disabled"  # no cluster: disabled
    localcluster.save_state(_state("token"))
    env = localcluster.local_env()
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(state_dir / "ray-auth-token")
    localcluster.save_state(_state("disabled"))
    assert localcluster.local_env()["RAY_AUTH_MODE"] == "disabled"


def test_old_state_files_read_as_auth_disabled(state_dir):
    state_dir.mkdir(parents=True)
    old = {k: v for k, v in vars(_state("token")).items() if k != "auth_mode"}
    localcluster.state_path().write_text(json.dumps(old))
    assert localcluster.load_state().auth_mode == "disabled"


def test_token_is_generated_once_owner_only(state_dir):
    path = ray_auth.ensure_token(state_dir)
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits, hex
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ray_auth.ensure_token(state_dir).read_text() == token, "kept across `r1p up`s"
    path.chmod(0o644)
    ray_auth.ensure_token(state_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_token_from_ray_auth_token_env_wins(state_dir, monkeypatch):
    ray_auth.ensure_token(state_dir)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env-" + "0" * 40)
    path = ray_auth.ensure_token(state_dir)
    assert path.read_text() == "from-env-" + "0" * 40
    assert ray_auth.auth_headers("token", state_dir) == {
        "Authorization": "Bearer from-env-" + "0" * 40
    }
    assert ray_auth.auth_headers("disabled", state_dir) == {}


def test_auth_headers_only_for_the_local_clusters_dashboard(state_dir):
    localcluster.save_state(_state("token"))
    token = ray_auth.ensure_token(state_dir).read_text()
    assert localcluster.auth_headers_for("http://127.0.0.1:8265") == {
        "Authorization": f"Bearer {token}"
    }
    assert localcluster.auth_headers_for("http://10.0.0.9:8265") == {}


def test_gcs_alive_is_a_quick_connect():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert ray_join.gcs_alive(f"127.0.0.1:{port}")
    t0 = time.monotonic()
    assert not ray_join.gcs_alive(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 2
    assert not ray_join.gcs_alive("not-an-address")


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stale_current_cluster_file_is_removed_and_a_new_cluster_started(state_dir):
    dead = f"127.0.0.1:{_dead_port()}"
    ray_join.current_cluster_file().write_text(dead)
    localcluster.save_state(_state("token", gcs=dead))
    assert localcluster.ray_init_address(None) == "local"
    assert not ray_join.current_cluster_file().exists()
    assert localcluster.load_state() is None, "a dead cluster's state is removed too"


def test_live_local_cluster_is_joined_with_its_token(state_dir, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        gcs = f"127.0.0.1:{srv.getsockname()[1]}"
        localcluster.save_state(_state("token", gcs=gcs))
        assert localcluster.ray_init_address(None) == gcs
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(state_dir / "ray-auth-token")


def test_explicit_dead_address_fails_fast_naming_it(state_dir, monkeypatch):
    dead = f"127.0.0.1:{_dead_port()}"
    with pytest.raises(ray_join.ClusterUnreachable, match=dead):
        localcluster.ray_init_address(dead)
    monkeypatch.setenv("RAY_ADDRESS", dead)  # as `ray job submit` would set it
    with pytest.raises(ray_join.ClusterUnreachable, match="RAY_ADDRESS"):
        localcluster.ray_init_address(None)
    assert localcluster.ray_init_address("local") == "local"


def test_clear_stale_state_leaves_other_clusters_alone(state_dir):
    tmp = ray_join.ray_temp_dir()
    ray_join.current_cluster_file().write_text("10.0.0.5:6379")
    (tmp / "session_2026-12-01_10-00-00_000000_1").mkdir()
    (tmp / "session_latest").symlink_to(tmp / "session_2026-12-01_10-00-00_000000_1")
    assert ray_join.clear_stale_ray_state("127.0.0.1:6379", "session_other") == []
    assert ray_join.current_cluster_file().exists() and (tmp / "session_latest").is_symlink()
    removed = ray_join.clear_stale_ray_state(
        "10.0.0.5:6379", "session_2026-12-01_10-00-00_000000_1"
    )
    assert removed == [ray_join.current_cluster_file(), tmp / "session_latest"]
    assert (tmp / "session_2026-12-01_10-00-00_000000_1").is_dir(), "logs are kept"


def test_serve_config_honours_serve_host(tmp_path, monkeypatch):
    monkeypatch.delenv("R1P_CONFIG", raising=False)
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("serve: {host: 0.0.0.0}\n")
    assert localcluster.serve_config(str(cfg), 8123)["http_options"] == {
        "host": "0.0.0.0",
        "port": 8123,
    }
    cfg.write_text("serve: {port: 9000}\n")
    assert localcluster.serve_config(str(cfg), 8123)["http_options"]["host"] == "127.0.0.1"


def test_serve_config_lists_every_model_at_pool_deployment(tmp_path, monkeypatch):
    # Listed from the first deploy, the controller's later num_replicas override is a
    # lightweight update instead of a rolling restart (see serve_config's docstring).
    from r1platform.localcluster import serve_config

    monkeypatch.delenv("R1P_CONFIG", raising=False)
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("models:\n  tiny-r1: {pool: l4}\n  other: {accelerator_type: H100}\n")
    app = serve_config(str(cfg), 8123)["applications"][0]
    assert app["deployments"] == [{"name": "tiny-r1@l4"}, {"name": "other@H100"}]
    assert app["runtime_env"]["env_vars"]["R1P_CONFIG"] == str(cfg)
    assert "R1P_CONFIG" not in os.environ


def test_cluster_processes_include_the_heads_ray_client_server():
    session, port = "session_2026-12-02_04-58-16_664968_23061", 6379
    raylet = ["/x/raylet", f"--session_dir=/tmp/ray/{session}", "--gcs-address=127.0.0.1:6379"]
    client = [
        "/x/python", "-m", "ray.util.client.server", "--address=192.0.2.2:6379",
        "--host=192.0.2.2", "--port=10001", "--mode=proxy",
    ]  # fmt: skip
    assert localcluster.is_cluster_process(raylet, session, port)
    assert localcluster.is_cluster_process(client, session, port)
    # Another cluster's client server (its own GCS port) and unrelated processes stay.
    assert not localcluster.is_cluster_process(client, session, 6380)
    other = ["/x/python", "serve.py", "--address=127.0.0.1:6379"]
    assert not localcluster.is_cluster_process(other, session, port)


def test_local_env_carries_the_clusters_ingress(state_dir, monkeypatch):
    # A stray switch in the caller's shell cannot contradict serve.ingress.
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    assert localcluster.local_env()["RAY_SERVE_ENABLE_HA_PROXY"] == "0"  # no cluster: proxy
    state = _state("disabled")
    state.ingress = "haproxy"
    localcluster.save_state(state)
    env = localcluster.local_env()
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # `r1p up` passes the setting explicitly before any state exists.
    assert localcluster.local_env(ingress="proxy")["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"


def test_serve_config_puts_the_ingress_in_the_replicas_env(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("serve: {ingress: haproxy}\nmodels:\n  tiny-r1: {}\n")
    env = localcluster.serve_config(str(cfg), 8000)["applications"][0]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    cfg.write_text("models:\n  tiny-r1: {}\n")
    env = localcluster.serve_config(str(cfg), 8000)["applications"][0]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"

import json
import os

from r1platform import localcluster
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


def test_local_env_pins_one_auth_mode(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert localcluster.local_env()["RAY_AUTH_MODE"] == "disabled"
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert localcluster.local_env()["RAY_AUTH_MODE"] == "token"


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

"""The shared contracts: one definition each, and the places that must agree on them do."""

from __future__ import annotations

import socket

import pytest
from r1platform.config import ModelSettings
from r1platform.contracts import deployment_name as dn
from r1platform.contracts.actors import NAMESPACE, training_actor_name
from r1platform.contracts.net import free_port
from r1platform.contracts.placement_mode import detect_mode
from r1platform.contracts.resources import accelerator_key, accelerators_in, pool_key, pools_in
from r1platform.pools.fleet import Pool, node_resources
from r1platform.pools.ray_actuators import RayServeActuator
from r1platform.serving.placement import engine_options

PAIRS = [("l4-a", "L4"), ("h100", "H100"), ("h100-spot", "H100")]


def test_name_build_and_parse_round_trip():
    assert dn.build("tiny", "l4-a") == "tiny@l4-a"
    assert dn.build("tiny", None, "L4") == "tiny@L4"
    assert dn.build("tiny") == "tiny@any"
    assert dn.parse("tiny@l4-a") == ("tiny", "l4-a")
    assert dn.parse("Ingress") == ("Ingress", None)
    assert dn.is_engine("tiny@any") and not dn.is_engine("Ingress")
    with pytest.raises(ValueError, match="contain no '@'"):
        dn.build("a@b", "l4")


def test_resolve_pool_by_name_then_by_gpu_type():
    assert dn.resolve_pool("l4-a", PAIRS) == "l4-a"
    assert dn.resolve_pool("L4", PAIRS) == "l4-a"  # the only L4 pool
    assert dn.resolve_pool("H100", PAIRS) is None  # two H100 pools: cannot tell which
    assert dn.resolve_pool("A100", PAIRS) is None
    assert dn.resolve_pool("any", PAIRS) is None and dn.resolve_pool(None, PAIRS) is None


def test_serving_names_engines_by_the_contract():
    ms = ModelSettings(accelerator_type="L4")
    assert engine_options("tiny", ms, "simulated")["name"] == "tiny@L4"
    assert engine_options("tiny", ModelSettings(pool="l4-a"), "gpu")["name"] == "tiny@l4-a"


class FakeServeClient:
    """ServeSubmissionClient's two calls, over one app with an accelerator_type-only model."""

    def __init__(self) -> None:
        self.deployed: list[dict] = []

    def get_serve_details(self) -> dict:
        deps = {"tiny@L4": {"target_num_replicas": 1}, "big@h100": {"target_num_replicas": 2}}
        deps["Ingress"] = {"target_num_replicas": 1}
        cfg = {"name": "r1", "import_path": "x:app", "deployments": []}
        return {"applications": {"r1": {"deployments": deps, "deployed_app_config": cfg}}}

    def deploy_applications(self, cfg: dict) -> None:
        self.deployed.append(cfg)


def _actuator(pools):
    a = RayServeActuator.__new__(RayServeActuator)
    a.client, a.pools, a._names = FakeServeClient(), pools, {}
    return a


def test_accelerator_type_only_model_is_managed_as_its_gpu_types_pool():
    """`tiny@L4` names a GPU type: the controller sees it as pool l4-a (the only L4 pool) and
    scaling it writes back to the Serve deployment `tiny@L4`, not to a pool named L4."""
    a = _actuator(lambda: PAIRS)
    assert a.current_replicas() == {("tiny", "l4-a"): 1, ("big", "h100"): 2}
    a.set_replicas("tiny", "l4-a", 3)
    (cfg,) = a.client.deployed
    assert cfg["applications"][0]["deployments"] == [{"name": "tiny@L4", "num_replicas": 3}]


def test_a_target_no_pool_matches_is_not_managed():
    a = _actuator(lambda: [("h100", "H100")])
    assert a.current_replicas() == {("big", "h100"): 2}
    with pytest.raises(LookupError, match="tiny@l4-a"):
        a.set_replicas("tiny", "l4-a", 1)


def test_resource_keys_agree_between_nodes_and_replicas():
    node = node_resources(Pool(name="l4-a", gpu="L4", nodes=1, gpus_per_node=4))
    assert node == {pool_key("l4-a"): 4.0, accelerator_key("L4"): 4.0}
    assert pools_in(node) == ["l4-a"] and accelerators_in(node) == ["L4"]
    bundles = engine_options("tiny", ModelSettings(pool="l4-a"), "simulated")
    assert pool_key("l4-a") in bundles["placement_group_bundles"][0]


def test_placement_mode_actor_names_and_free_port():
    assert detect_mode({"GPU": 1.0}) == "gpu" and detect_mode({"CPU": 4.0}) == "simulated"
    assert training_actor_name("grpo") == "r1p-train-grpo" and NAMESPACE == "r1platform"
    port = free_port("127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free: binding it works


def test_one_cache_root_moves_every_local_file(monkeypatch, tmp_path):
    from r1platform import localcluster
    from r1platform.contracts.paths import cache_dir
    from r1platform.models.tiny import default_model_dir
    from r1platform.pools import decisions

    monkeypatch.setenv("R1P_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("R1P_STATE_DIR", raising=False)
    assert cache_dir() == tmp_path
    for path in (default_model_dir(), localcluster.state_path(), decisions.default_path()):
        assert path.is_relative_to(tmp_path), path


def test_settings_have_no_dead_path_fields():
    from r1platform.config import ConfigError, load_settings

    for field in ("pools_file", "cache_dir"):
        with pytest.raises(ConfigError, match=field):
            load_settings(**{field: "/tmp/x"})

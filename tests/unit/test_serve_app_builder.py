"""The Serve entrypoint's two routes, driven through Ray Serve's own import and builder code."""

import sys

import pytest
from r1platform.config import ConfigError
from ray._common.utils import import_attr
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

ARGS = {
    "models": {"tiny-r1": {"pool": "l4", "autoscaling": {"min_replicas": 1, "max_replicas": 2}}},
    "serve": {"host": "0.0.0.0", "placement": "simulated"},
}


@pytest.fixture
def fresh_entrypoint(monkeypatch):
    monkeypatch.delitem(sys.modules, "serve_apps.r1_chat", raising=False)
    monkeypatch.delenv("R1P_CONFIG", raising=False)
    yield
    sys.modules.pop("serve_apps.r1_chat", None)


def test_builder_route_builds_from_args_without_building_the_default_app(
    fresh_entrypoint, monkeypatch
):
    import r1platform.serving.app as app_mod

    built = []
    real = app_mod.build_app
    monkeypatch.setattr(app_mod, "build_app", lambda s: built.append(s) or real(s))
    builder = import_attr("serve_apps.r1_chat:build_app_from_args")
    app = call_user_app_builder_with_args_if_necessary(builder, ARGS)
    assert isinstance(app, Application)
    assert len(built) == 1, "only the args-configured app is built"
    settings = built[0]
    assert settings.serve.host == "0.0.0.0"
    assert settings.models["tiny-r1"].autoscaling.max_replicas == 2
    assert "app" not in vars(sys.modules["serve_apps.r1_chat"])


def test_default_app_route_still_builds_from_env(fresh_entrypoint, monkeypatch):
    monkeypatch.setenv("R1P_SERVE__PLACEMENT", "simulated")
    app = import_attr("serve_apps.r1_chat:app")
    assert isinstance(app, Application)
    assert import_attr("serve_apps.r1_chat:app") is app  # built once
    with pytest.raises(ValueError, match="not an already built application"):
        call_user_app_builder_with_args_if_necessary(app, ARGS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"models": {"tiny-r1": {"max_model_length": 9}}},
            "application args: invalid setting models.tiny-r1.max_model_length: Extra inputs",
        ),
        ({"serve": {"port": "http"}}, "application args: invalid setting serve.port"),
        ({"models": {}}, "at least one model"),
        (["models"], "application args must be a settings mapping"),
    ],
)
def test_bad_args_are_one_clear_line(fresh_entrypoint, args, expected):
    builder = import_attr("serve_apps.r1_chat:build_app_from_args")
    with pytest.raises(ConfigError) as e:
        call_user_app_builder_with_args_if_necessary(builder, args)
    assert expected in str(e.value) and "\n" not in str(e.value)

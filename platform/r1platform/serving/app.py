"""Build the Serve application from settings: an engine deployment per model + the ingress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from ray.serve import Application

from r1platform.config import ConfigError, Settings, describe_validation_error, load_settings
from r1platform.contracts.placement_mode import PlacementMode, detect_mode
from r1platform.serving.deployments import OpenAIIngress
from r1platform.serving.engine_host import EngineDeployment
from r1platform.serving.placement import engine_options


def placement_mode(settings: Settings) -> PlacementMode:
    if settings.serve.placement != "auto":
        return settings.serve.placement
    import ray

    resources = ray.cluster_resources() if ray.is_initialized() else {}
    return detect_mode(resources)


def ingress_model(settings: Settings) -> str | None:
    """The model whose engine lives in the ingress replicas: the first one whose replica is a
    single node. A replica with pipeline stages may span nodes; inside the ingress it would tie
    the HTTP entry point to that multi-node placement group (and its failures), so such a model
    is always its own deployment. None when every model has stages."""
    return next((m for m, ms in settings.models.items() if ms.pipeline_parallel_size == 1), None)


def build_app(settings: Settings) -> Application:
    """The ingress model's engine lives in the ingress replicas (one Ray hop for its tokens)
    and scales with them; every other model is its own engine deployment behind a handle."""
    mode = placement_mode(settings)
    primary = ingress_model(settings)
    engines = {
        model_id: EngineDeployment.options(**engine_options(model_id, ms, mode)).bind(
            model_id, ms.model_dump()
        )
        for model_id, ms in settings.models.items()
        if model_id != primary
    }
    if primary is None:
        # No engine inside: the ingress is a CPU-only actor and needs no GPU anywhere (the head
        # node included), so Ray may place it on any node.
        opts: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": 0},
            "max_ongoing_requests": 1024,
            "max_surge_percent": 100,
        }
        return OpenAIIngress.options(**opts).bind(engines, settings.serve.model_dump())
    primary_ms = settings.models[primary]
    opts = engine_options(primary, primary_ms, mode)
    # The ingress also carries other models' requests; don't let the engine's cap throttle them.
    opts["max_ongoing_requests"] = max(opts["max_ongoing_requests"], 1024)
    return OpenAIIngress.options(**opts).bind(
        engines, settings.serve.model_dump(), primary, primary_ms.model_dump()
    )


def settings_from_args(args: Any) -> Settings:
    """Serve application `args` (serveConfigV2's `args:`) as Settings: the document is the
    same one R1P_CONFIG names, and R1P_* env vars (e.g. API keys from a Secret) still apply."""
    if not isinstance(args, Mapping):
        raise ConfigError(
            f"application args must be a settings mapping (models, serve, ...), "
            f"got {type(args).__name__}"
        )
    bad = [k for k in args if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"application args: setting names must be strings, got {bad[0]!r}")
    try:
        return load_settings(**args)
    except ConfigError as err:
        raise ConfigError(f"application args: {err}") from None
    except ValidationError as err:  # a validator outside load_settings' own handling
        raise ConfigError(f"application args: {describe_validation_error(err)}") from None


def build_app_from_args(args: dict[str, Any]) -> Application:
    """Serve's application-builder route: `import_path: serve_apps.r1_chat:build_app_from_args`
    with the settings document as `args` (Serve refuses args for an already built app)."""
    return build_app(settings_from_args(args))

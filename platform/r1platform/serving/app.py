"""Build the Serve application from settings: an engine deployment per model + the ingress."""

from __future__ import annotations

from ray.serve import Application

from r1platform.config import Settings
from r1platform.contracts.placement_mode import PlacementMode, detect_mode
from r1platform.serving.deployments import EngineDeployment, OpenAIIngress
from r1platform.serving.placement import engine_options


def placement_mode(settings: Settings) -> PlacementMode:
    if settings.serve.placement != "auto":
        return settings.serve.placement
    import ray

    resources = ray.cluster_resources() if ray.is_initialized() else {}
    return detect_mode(resources)


def build_app(settings: Settings) -> Application:
    """The first model's engine lives in the ingress replicas (one Ray hop for its tokens) and
    scales with them; every other model is its own engine deployment behind a handle."""
    mode = placement_mode(settings)
    (primary, primary_ms), *others = settings.models.items()
    engines = {
        model_id: EngineDeployment.options(**engine_options(model_id, ms, mode)).bind(
            model_id, ms.model_dump()
        )
        for model_id, ms in others
    }
    opts = engine_options(primary, primary_ms, mode)
    # The ingress also carries other models' requests; don't let the engine's cap throttle them.
    opts["max_ongoing_requests"] = max(opts["max_ongoing_requests"], 1024)
    return OpenAIIngress.options(**opts).bind(
        engines, settings.serve.model_dump(), primary, primary_ms.model_dump()
    )

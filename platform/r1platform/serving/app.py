"""Build the Serve application from settings: an engine deployment per model + the ingress."""

from __future__ import annotations

from ray.serve import Application

from r1platform.config import Settings
from r1platform.serving.deployments import EngineDeployment, OpenAIIngress
from r1platform.serving.placement import PlacementMode, detect_mode, engine_options


def placement_mode(settings: Settings) -> PlacementMode:
    if settings.serve.placement != "auto":
        return settings.serve.placement
    import ray

    resources = ray.cluster_resources() if ray.is_initialized() else {}
    return detect_mode(resources)


def build_app(settings: Settings) -> Application:
    mode = placement_mode(settings)
    engines = {
        model_id: EngineDeployment.options(**engine_options(model_id, ms, mode)).bind(
            model_id, ms.model_dump()
        )
        for model_id, ms in settings.models.items()
    }
    return OpenAIIngress.options(
        num_replicas=settings.serve.ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=10_000,
    ).bind(engines, settings.serve.model_dump())

"""What a process hosting one model's engine answers (EngineHost), and the engine deployment
for every model other than the one the ingress hosts in-process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from r1platform.config import ModelSettings


class EngineHost:
    """The methods a process hosting one model's engine answers, locally or over a handle."""

    core: Any = None
    stages: Any = None  # stages.ReplicaStages: where the engine's pipeline stages run

    async def chat(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for item in self.core.chat(payload):
            yield item

    async def completion(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for item in self.core.completion(payload):
            yield item

    async def check_health(self) -> None:
        if self.core is not None:
            await self.core.check_health()

    async def ready(self) -> bool:
        await self.check_health()
        return True

    def num_unfinished(self) -> int:
        return self.core.num_unfinished() if self.core is not None else 0

    def load(self) -> dict[str, int]:
        """This replica's process id and its engine's unfinished requests: a handle call
        reaches one replica, so callers tell the replicas apart by pid."""
        return {"pid": os.getpid(), "unfinished": self.num_unfinished()}

    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        model = self.core.model_id if self.core is not None else None
        stages = self.stages.where() if self.stages is not None else None
        return {"node_id": ctx.get_node_id(), "pid": os.getpid(), "model": model, "stages": stages}

    def __del__(self) -> None:
        if self.core is not None:
            self.core.shutdown()
        if self.stages is not None:
            self.stages.shutdown()


def start_engine(model_id: str, settings: dict[str, Any]) -> tuple[Any, Any]:
    """The engine and its stages (`stages.ReplicaStages`): where the placement group put the
    ranks is read, and other nodes' stage processes started, before the engine starts."""
    from r1platform.serving.engine import R1Engine
    from r1platform.serving.stages import start_stages

    ms = ModelSettings.model_validate(settings)
    stages = start_stages(model_id, ms)
    return R1Engine(model_id, ms, stages.dist), stages


@serve.deployment
class EngineDeployment(EngineHost):
    """A vLLM AsyncLLM replica for a model other than the ingress's own."""

    def __init__(self, model_id: str, settings: dict[str, Any]) -> None:
        self.core, self.stages = start_engine(model_id, settings)

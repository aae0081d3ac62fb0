"""The controller's IO boundary: what it reads (load) and what it drives (Serve replicas,
autoscaler capacity, training jobs).

Live implementations sit in ray_actuators / metrics_load (Ray) and k8s (RayService); in-memory
ones with failure injection in memory_actuators; the simulator has its own. None of them
imports the controller: they implement these Protocols.

Every call is synchronous and either does what it says or raises: the controller records a
raised error on that action's decision and carries on with the rest of the cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .fleet import Fleet


@dataclass(frozen=True)
class DeploymentLoad:
    ongoing: float  # requests in flight on replicas
    queued: float  # requests waiting for a replica
    request_rate: float  # arrivals per second, recent window


class LoadSource(Protocol):
    def read(self) -> dict[str, DeploymentLoad]: ...


class ServeActuator(Protocol):
    def current_replicas(self) -> dict[tuple[str, str], int]:
        """(deployment, pool) -> running replica target."""
        ...

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None: ...

    def deploy(self, config: dict[str, Any]) -> None:
        """Apply a whole Serve config (serve_config.serve_config(plan)) in one write: how a
        change of TP, PP, engine profile or pool reaches Serve (set_replicas only scales)."""
        ...


class CapacityActuator(Protocol):
    def request(self, gpus_by_pool: Mapping[str, int]) -> None:
        """Ask the autoscaler to keep this many GPUs per pool (replaces the previous ask)."""
        ...


class TrainingActuator(Protocol):
    def current_gpus(self, job: str) -> int | None:
        """GPUs the job holds now; None when the job is not running at all (it is then left
        out of the plan: GPUs are lent only to jobs that can take them)."""
        ...

    def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
        """Checkpoint, then release GPUs down to `gpus` (0 = suspend after checkpoint).
        Returns once the job has accepted the request (raises if it could not be delivered);
        current_gpus drops once the release has happened."""
        ...

    def grow(self, job: str, gpus: int, pool: str) -> None:
        """Offer the job `gpus` GPUs in `pool`. Returns once the job has accepted the offer;
        current_gpus rises once it has taken them up."""
        ...


FleetSource = Fleet | Callable[[], Fleet]

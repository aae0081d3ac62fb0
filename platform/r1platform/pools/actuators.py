"""Every implementation of the controller's Protocols, under one import for the CLI and the
Kubernetes wiring: live ones on Ray (ray_actuators, metrics_load), the in-memory set
(memory_actuators) and the controller actor (controller_actor). Each lives in its own module;
this one only gathers them."""

from __future__ import annotations

from r1platform.contracts.actors import CONTROLLER_ACTOR as ACTOR_NAME
from r1platform.contracts.actors import NAMESPACE

from .controller_actor import controller_health, start_controller_actor
from .memory_actuators import (
    FailureInjection,
    MemoryCapacity,
    MemoryServe,
    MemoryTraining,
    StaticLoad,
    offline,
)
from .metrics_load import (
    MetricsLoadSource,
    counter_increase,
    parse_serve_metrics,
    parse_serve_series,
)
from .ray_actuators import (
    RayActorTraining,
    RayAutoscalerCapacity,
    RayServeActuator,
    live,
    live_fleet,
)

__all__ = [
    "ACTOR_NAME",
    "NAMESPACE",
    "FailureInjection",
    "MemoryCapacity",
    "MemoryServe",
    "MemoryTraining",
    "MetricsLoadSource",
    "RayActorTraining",
    "RayAutoscalerCapacity",
    "RayServeActuator",
    "StaticLoad",
    "controller_health",
    "counter_increase",
    "live",
    "live_fleet",
    "offline",
    "parse_serve_metrics",
    "parse_serve_series",
    "start_controller_actor",
]

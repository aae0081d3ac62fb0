"""Whether work is placed on real GPUs or on the simulated fleet of virtual CPU nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

PlacementMode = Literal["gpu", "simulated"]


def detect_mode(cluster_resources: Mapping[str, float]) -> PlacementMode:
    """A cluster with any "GPU" resource places on GPUs; otherwise the fleet is simulated."""
    return "gpu" if cluster_resources.get("GPU", 0) > 0 else "simulated"

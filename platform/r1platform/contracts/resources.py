"""Ray custom resources and node labels that place work on a GPU pool.

A virtual (CPU-only) node of pool P with GPU type X declares `pool:P` and `accelerator_type:X`,
each equal to its GPU count (no "GPU" resource: Ray would try to assign CUDA devices). A real
GPU node carries "GPU" plus Ray's own `accelerator_type:X` marker. Serve replicas and rollout
engines ask for one unit of these per GPU.
"""

from __future__ import annotations

from collections.abc import Iterable

POOL_PREFIX = "pool:"
ACCELERATOR_PREFIX = "accelerator_type:"

POOL_LABEL = "r1p.pool"
ACCELERATOR_LABEL = "ray.io/accelerator-type"


def pool_key(pool: str) -> str:
    return f"{POOL_PREFIX}{pool}"


def accelerator_key(gpu: str) -> str:
    return f"{ACCELERATOR_PREFIX}{gpu}"


def pools_in(keys: Iterable[str]) -> list[str]:
    """Pool names named by `pool:` keys among resource names."""
    return [k.removeprefix(POOL_PREFIX) for k in keys if k.startswith(POOL_PREFIX)]


def accelerators_in(keys: Iterable[str]) -> list[str]:
    """GPU types named by `accelerator_type:` keys among resource names."""
    return [k.removeprefix(ACCELERATOR_PREFIX) for k in keys if k.startswith(ACCELERATOR_PREFIX)]

"""Fixtures the integration test modules share."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with the 2 CPUs a GRPO job's workers and engines are sized for (module
    scope: one cluster per test file, torn down before the next file starts its own)."""
    import ray

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

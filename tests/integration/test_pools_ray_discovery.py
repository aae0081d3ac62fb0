"""Discovery against a real local Ray node that declares a pool the way `r1p up` does."""

from __future__ import annotations

import pytest
from r1platform.pools.fleet import Pool, node_labels, node_resources
from r1platform.pools.inventory import from_ray_live

pytestmark = pytest.mark.integration


@pytest.fixture
def ray_with_virtual_pool():
    ray = pytest.importorskip("ray")
    pool = Pool(name="h100", gpu="H100", nodes=1, gpus_per_node=2)
    if ray.is_initialized():
        ray.shutdown()
    # address="local": always a fresh private cluster, never a running `r1p up` one.
    ray.init(
        address="local",
        num_cpus=1,
        num_gpus=0,
        resources=node_resources(pool),
        labels=node_labels(pool),
        include_dashboard=False,
        logging_level="ERROR",
    )
    yield pool
    ray.shutdown()


def test_from_ray_live_sees_the_declared_pool(ray_with_virtual_pool):
    pools = {p.name: p for p in from_ray_live()}
    assert "h100" in pools
    p = pools["h100"]
    assert (p.gpu, p.nodes, p.gpus_per_node) == ("H100", 1, 2)

"""Pools YAML, catalog and the virtual-node resource convention."""

from __future__ import annotations

from pathlib import Path

import pytest
from r1platform.pools.catalog import load_catalog
from r1platform.pools.errors import PoolsConfigError, UnknownGpuError
from r1platform.pools.fleet import load_fleet, load_pools, node_labels, node_resources

# The GPU types the platform promises to plan for: the catalog must cover each.
ISSUE_GPU_TYPES = ("H200", "H100", "H800", "H20", "A100-80G", "A100-40G", "L40S", "A10G", "L4",
                   "V100-32G", "V100-16G", "T4")  # fmt: skip


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pools.yaml"
    p.write_text(text)
    return p


GOOD = """
pools:
  - {name: h100, gpu: H100, nodes: 1, gpus_per_node: 2, min_nodes: 0, max_nodes: 4}
  - name: l4
    gpu: nvidia-l4
    nodes: 2
    gpus_per_node: 1
    cost_per_gpu_hour: 0.5
    labels: {zone: a}
    taints: ["nvidia.com/gpu=present:NoSchedule"]
"""


def test_load_pools_resolves_names_and_capacity(tmp_path):
    pools = load_pools(_write(tmp_path, GOOD))
    assert [p.name for p in pools] == ["h100", "l4"]
    assert pools[1].gpu == "L4"  # alias resolved to the catalog name
    assert pools[0].gpus_capacity == 8  # max_nodes x gpus_per_node
    assert pools[1].max_nodes == 2  # defaults to nodes
    fleet = load_fleet(_write(tmp_path, GOOD))
    # Catalog default: Lambda H100 SXM $2.99 (catalog.yaml); the pool's own price wins for l4.
    assert fleet.price(pools[0]) == pytest.approx(2.99)
    assert fleet.price(pools[1]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("pools:\n  - {name: x, gpu: H1000, nodes: 1, gpus_per_node: 8}", "pool 'x'"),
        ("pools:\n  - {name: x, gpu: H100, nodes: 0, gpus_per_node: 8, max_nodes: 0}", "zero GPUs"),
        ("pools:\n  - {name: x, gpu: H100, nodes: 1, gpus_per_node: 0}", "gpus_per_node"),
        ("pools: [ {name: x, gpu: H100", "malformed YAML at line"),
        ("pools: []", "non-empty"),
        ("nope: 1", "'pools:'"),
        ("pools:\n  - {name: x, gpu: H100, nodes: 1, gpus_per_node: 1, bogus: 2}", "bogus"),
        (
            "pools:\n  - {name: x, gpu: H100, nodes: 1, gpus_per_node: 1}\n"
            "  - {name: x, gpu: L4, nodes: 1, gpus_per_node: 1}",
            "duplicate",
        ),
    ],
)
def test_bad_pools_give_one_line_naming_the_item(tmp_path, text, fragment):
    with pytest.raises(PoolsConfigError) as e:
        load_pools(_write(tmp_path, text))
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_unknown_gpu_lists_known_types(tmp_path):
    with pytest.raises(UnknownGpuError) as e:
        load_pools(_write(tmp_path, "pools:\n  - {name: x, gpu: B9, nodes: 1, gpus_per_node: 8}"))
    for name in ISSUE_GPU_TYPES:
        assert name in str(e.value)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(PoolsConfigError, match="No such file"):
        load_pools(tmp_path / "absent.yaml")


def test_catalog_covers_issue_types_and_overrides():
    cat = load_catalog()
    assert set(cat.names()) == set(ISSUE_GPU_TYPES)
    # NVIDIA datasheets: H200 141 GB / 4.8 TB/s; H100 SXM 80 GB / 3.35 TB/s; L4 no NVLink.
    assert cat["H200"].memory_gb == 141 and cat["H200"].hbm_bandwidth_gbs == 4800
    assert cat["H100"].memory_gb == 80 and cat["H100"].hbm_bandwidth_gbs == 3350
    assert not cat["L4"].nvlink
    cheap = load_catalog(
        {
            "H100": {"cost_per_gpu_hour": 1.5},
            "MI300X": {
                "memory_gb": 192,
                "hbm_bandwidth_gbs": 5300,
                "bf16_tflops": 1307,
                "nvlink": False,
                "nvlink_gbs": 0,
                "cost_per_gpu_hour": 2.0,
            },
        }
    )
    assert cheap["H100"].cost_per_gpu_hour == 1.5 and cheap["H100"].memory_gb == 80
    assert cheap["MI300X"].memory_gb == 192
    with pytest.raises(PoolsConfigError, match=r"gpu_types\.X\.hbm_bandwidth_gbs: Field required"):
        load_catalog({"X": {"memory_gb": 1}})


@pytest.mark.parametrize(
    "raw, mem, want",
    [
        ("NVIDIA-H100-80GB-HBM3", None, "H100"),
        ("NVIDIA-A100-SXM4-80GB", None, "A100-80G"),
        ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", None, "A100-80G"),
        ("A100", None, "A100-40G"),  # bare Ray name: the smaller part, so fits are never optimistic
        ("A100", 81920 / 1024, "A100-80G"),
        ("V100", None, "V100-16G"),
        ("Tesla-V100-SXM2-32GB", None, "V100-32G"),
        ("H20", None, "H20"),
        ("NVIDIA-H200", None, "H200"),
        ("Tesla-T4", None, "T4"),
    ],
)
def test_gpu_name_normalisation(raw, mem, want):
    assert load_catalog().resolve(raw, mem) == want


def test_node_resources_and_labels_follow_the_virtual_convention(tmp_path):
    pool = load_pools(_write(tmp_path, GOOD))[0]
    assert node_resources(pool) == {"pool:h100": 2.0, "accelerator_type:H100": 2.0}
    assert node_labels(pool) == {"r1p.pool": "h100", "ray.io/accelerator-type": "H100"}
    assert "GPU" not in node_resources(pool)

"""The chart's GPU names and node-affinity product strings come from the platform's catalog."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from r1platform.k8s.catalog_sync import PRODUCTS_FILE, gpu_products, sync_chart
from r1platform.k8s.render import CHART_DIR
from r1platform.pools.catalog import load_catalog


def test_generated_chart_files_match_the_catalog() -> None:
    assert sync_chart(CHART_DIR, check=True) == [], "run scripts/sync_chart_catalog.py"


def test_schema_enum_is_exactly_the_catalog() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert set(schema["definitions"]["gpuName"]["enum"]) == set(load_catalog().names())


def test_every_required_gpu_and_product_string_is_known() -> None:
    products = yaml.safe_load((CHART_DIR / PRODUCTS_FILE).read_text())["gpuProducts"]
    for gpu, product in [
        ("H100", "NVIDIA-H100-80GB-HBM3"),
        ("A100-80G", "NVIDIA-A100-SXM4-80GB"),
        ("L4", "NVIDIA-L4"),
        ("V100-16G", "Tesla-V100-SXM2-16GB"),
        ("H800", "NVIDIA-H800"),
        ("A100-40G", "NVIDIA-A100-SXM4-40GB"),
        ("L40S", "NVIDIA-L40S"),
    ]:
        assert product in products[gpu]
    # Every product string resolves back to its own GPU, so discovery and affinity agree.
    catalog = load_catalog()
    for gpu, strings in gpu_products().items():
        assert all(catalog.resolve(s) == gpu for s in strings)


def test_drift_is_detected_and_repaired(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart)
    schema_path = chart / "values.schema.json"
    schema = json.loads(schema_path.read_text())
    schema["definitions"]["gpuName"]["enum"].remove("H100")
    schema_path.write_text(json.dumps(schema))
    (chart / PRODUCTS_FILE).write_text("gpuProducts: {}\n")
    assert sorted(sync_chart(chart, check=True)) == sorted(["values.schema.json", PRODUCTS_FILE])
    sync_chart(chart)
    assert sync_chart(chart, check=True) == []

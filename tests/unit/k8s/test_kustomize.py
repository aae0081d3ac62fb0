"""k8s/ is the chart's output: the committed files are what the generator writes today, and
`kubectl kustomize` of each overlay gives exactly the chart's objects for that overlay's values."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from r1platform.k8s.kustomize import (
    K8S_DIR,
    OVERLAYS,
    key,
    namespace_object,
    overlay_objects,
    stale_files,
)


def test_committed_tree_matches_the_generator() -> None:
    assert stale_files() == [], "run: python scripts/render_k8s.py"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kubectl_kustomize_equals_chart_output(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is required for this test"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    built = {key(o): o for o in yaml.safe_load_all(out) if o}
    expected = {key(o): o for o in [namespace_object(), *overlay_objects(overlay)]}
    assert sorted(built) == sorted(expected)
    for k, obj in expected.items():
        assert built[k] == obj, k


def test_cpu_dev_requests_no_gpus_and_gpu_overlay_does() -> None:
    cpu = yaml.safe_dump_all(overlay_objects("cpu-dev"))
    gpu = yaml.safe_dump_all(overlay_objects("gpu"))
    assert "nvidia.com/gpu" not in cpu and "r1-platform-cpu:" in cpu
    assert "nvidia.com/gpu" in gpu and "r1-platform-cpu:" not in gpu

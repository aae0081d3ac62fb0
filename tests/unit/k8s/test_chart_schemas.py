"""Every rendered object is valid: Helm lint, the KubeRay v1.7.0 CRD schemas, the Kubernetes
1.33 schemas (strict), and the rules the KubeRay operator applies when it reconciles."""

from __future__ import annotations

import kubernetes_validate
import pytest
from helm_python.chart import lint
from r1platform.k8s.crd_schema import validate_custom_resource
from r1platform.k8s.render import CHART_DIR, cluster_specs
from r1platform.k8s.validation import validate

from .conftest import Rendered

# Kinds of CRDs this repo does not vendor (the Prometheus operator's); checked by shape below.
PROMETHEUS_KINDS = {"PodMonitor"}


def test_strict_lint_has_no_errors_or_warnings(case: Rendered) -> None:
    report = lint(CHART_DIR, case.values, strict=True, kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], (case.name, report)


def test_kuberay_objects_match_crd_schema(case: Rendered) -> None:
    ray = [o for o in case.objects if o["apiVersion"] == "ray.io/v1"]
    assert ray, "every install renders at least the RayService"
    for obj in ray:
        validate_custom_resource(obj)


def test_core_objects_validate_strictly_on_k8s_1_33(case: Rendered) -> None:
    checked = 0
    for obj in case.objects:
        group = obj["apiVersion"].split("/")[0]
        if group == "ray.io" or obj["kind"] in PROMETHEUS_KINDS:
            continue
        kubernetes_validate.validate(obj, "1.33", strict=True)
        checked += 1
    assert checked >= 2  # at least the settings ConfigMap and the NetworkPolicy


def test_pod_templates_inside_ray_objects_validate_strictly(case: Rendered) -> None:
    """The CRDs embed core PodTemplateSpecs; validate them as core objects too."""
    for owner, spec in cluster_specs(case.objects):
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        for i, g in enumerate(groups):
            tmpl = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": f"{owner['metadata']['name']}-{i}"},
                "template": g["template"],
            }
            kubernetes_validate.validate(tmpl, "1.33", strict=True)
    for job in case.kinds("RayJob"):
        tmpl = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "submitter"},
            "template": job["spec"]["submitterPodTemplate"],
        }
        kubernetes_validate.validate(tmpl, "1.33", strict=True)


def test_pod_monitors_have_the_prometheus_operator_shape(case: Rendered) -> None:
    for pm in case.kinds("PodMonitor"):
        assert pm["apiVersion"] == "monitoring.coreos.com/v1"
        assert pm["spec"]["selector"]
        for ep in pm["spec"]["podMetricsEndpoints"]:
            assert set(ep) <= {"port", "path", "interval", "honorLabels"}
            assert ep["path"] == "/metrics"


def test_kuberay_operator_would_accept_every_object(case: Rendered) -> None:
    ray = [o for o in case.objects if o["apiVersion"] == "ray.io/v1"]
    for obj in ray:
        validate(obj)


@pytest.mark.parametrize("kind", ["RayService", "RayJob"])
def test_ray_object_names_fit_kuberay_limits(case: Rendered, kind: str) -> None:
    for obj in case.kinds(kind):
        assert len(obj["metadata"]["name"]) <= 47

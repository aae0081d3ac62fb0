"""Render the r1-platform chart offline into Kubernetes objects, and read back what the
operator and the platform will see: the settings document, every pod spec, and the containers
KubeRay injects that the rendered output does not show."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "helm" / "r1-platform"
DEFAULT_RELEASE = "r1"
DEFAULT_NAMESPACE = "r1-platform"

Obj = dict[str, Any]


def load_values(path: str | Path) -> dict[str, Any]:
    """A Helm values file; malformed YAML or a non-mapping is a ConfigError naming file+line."""
    from r1platform.config import check_yaml_document

    return check_yaml_document(path, "Helm values") or {}


def render_manifests(
    values: Mapping[str, Any] | None = None,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    chart_dir: Path = CHART_DIR,
) -> dict[str, str]:
    """{template path: rendered text}, with the real Helm engine (schema checked first)."""
    from helm_python.chart import Chart

    with Chart.load(chart_dir) as chart:
        return chart.render(dict(values or {}), name=release, namespace=namespace)


def parse_objects(manifests: Mapping[str, str]) -> list[Obj]:
    objs = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        objs += [d for d in yaml.safe_load_all(manifests[path]) if d]
    return objs


def render_objects(values: Mapping[str, Any] | None = None, **kw: Any) -> list[Obj]:
    return parse_objects(render_manifests(values, **kw))


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def settings_document(objs: list[Obj], release: str = DEFAULT_RELEASE) -> dict[str, Any]:
    """The settings YAML the Ray pods read through R1P_CONFIG."""
    (cm,) = find(objs, "ConfigMap", f"{release}-settings")
    return yaml.safe_load(cm["data"]["settings.yaml"])


def serve_config(objs: list[Obj]) -> dict[str, Any]:
    (svc,) = find(objs, "RayService")
    return yaml.safe_load(svc["spec"]["serveConfigV2"])


def cluster_specs(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(owner object, RayClusterSpec) for every Ray cluster the objects create."""
    for o in objs:
        if o["kind"] == "RayService":
            yield o, o["spec"]["rayClusterConfig"]
        elif o["kind"] == "RayJob" and o["spec"].get("rayClusterSpec"):
            yield o, o["spec"]["rayClusterSpec"]
        elif o["kind"] == "RayCluster":
            yield o, o["spec"]


def with_injected_containers(spec: Obj) -> Obj:
    """A copy of a RayClusterSpec with the containers KubeRay v1.7.0 adds when it builds pods
    (ray-operator/controllers/ray/common/pod.go):
    - the autoscaler sidecar in the head pod, when in-tree autoscaling is on: the head image
      unless autoscalerOptions.image, and autoscalerOptions.securityContext or nothing;
    - the wait-gcs-ready init container in every worker pod: the Ray container's image and a
      deep copy of the Ray container's securityContext."""
    out = copy.deepcopy(spec)
    head_pod = out["headGroupSpec"]["template"]["spec"]
    ray_head = head_pod["containers"][0]
    if out.get("enableInTreeAutoscaling") is True:
        opts = out.get("autoscalerOptions") or {}
        sidecar: Obj = {"name": "autoscaler", "image": opts.get("image") or ray_head["image"]}
        if opts.get("securityContext") is not None:
            sidecar["securityContext"] = copy.deepcopy(opts["securityContext"])
        head_pod["containers"].append(sidecar)
    for wg in out.get("workerGroupSpecs") or []:
        pod = wg["template"]["spec"]
        ray = pod["containers"][0]
        init: Obj = {"name": "wait-gcs-ready", "image": ray["image"]}
        if ray.get("securityContext") is not None:
            init["securityContext"] = copy.deepcopy(ray["securityContext"])
        pod.setdefault("initContainers", []).append(init)
    return out


def pod_specs(objs: list[Obj], injected: bool = True) -> Iterator[tuple[str, Obj]]:
    """("Kind/name/where", pod spec) for every pod the objects will create."""
    for o in objs:
        kind, name = o["kind"], o["metadata"]["name"]
        if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{kind}/{name}", o["spec"]["template"]["spec"]
        if kind == "RayJob":
            sub = o["spec"].get("submitterPodTemplate")
            # Without a template KubeRay's default submitter pod has no securityContext at all.
            default: Obj = {"containers": [{"name": "ray-job-submitter"}]}
            yield f"{kind}/{name}/submitter", sub["spec"] if sub else default
    for owner, spec in cluster_specs(objs):
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        full = with_injected_containers(spec) if injected else spec
        yield f"{where}/head", full["headGroupSpec"]["template"]["spec"]
        for wg in full.get("workerGroupSpecs") or []:
            yield f"{where}/{wg['groupName']}", wg["template"]["spec"]


def containers_of(pod: Obj) -> Iterator[Obj]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []

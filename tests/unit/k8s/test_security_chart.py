"""The rendered chart against the parts of Pod Security "restricted" that the container check in
test_chart_semantics does not cover (volumes, host namespaces and ports, sysctls), and no Ray
port reachable from outside the release: no Service publishes one, and the NetworkPolicy that
closes them selects every Ray pod."""

from __future__ import annotations

from typing import Any

from r1platform.k8s.render import cluster_specs, containers_of, pod_specs

from .conftest import Rendered

RAY_PORTS = {6379, 8265, 10001, 52365, 8076}  # GCS, dashboard, client, agent, object manager
# The volume types Pod Security "restricted" allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _pod_problems(pod: dict[str, Any]) -> list[str]:
    problems = [f"host namespace {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    psc = pod.get("securityContext") or {}
    if psc.get("sysctls"):
        problems.append("sysctls")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append("pod seccomp Unconfined")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {v['name']}: {sorted(kinds)}")
    for c in containers_of(pod):
        sc = c.get("securityContext") or {}
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"{c['name']}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{c['name']}: procMount")
        if set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities.add")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{c['name']}: seccomp Unconfined")
    return problems


def test_every_pod_meets_restricted_pod_level_rules(case: Rendered) -> None:
    pods = list(pod_specs(case.objects, injected=True))
    assert pods
    for where, pod in pods:
        assert _pod_problems(pod) == [], where


def test_no_service_publishes_a_ray_port_or_leaves_the_cluster(case: Rendered) -> None:
    for svc in case.kinds("Service"):
        spec = svc["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
        ports = {p["port"] for p in spec.get("ports") or []}
        assert not ports & RAY_PORTS, (svc["metadata"]["name"], ports)
    for owner, spec in cluster_specs(case.objects):
        head = spec["headGroupSpec"]
        # KubeRay's head Service carries the GCS, dashboard and client ports: cluster-internal.
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", owner["metadata"]["name"]
        assert "headService" not in head
    for svc in case.kinds("RayService"):
        serve_svc = svc["spec"].get("serveService")
        if serve_svc:
            ports = {p["port"] for p in serve_svc["spec"].get("ports") or []}
            assert not ports & RAY_PORTS


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
        if e["operator"] == "NotIn" and labels.get(e["key"]) in e["values"]:
            return False
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
    return True


def test_network_policy_covers_every_ray_pod_and_opens_ray_ports_only_inside(
    case: Rendered,
) -> None:
    specs = list(cluster_specs(case.objects))
    if not specs:
        return
    (np,) = case.kinds("NetworkPolicy")
    assert "Ingress" in np["spec"].get("policyTypes", ["Ingress"])
    selector = np["spec"]["podSelector"]
    templates = [spec["headGroupSpec"]["template"] for _o, spec in specs]
    templates += [wg["template"] for _o, spec in specs for wg in spec.get("workerGroupSpecs") or []]
    for t in templates:
        labels = (t.get("metadata") or {}).get("labels") or {}
        assert _selects(selector, labels), labels
    release = case.objects[0]["metadata"].get("labels", {}).get("app.kubernetes.io/instance")
    for rule in np["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports") or []}
        if "ports" in rule and not ports & RAY_PORTS:
            continue  # e.g. the Serve port, open to every client
        peers = rule.get("from")
        assert peers, f"rule {rule} opens Ray ports to everyone"
        for peer in peers:
            labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
            assert "ipBlock" not in peer, peer
            if labels.get("app.kubernetes.io/name") == "kuberay-operator":
                # The operator (its own namespace) polls the dashboard API: that port only.
                assert "ports" in rule and ports == {8265}, rule
                continue
            assert "namespaceSelector" not in peer, peer
            if release:
                assert labels.get("app.kubernetes.io/instance") == release, peer

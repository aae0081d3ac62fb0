"""Minimal valid RayCluster / RayService / RayJob dicts for the KubeRay rule tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]


def cluster_spec() -> Obj:
    return {
        "rayVersion": "2.60.0",
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"version": "v2", "idleTimeoutSeconds": 60},
        "headGroupSpec": {
            "rayStartParams": {"num-gpus": "0"},
            "template": {"spec": {"containers": [{"name": "ray-head", "image": "r:1", "env": []}]}},
        },
        "workerGroupSpecs": [
            {
                "groupName": "h100",
                "replicas": 1,
                "minReplicas": 0,
                "maxReplicas": 2,
                "idleTimeoutSeconds": 30,
                "rayStartParams": {},
                "labels": {"ray.io/accelerator-type": "H100"},
                "resources": {"accelerator_type:H100": "1"},
                "template": {"spec": {"containers": [{"name": "ray-worker", "image": "r:1"}]}},
            }
        ],
    }


def raycluster() -> Obj:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rc"},
        "spec": cluster_spec(),
    }


def rayservice() -> Obj:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "svc"},
        "spec": {"rayClusterConfig": cluster_spec(), "upgradeStrategy": {"type": "NewCluster"}},
    }


def rayjob() -> Obj:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "job"},
        "spec": {
            "entrypoint": "python x.py",
            "rayClusterSpec": cluster_spec(),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 60,
        },
    }


def head(o: Obj) -> Obj:
    return o["spec"]["headGroupSpec"]


def wg(o: Obj) -> Obj:
    return o["spec"]["workerGroupSpecs"][0]


def head_env(o: Obj, **env: str) -> None:
    head(o)["template"]["spec"]["containers"][0]["env"] = [
        {"name": k, "value": v} for k, v in env.items()
    ]


def cs(o: Obj) -> Obj:
    """The cluster spec inside any of the three kinds."""
    return o.get("spec", {}).get("rayClusterConfig") or o["spec"].get("rayClusterSpec") or o["spec"]


Mut = Callable[[Obj], Any]

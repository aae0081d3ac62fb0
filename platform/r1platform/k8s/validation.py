"""KubeRay v1.7.0's admission rules for RayCluster, RayService and RayJob objects (plain dicts),
ported from ray-operator/controllers/ray/utils/validation.go (Apache-2.0).

`validate(obj)` runs the checks the operator runs when it reconciles that kind (metadata,
spec, status) and raises `KubeRayValidationError` with the operator's message for the first
rule broken. Cluster-spec rules live in validation_cluster / validation_features.
"""

from __future__ import annotations

from typing import Any

import yaml

from . import k8s_syntax as syn
from .validation_cluster import (
    DEFAULT_GATES,
    KubeRayValidationError,
    Obj,
    autoscaling_enabled,
    fail,
    k8s_auth_enabled,
    pod_spec,
)
from .validation_features import validate_cluster_spec

__all__ = ["DEFAULT_GATES", "KubeRayValidationError", "validate", "validate_cluster_spec"]

MAX_RAYCLUSTER_NAME = 53
MAX_RAYSERVICE_NAME = MAX_RAYCLUSTER_NAME - 6
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6
ORIGINATED_FROM_CRD_LABEL = "ray.io/originated-from-crd"
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"
CLUSTER_SELECTOR_KEY = "ray.io/cluster"


def _name_rules(kind: str, meta: Obj, limit: int, prefix: str) -> None:
    name = meta.get("name") or ""
    if len(name) > limit:
        fail(f"{prefix}{kind} name should be no more than {limit} characters")
    errs = syn.dns1035_label(name)
    if errs:
        fail(f"{prefix}{kind} name should be a valid DNS1035 label: {errs}")


# ---- RayCluster ----------------------------------------------------------------------------


def check_raycluster_status(obj: Obj) -> None:
    conds = (obj.get("status") or {}).get("conditions") or []
    true = {c.get("type") for c in conds if c.get("status") == "True"}
    if {"RayClusterSuspending", "RayClusterSuspended"} <= true:
        fail(
            "invalid RayCluster State: rayv1.RayClusterSuspending and rayv1.RayClusterSuspended "
            "conditions should not be both true"
        )


def check_raycluster_metadata(meta: Obj) -> None:
    _name_rules("RayCluster", meta, MAX_RAYCLUSTER_NAME, "")


def check_raycluster_upgrade_options(obj: Obj) -> None:
    kind = ((obj.get("spec") or {}).get("upgradeStrategy") or {}).get("type")
    if kind is None:
        return
    if kind not in ("Recreate", "None"):
        fail(
            f"The RayCluster spec is invalid: Spec.UpgradeStrategy.Type value {kind} is invalid, "
            "valid options are Recreate or None"
        )
    creator = ((obj.get("metadata") or {}).get("labels") or {}).get(ORIGINATED_FROM_CRD_LABEL)
    if creator in ("RayJob", "RayService"):
        fail(f"upgradeStrategy cannot be set when RayCluster is created by {creator}")


# ---- RayService ----------------------------------------------------------------------------


def check_initializing_timeout(annotations: Obj) -> None:
    raw = annotations.get(INITIALIZING_TIMEOUT_ANNOTATION)
    if not raw:
        return
    a = INITIALIZING_TIMEOUT_ANNOTATION
    # Parse outside the failure path: KubeRayValidationError is itself a ValueError.
    try:
        duration: float | None = syn.parse_go_duration(raw)
    except ValueError:
        duration = None
    if duration is not None:
        if duration <= 0:
            fail(f"annotation {a} must be a positive duration, got: {raw}")
        return
    try:
        seconds: int | None = syn.parse_go_int(raw)
    except ValueError:
        seconds = None
    if seconds is None:
        fail(
            f"annotation {a} has invalid format: {raw}. Expected Go duration format (e.g., "
            "'5m', '1h') or positive integer seconds"
        )
    elif seconds <= 0:
        fail(f"annotation {a} must be a positive integer (seconds), got: {raw}")


def check_rayservice_metadata(meta: Obj) -> None:
    _name_rules("RayService", meta, MAX_RAYSERVICE_NAME, "The RayService metadata is invalid: ")
    try:
        check_initializing_timeout(meta.get("annotations") or {})
    except KubeRayValidationError as e:
        fail(f"The RayService metadata is invalid: RayService annotations is invalid: {e}")


def check_incremental_upgrade_options(spec: Obj) -> None:
    if not autoscaling_enabled(spec.get("rayClusterConfig") or {}):
        fail("Ray Autoscaler is required for NewClusterWithIncrementalUpgrade")
    opts = (spec.get("upgradeStrategy") or {}).get("clusterUpgradeOptions")
    if opts is None:
        fail("ClusterUpgradeOptions are required for NewClusterWithIncrementalUpgrade")
    surge = opts.get("maxSurgePercent", 100)  # the CRD defaults it to 100
    if surge < 0 or surge > 100:
        fail("maxSurgePercent must be between 0 and 100")
    step = opts.get("stepSizePercent")
    if step is None or step < 0 or step > 100:
        fail("stepSizePercent must be between 0 and 100")
    if step > surge:
        fail("stepSizePercent must be less than or equal to maxSurgePercent")
    interval = opts.get("intervalSeconds")
    if interval is None or interval <= 0:
        fail("intervalSeconds must be greater than 0")
    if not opts.get("gatewayClassName"):
        fail("gatewayClassName is required for NewClusterWithIncrementalUpgrade")


def check_rayservice_spec(obj: Obj, gates: frozenset[str] = DEFAULT_GATES) -> None:
    spec = obj.get("spec") or {}
    cluster = spec.get("rayClusterConfig") or {}
    p = "The RayService spec is invalid: "
    if k8s_auth_enabled(cluster.get("authOptions")):
        fail(f"{p}K8s token auth mode is currently not supported for RayService")
    try:
        validate_cluster_spec(cluster, (obj.get("metadata") or {}).get("annotations"), gates)
    except KubeRayValidationError as e:
        fail(f"{p}{e}")
    head_svc = (cluster.get("headGroupSpec") or {}).get("headService") or {}
    if (head_svc.get("metadata") or {}).get("name"):
        fail(f"{p}spec.rayClusterConfig.headGroupSpec.headService.metadata.name should not be set")
    kind = (spec.get("upgradeStrategy") or {}).get("type")
    if kind is not None and kind not in ("None", "NewCluster", "NewClusterWithIncrementalUpgrade"):
        fail(
            f"{p}Spec.UpgradeStrategy.Type value {kind} is invalid, valid options are "
            "NewClusterWithIncrementalUpgrade, NewCluster, or None"
        )
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        fail(
            f"{p}Spec.RayClusterDeletionDelaySeconds should be a non-negative integer, got {delay}"
        )
    if "RayServiceIncrementalUpgrade" in gates and kind == "NewClusterWithIncrementalUpgrade":
        try:
            check_incremental_upgrade_options(spec)
        except KubeRayValidationError as e:
            fail(f"{p}{e}")


# ---- RayJob --------------------------------------------------------------------------------


def check_rayjob_status(obj: Obj) -> None:
    status = (obj.get("status") or {}).get("jobDeploymentStatus")
    if status == "Waiting" and (obj.get("spec") or {}).get("submissionMode") != "InteractiveMode":
        fail(
            "The RayJob status is invalid: JobDeploymentStatus cannot be `Waiting` when "
            "SubmissionMode is not InteractiveMode"
        )


def check_rayjob_metadata(meta: Obj) -> None:
    _name_rules("RayJob", meta, MAX_RAYJOB_NAME, "The RayJob metadata is invalid: ")


def check_runtime_env_yaml(text: str) -> None:
    try:
        doc = yaml.safe_load(text or "")
    except yaml.YAMLError as e:
        fail(f"failed to unmarshal RuntimeEnvYAML: {text}: {e}")
    if doc is not None and not isinstance(doc, dict):
        fail(f"failed to unmarshal RuntimeEnvYAML: {text}: not a mapping")


def check_rayjob_spec(obj: Obj, gates: frozenset[str] = DEFAULT_GATES) -> None:
    from .validation_jobs import check_deletion_configuration

    spec = obj.get("spec") or {}
    p = "The RayJob spec is invalid: "
    shutdown = spec.get("shutdownAfterJobFinishes") is True
    if spec.get("suspend") is True and not shutdown:
        fail(
            f"{p}a RayJob with shutdownAfterJobFinishes set to false is not allowed to be suspended"
        )
    if (spec.get("ttlSecondsAfterFinished") or 0) < 0:
        fail(f"{p}TTLSecondsAfterFinished must be a non-negative integer")
    check_deletion_configuration(spec, gates)
    selector = spec.get("clusterSelector") or {}
    mode = spec.get("submissionMode")
    backoff = spec.get("backoffLimit")
    if spec.get("suspend") is True and selector:
        fail(f"{p}the ClusterSelector mode doesn't support the suspend operation")
    if spec.get("rayClusterSpec") is None and not selector:
        fail(f"{p}one of RayClusterSpec or ClusterSelector must be set")
    if selector:
        if not selector.get(CLUSTER_SELECTOR_KEY):
            fail("cluster name in ClusterSelector should not be empty")
        if mode == "SidecarMode":
            fail("ClusterSelector is not supported in SidecarMode")
        if backoff is not None and backoff > 0:
            fail(f"{p}BackoffLimit is incompatible with ClusterSelector mode")
    if mode == "InteractiveMode" and backoff is not None and backoff > 0:
        fail(f"{p}BackoffLimit is incompatible with InteractiveMode")
    if mode == "SidecarMode":
        if spec.get("submitterPodTemplate") is not None:
            fail("Currently, SidecarMode doesn't support SubmitterPodTemplate")
        if spec.get("submitterConfig") is not None:
            fail("Currently, SidecarMode doesn't support SubmitterConfig")
        head = (spec.get("rayClusterSpec") or {}).get("headGroupSpec") or {}
        if (pod_spec(head).get("restartPolicy") or "") not in ("", "Never"):
            fail("restartPolicy for head Pod should be Never or unset when using SidecarMode")
    cluster = spec.get("rayClusterSpec")
    if cluster is not None:
        if k8s_auth_enabled(cluster.get("authOptions")):
            fail(f"{p}K8s token auth mode is currently not supported for RayJob")
        try:
            validate_cluster_spec(cluster, (obj.get("metadata") or {}).get("annotations"), gates)
        except KubeRayValidationError as e:
            fail(f"{p}{e}")
    check_runtime_env_yaml(spec.get("runtimeEnvYAML") or "")
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        v = spec.get(field)
        if v is not None and v <= 0:
            fail(f"{p}{field} must be a positive integer")
    if backoff is not None and backoff < 0:
        fail(f"{p}backoffLimit must be a positive integer")


# ---- dispatch ------------------------------------------------------------------------------


def validate(obj: Obj, gates: frozenset[str] = DEFAULT_GATES) -> None:
    """Run what the operator runs for this object's kind; other kinds pass untouched."""
    kind = obj.get("kind")
    meta: dict[str, Any] = dict(obj.get("metadata") or {})
    if kind == "RayCluster":
        check_raycluster_status(obj)
        check_raycluster_metadata(meta)
        check_raycluster_upgrade_options(obj)
        validate_cluster_spec(obj.get("spec") or {}, meta.get("annotations"), gates)
    elif kind == "RayService":
        check_rayservice_metadata(meta)
        check_rayservice_spec(obj, gates)
    elif kind == "RayJob":
        check_rayjob_status(obj)
        check_rayjob_metadata(meta)
        check_rayjob_spec(obj, gates)

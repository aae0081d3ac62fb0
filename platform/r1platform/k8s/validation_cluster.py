"""KubeRay v1.7.0's RayClusterSpec admission rules, ported from
ray-operator/controllers/ray/utils/validation.go (Apache-2.0) to checks on plain dicts.

The operator runs these when it reconciles: an object that breaks one installs fine, then the
operator refuses it and only records an event. Each rule is one small function that raises
`KubeRayValidationError` with the operator's message; `validate_cluster_spec` runs them in the
operator's order, so the first error is the one the operator would report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import k8s_syntax as syn

Obj = Mapping[str, Any]

# Feature gates and their defaults in KubeRay v1.7.0 (ray-operator/pkg/features).
DEFAULT_GATES: frozenset[str] = frozenset(
    {
        "RayClusterStatusConditions",
        "RayJobDeletionPolicy",
        "RayMultiHostIndexing",
        "RayServiceIncrementalUpgrade",
    }
)

RAY_CONTAINER_INDEX = 0
FT_ANNOTATION = "ray.io/ft-enabled"
EXTERNAL_STORAGE_NS_ANNOTATION = "ray.io/external-storage-namespace"
AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"
GEN_AUTOSCALER_CMD_ENV = "KUBERAY_GEN_AUTOSCALER_START_CMD"
COLLECTOR_CONTAINER = "ray-history-collector"
GCS_STORAGE_VOLUME = "gcs-storage"
GCS_STORAGE_MOUNT = "/data/gcs"
TLS_VOLUME = "ray-tls"
TLS_MOUNT = "/etc/ray/tls"
TLS_ENVS = ("RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
COLLECTOR_MANAGED_ENVS = (
    "POD_IP",
    "FQ_RAY_IP",
    "RAY_CLUSTER_NAME",
    "RAY_CLUSTER_NAMESPACE",
    "RAY_ROLE",
    "OWNER_KIND",
    "OWNER_NAME",
    "EVENTS_PORT",
)


class KubeRayValidationError(ValueError):
    """An object the KubeRay operator would refuse, with the operator's own message."""


def fail(msg: str) -> None:
    raise KubeRayValidationError(msg)


# ---- helpers (utils/util.go) -------------------------------------------------------------


def pod_spec(group: Obj) -> Obj:
    return (group.get("template") or {}).get("spec") or {}


def containers(group: Obj) -> list[Obj]:
    return list(pod_spec(group).get("containers") or [])


def env_of(container: Obj | None) -> list[Obj]:
    return list((container or {}).get("env") or [])


def env_exists(name: str, env: Sequence[Obj]) -> bool:
    return any(e.get("name") == name for e in env)


def env_value(name: str, env: Sequence[Obj]) -> str | None:
    for e in env:
        if e.get("name") == name:
            return str(e.get("value") or "")
    return None


def head_container(spec: Obj) -> Obj:
    cs = containers(spec.get("headGroupSpec") or {})
    return cs[RAY_CONTAINER_INDEX] if cs else {}


def autoscaling_enabled(spec: Obj | None) -> bool:
    return bool(spec) and spec.get("enableInTreeAutoscaling") is True


def autoscaling_v2(spec: Obj | None) -> bool:
    return bool(spec) and ((spec.get("autoscalerOptions") or {}).get("version") == "v2")


def gcs_ft_enabled(spec: Obj, annotations: Obj) -> bool:
    v = annotations.get(FT_ANNOTATION)
    return (v is not None and str(v).lower() == "true") or spec.get(
        "gcsFaultToleranceOptions"
    ) is not None


def auth_enabled(spec: Obj) -> bool:
    return (spec.get("authOptions") or {}).get("mode") == "token"


def k8s_auth_enabled(auth: Obj | None) -> bool:
    return bool(auth) and auth.get("enableK8sTokenAuth") is True


def tls_enabled(spec: Obj, gates: frozenset[str]) -> bool:
    return "RayClusterMTLS" in gates and (spec.get("tlsOptions") or {}).get("enabled") is True


def v2_by_env(spec: Obj) -> bool:
    return env_value(AUTOSCALER_V2_ENV, env_of(head_container(spec))) in ("1", "true")


# ---- group rules ---------------------------------------------------------------------------


def check_group_resources(group_name: str, params: Obj, resources: Obj) -> None:
    in_params = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
    if in_params and resources:
        fail(
            f"resource fields should not be set in both rayStartParams and Resources for "
            f"{group_name} group; please use only one"
        )


def check_group_labels(group_name: str, params: Obj, labels: Obj) -> None:
    if "labels" in params:
        fail(
            f"rayStartParams['labels'] is not supported for {group_name} group; please use "
            "the top-level Labels field instead"
        )
    errs = []
    for key, val in labels.items():
        errs += [
            f"invalid label key for {group_name} group: '{key}', error: {e}"
            for e in syn.qualified_name(key)
        ]
        errs += [
            f"invalid label value for key '{key}' in {group_name} group: '{val}', error: {e}"
            for e in syn.label_value(str(val))
        ]
    if errs:
        fail("; ".join(errs))


def check_worker_replicas(wg: Obj, autoscaling: bool) -> None:
    name, lo, hi = wg.get("groupName"), wg.get("minReplicas"), wg.get("maxReplicas")
    if not autoscaling and (lo is None or hi is None):
        fail(
            f"worker group {name} must set both minReplicas and maxReplicas when autoscaling "
            "is disabled"
        )
    if lo is not None and lo < 0:
        fail(f"worker group {name} has negative minReplicas {lo}")
    if hi is not None and hi < 0:
        fail(f"worker group {name} has negative maxReplicas {hi}")
    if lo is not None and hi is not None and lo > hi:
        fail(f"worker group {name} has minReplicas {lo} greater than maxReplicas {hi}")


def check_worker_idle_timeout(wg: Obj, spec: Obj) -> None:
    t = wg.get("idleTimeoutSeconds")
    if t is None:
        return
    if t < 0:
        fail(
            f"worker group {wg.get('groupName')}: idleTimeoutSeconds must be non-negative, got {t}"
        )
    if autoscaling_v2(spec) or v2_by_env(spec):
        return
    fail(
        f"worker group {wg.get('groupName')}: idleTimeoutSeconds is set, but autoscaler v2 is "
        "not enabled. Please set .spec.autoscalerOptions.version to 'v2'"
    )


def check_worker_priority(wg: Obj, spec: Obj) -> None:
    prio, name = wg.get("priority"), wg.get("groupName")
    if not prio:
        return
    ray_version = spec.get("rayVersion") or ""
    if not ray_version:
        fail(
            f"worker group {name}: priority is set, but RayVersion was not specified. Ray "
            "version 2.56.0 or later is required"
        )
    try:
        v = syn.parse_generic_version(ray_version)
    except ValueError as e:
        fail(
            f"worker group {name}: priority is set, but RayVersion format is invalid: "
            f"{ray_version}, {e}"
        )
    if syn.version_less(v, (2, 56, 0)):
        fail(
            f"worker group {name}: priority is set, but minimum Ray version is 2.56.0, got "
            f"{ray_version}"
        )
    if autoscaling_v2(spec) or v2_by_env(spec):
        return
    fail(
        f"worker group {name}: priority is set to {prio}, but autoscaler v2 is not enabled. "
        "Priority is only supported with autoscaler v2 enabled"
    )


# ---- GCS fault tolerance -------------------------------------------------------------------


def check_ft_annotation_and_options(spec: Obj, annotations: Obj) -> None:
    if annotations.get(FT_ANNOTATION) and spec.get("gcsFaultToleranceOptions") is not None:
        fail(
            f"{FT_ANNOTATION} annotation and GcsFaultToleranceOptions are both set. Please use "
            "only GcsFaultToleranceOptions to configure GCS fault tolerance"
        )


def check_redis_address_implies_ft(spec: Obj, annotations: Obj) -> None:
    if not gcs_ft_enabled(spec, annotations) and env_exists(
        "RAY_REDIS_ADDRESS", env_of(head_container(spec))
    ):
        fail(
            "RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, but "
            "GcsFaultToleranceOptions is not set. Please set GcsFaultToleranceOptions to "
            "enable GCS fault tolerance"
        )


def check_ft_options_exclusive(spec: Obj, annotations: Obj) -> None:
    if spec.get("gcsFaultToleranceOptions") is None:
        return
    head = spec.get("headGroupSpec") or {}
    env = env_of(head_container(spec))
    if (head.get("rayStartParams") or {}).get("redis-password"):
        fail(
            "cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions is "
            "enabled - use GcsFaultToleranceOptions.RedisPassword instead"
        )
    if env_exists("REDIS_PASSWORD", env):
        fail(
            "cannot set `REDIS_PASSWORD` env var in head Pod when GcsFaultToleranceOptions is "
            "enabled - use GcsFaultToleranceOptions.RedisPassword instead"
        )
    if env_exists("RAY_REDIS_ADDRESS", env):
        fail(
            "cannot set `RAY_REDIS_ADDRESS` env var in head Pod when GcsFaultToleranceOptions "
            "is enabled - use GcsFaultToleranceOptions.RedisAddress instead"
        )
    if annotations.get(EXTERNAL_STORAGE_NS_ANNOTATION):
        fail(
            "cannot set `ray.io/external-storage-namespace` annotation when "
            "GcsFaultToleranceOptions is enabled - use "
            "GcsFaultToleranceOptions.ExternalStorageNamespace instead"
        )


def check_ft_backend(spec: Obj, gates: frozenset[str]) -> None:
    opts = spec.get("gcsFaultToleranceOptions")
    if opts is None:
        return
    head = head_container(spec)
    if (opts.get("backend") or "redis") != "rocksdb":
        if opts.get("storage") is not None:
            fail(
                "cannot set GcsFaultToleranceOptions.Storage when backend is 'redis' - it only "
                "applies to the 'rocksdb' backend"
            )
        return
    if "GCSFaultToleranceEmbeddedStorage" not in gates:
        fail(
            "the embedded RocksDB GCS fault tolerance backend (GcsFaultToleranceOptions."
            "Backend: 'rocksdb') requires the GCSFaultToleranceEmbeddedStorage feature gate"
        )
    for field, present in (
        ("RedisAddress", opts.get("redisAddress")),
        ("RedisUsername", opts.get("redisUsername") is not None),
        ("RedisPassword", opts.get("redisPassword") is not None),
        ("ExternalStorageNamespace", opts.get("externalStorageNamespace")),
    ):
        if present:
            fail(f"cannot set GcsFaultToleranceOptions.{field} when backend is 'rocksdb'")
    storage = opts.get("storage") or {}
    if storage.get("claimName") and (
        storage.get("size") is not None
        or storage.get("storageClassName") is not None
        or storage.get("accessModes")
    ):
        fail(
            "GcsFaultToleranceOptions.Storage.ClaimName is mutually exclusive with size, "
            "storageClassName, and accessModes"
        )
    env = env_of(head)
    if env_exists("RAY_gcs_storage", env) or env_exists("RAY_gcs_storage_path", env):
        fail(
            "cannot set `RAY_gcs_storage` or `RAY_gcs_storage_path` env var in head Pod when "
            "the embedded GCS FT backend is used - these are managed by KubeRay"
        )
    for m in head.get("volumeMounts") or []:
        if m.get("mountPath") == GCS_STORAGE_MOUNT or m.get("name") == GCS_STORAGE_VOLUME:
            fail(
                f'cannot set a volume mount named "{GCS_STORAGE_VOLUME}" or mounted at '
                f"{GCS_STORAGE_MOUNT} in the head container when the embedded GCS FT backend "
                "is used - it is managed by KubeRay"
            )
    for vol in pod_spec(spec.get("headGroupSpec") or {}).get("volumes") or []:
        if vol.get("name") == GCS_STORAGE_VOLUME:
            fail(
                f'cannot set a volume named "{GCS_STORAGE_VOLUME}" in the head Pod when the '
                "embedded GCS FT backend is used - it is managed by KubeRay"
            )


def check_redis_username(spec: Obj) -> None:
    head = spec.get("headGroupSpec") or {}
    if (head.get("rayStartParams") or {}).get("redis-username") or env_exists(
        "REDIS_USERNAME", env_of(head_container(spec))
    ):
        fail(
            "cannot set redis username in rayStartParams or environment variables - use "
            "GcsFaultToleranceOptions.RedisUsername instead"
        )


# ---- suspend / autoscaler ------------------------------------------------------------------


def check_worker_suspend_gate(spec: Obj, gates: frozenset[str]) -> None:
    if "RayJobDeletionPolicy" in gates:
        return
    for wg in spec.get("workerGroupSpecs") or []:
        if wg.get("suspend") is True:
            fail(
                f"worker group {wg.get('groupName')} can be suspended only when the "
                "RayJobDeletionPolicy feature gate is enabled"
            )


def check_v2_env_without_autoscaling(spec: Obj) -> None:
    if autoscaling_enabled(spec):
        return
    val = env_value(AUTOSCALER_V2_ENV, env_of(head_container(spec)))
    if val in ("1", "true"):
        fail(
            f"environment variable {AUTOSCALER_V2_ENV} cannot be set to '{val}' when "
            "enableInTreeAutoscaling is false. Please set enableInTreeAutoscaling: true to use "
            "autoscaler v2"
        )


def check_autoscaling_rules(spec: Obj) -> None:
    if not autoscaling_enabled(spec):
        return
    for wg in spec.get("workerGroupSpecs") or []:
        if wg.get("suspend") is True:
            fail(f"worker group {wg.get('groupName')} cannot be suspended with Autoscaler enabled")
    opts = spec.get("autoscalerOptions") or {}
    if opts.get("version") is not None and env_exists(
        AUTOSCALER_V2_ENV, env_of(head_container(spec))
    ):
        fail(
            f"both .spec.autoscalerOptions.version and head Pod env var {AUTOSCALER_V2_ENV} are "
            "set, please only use the former"
        )
    if autoscaling_v2(spec):
        policy = pod_spec(spec.get("headGroupSpec") or {}).get("restartPolicy") or ""
        if policy not in ("", "Never"):
            fail("restartPolicy for head Pod should be Never or unset when using autoscaler V2")
        for wg in spec.get("workerGroupSpecs") or []:
            if (pod_spec(wg).get("restartPolicy") or "") not in ("", "Never"):
                fail(
                    f"restartPolicy for worker group {wg.get('groupName')} should be Never or "
                    "unset when using autoscaler V2"
                )


def check_autoscaler_options(spec: Obj) -> None:
    opts = spec.get("autoscalerOptions")
    if opts is None:
        return
    t = opts.get("idleTimeoutSeconds")
    if t is not None and t < 0:
        fail(f"autoscalerOptions.idleTimeoutSeconds must be non-negative, got {t}")
    if env_exists(GEN_AUTOSCALER_CMD_ENV, opts.get("env") or []):
        fail(
            f"autoscalerOptions.env must not contain {GEN_AUTOSCALER_CMD_ENV}: it is managed by "
            "KubeRay and injected automatically into the autoscaler container"
        )

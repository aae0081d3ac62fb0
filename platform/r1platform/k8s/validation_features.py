"""KubeRay v1.7.0 RayClusterSpec rules for the optional features: history server collector,
token auth, NetworkPolicy and mTLS (ported from validation.go, Apache-2.0), plus the
orchestrator `validate_cluster_spec` that runs every cluster rule in the operator's order."""

from __future__ import annotations

from . import k8s_syntax as syn
from .validation_cluster import (
    COLLECTOR_CONTAINER,
    COLLECTOR_MANAGED_ENVS,
    DEFAULT_GATES,
    TLS_ENVS,
    TLS_MOUNT,
    TLS_VOLUME,
    Obj,
    auth_enabled,
    autoscaling_enabled,
    check_autoscaler_options,
    check_autoscaling_rules,
    check_ft_annotation_and_options,
    check_ft_backend,
    check_ft_options_exclusive,
    check_group_labels,
    check_group_resources,
    check_redis_address_implies_ft,
    check_redis_username,
    check_v2_env_without_autoscaling,
    check_worker_idle_timeout,
    check_worker_priority,
    check_worker_replicas,
    check_worker_suspend_gate,
    containers,
    env_exists,
    env_of,
    fail,
    k8s_auth_enabled,
    tls_enabled,
)


def check_collector_options(opts: Obj) -> None:
    if not opts.get("image"):
        fail("historyServerOptions.collectorOptions.image must be set")
    env = {e.get("name"): e for e in opts.get("env") or []}

    def has(name: str) -> bool:
        e = env.get(name)
        return e is not None and bool(e.get("value") or e.get("valueFrom"))

    for name in COLLECTOR_MANAGED_ENVS:
        if name in env:
            fail(
                f"historyServerOptions.collectorOptions.env must not contain {name}: it is "
                "managed by KubeRay and injected automatically into the collector container"
            )
    backend = (env.get("STORAGE_BACKEND") or {}).get("value") or ""
    if not backend:
        fail(
            "STORAGE_BACKEND environment variable must be set with a literal string value in "
            "historyServerOptions.collectorOptions.env"
        )
    backend = backend.upper()
    if backend == "GCS" and not has("GCS_BUCKET"):
        fail("GCS_BUCKET environment variable must be set when STORAGE_BACKEND is GCS")
    if backend == "S3" and not has("S3_REGION"):
        fail("S3_REGION environment variable must be set when STORAGE_BACKEND is S3")
    if backend == "AZUREBLOB":
        mode = ((env.get("AZURE_STORAGE_AUTH_MODE") or {}).get("value") or "").strip().lower()
        if mode == "connection_string" and not has("AZURE_STORAGE_CONNECTION_STRING"):
            fail(
                "AZURE_STORAGE_CONNECTION_STRING environment variable must be set when "
                "STORAGE_BACKEND is AZUREBLOB and AZURE_STORAGE_AUTH_MODE is connection_string"
            )
        elif mode in ("workload_identity", "default") and not has("AZURE_STORAGE_ACCOUNT_URL"):
            fail(
                f"AZURE_STORAGE_ACCOUNT_URL environment variable must be set when "
                f"STORAGE_BACKEND is AZUREBLOB and AZURE_STORAGE_AUTH_MODE is {mode}"
            )
        elif mode not in ("connection_string", "workload_identity", "default") and not (
            has("AZURE_STORAGE_CONNECTION_STRING") or has("AZURE_STORAGE_ACCOUNT_URL")
        ):
            fail(
                "either AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL "
                "environment variable must be set when STORAGE_BACKEND is AZUREBLOB"
            )
    if backend == "ALIYUNOSS":
        for name in ("OSS_BUCKET", "OSS_ENDPOINT", "OSS_REGION"):
            if not has(name):
                fail(f"{name} environment variable must be set when STORAGE_BACKEND is ALIYUNOSS")


def check_history_server(spec: Obj, gates: frozenset[str]) -> None:
    hs = spec.get("historyServerOptions")
    if hs is None:
        return
    if "RayClusterHistoryServer" not in gates:
        fail("RayClusterHistoryServer feature gate is not enabled")
    if hs.get("collectorOptions") is None:
        fail("historyServerOptions.collectorOptions must be set")
    check_collector_options(hs["collectorOptions"])
    for c in containers(spec.get("headGroupSpec") or {}):
        if c.get("name") == COLLECTOR_CONTAINER:
            fail(
                f"head pod template must not define a container with name "
                f"'{COLLECTOR_CONTAINER}' when history server collector options are enabled"
            )
    for wg in spec.get("workerGroupSpecs") or []:
        for c in containers(wg):
            if c.get("name") == COLLECTOR_CONTAINER:
                fail(
                    f"worker group {wg.get('groupName')} pod template must not define a "
                    f"container with name '{COLLECTOR_CONTAINER}' when history server collector "
                    "options are enabled"
                )


def check_auth(spec: Obj) -> None:
    auth = spec.get("authOptions")
    if not auth_enabled(spec):
        if k8s_auth_enabled(auth):
            fail(
                "authOptions.enableK8sTokenAuth is enabled but authOptions.mode not set to 'token'"
            )
        return
    ray_version = spec.get("rayVersion") or ""
    if not ray_version:
        fail(
            "authOptions.mode is 'token' but RayVersion was not specified. Ray version 2.52.0 "
            "or later is required"
        )
    try:
        v = syn.parse_generic_version(ray_version)
    except ValueError as e:
        fail(f"authOptions.mode is 'token' but RayVersion format is invalid: {ray_version}, {e}")
    if syn.version_less(v, (2, 52, 0)):
        fail(f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {ray_version}")
    if k8s_auth_enabled(auth):
        if syn.version_less(v, (2, 55, 0)):
            fail(
                "authOptions.enableK8sTokenAuth is enabled but minimum Ray version is 2.55.0, "
                f"got {ray_version}"
            )
        if auth.get("secretName"):
            fail("authOptions.enableK8sTokenAuth is enabled and authOptions.secretName is also set")


def check_network_policy(spec: Obj, gates: frozenset[str]) -> None:
    np = spec.get("networkPolicy")
    if np is None:
        return
    if "RayClusterNetworkPolicy" not in gates:
        fail("spec.networkPolicy requires the RayClusterNetworkPolicy feature gate to be enabled")
    mode = np.get("mode") or "DenyAll"

    def rules(where: str, part: Obj | None) -> None:
        if not part:
            return
        if mode == "DenyAllEgress" and part.get("ingressRules"):
            fail(
                f'networkPolicy.{where}.ingressRules cannot be set when mode is "{mode}" '
                "(ingress is not restricted)"
            )
        if mode == "DenyAllIngress" and part.get("egressRules"):
            fail(
                f'networkPolicy.{where}.egressRules cannot be set when mode is "{mode}" '
                "(egress is not restricted)"
            )

    rules("head", np.get("head"))
    rules("worker", np.get("worker"))
    names = set()
    for wg in spec.get("workerGroupSpecs") or []:
        name = wg.get("groupName") or ""
        errs = syn.dns1123_label(name)
        if errs:
            fail(
                f'worker group name "{name}" must be a valid DNS1123 label when networkPolicy is '
                f"enabled (it is embedded in the NetworkPolicy name): {errs}"
            )
        names.add(name)
    for wg in np.get("workerGroups") or []:
        rules(f'workerGroups["{wg.get("groupName")}"]', wg)
        if wg.get("groupName") not in names:
            fail(
                f'networkPolicy.workerGroups["{wg.get("groupName")}"] does not match any group '
                "name in workerGroupSpecs"
            )


def _check_tls_container(c: Obj, where: str) -> None:
    for name in TLS_ENVS:
        if env_exists(name, env_of(c)):
            fail(
                f"cannot set {name} environment variable in {where} when tlsOptions is set - "
                "the operator manages TLS configuration automatically"
            )
    _check_tls_mounts(c.get("volumeMounts") or [], where)


def _check_tls_mounts(mounts: list[Obj], where: str) -> None:
    for m in mounts:
        if m.get("name") == TLS_VOLUME:
            fail(
                f'cannot use volume mount named "{TLS_VOLUME}" in {where} when tlsOptions is set '
                "- the operator manages TLS configuration automatically"
            )
        if m.get("mountPath") == TLS_MOUNT:
            fail(
                f'cannot use volume mount at path "{TLS_MOUNT}" in {where} when tlsOptions is '
                "set - the operator manages TLS configuration automatically"
            )


def check_tls(spec: Obj, gates: frozenset[str]) -> None:
    if spec.get("tlsOptions") is not None and "RayClusterMTLS" not in gates:
        fail("spec.tlsOptions requires the RayClusterMTLS feature gate to be enabled")
    if not tls_enabled(spec, gates):
        return
    head = containers(spec.get("headGroupSpec") or {})
    if head:
        _check_tls_container(head[0], "head Pod")
    for wg in spec.get("workerGroupSpecs") or []:
        cs = containers(wg)
        if cs:
            _check_tls_container(cs[0], f'worker group "{wg.get("groupName")}"')
    opts = spec.get("autoscalerOptions")
    if opts is not None:
        for name in TLS_ENVS:
            if env_exists(name, opts.get("env") or []):
                fail(
                    f"cannot set {name} environment variable in autoscalerOptions.env when "
                    "tlsOptions is set - the operator manages TLS configuration for the "
                    "autoscaler automatically"
                )
        _check_tls_mounts(opts.get("volumeMounts") or [], "autoscalerOptions.volumeMounts")


def validate_cluster_spec(
    spec: Obj, annotations: Obj | None = None, gates: frozenset[str] = DEFAULT_GATES
) -> None:
    """Every RayClusterSpec rule, in the operator's order (ValidateRayClusterSpec)."""
    annotations = annotations or {}
    head = spec.get("headGroupSpec") or {}
    if not containers(head):
        fail("headGroupSpec should have at least one container")
    check_group_resources("Head", head.get("rayStartParams") or {}, head.get("resources") or {})
    check_group_labels("Head", head.get("rayStartParams") or {}, head.get("labels") or {})
    autoscaling = autoscaling_enabled(spec)
    for wg in spec.get("workerGroupSpecs") or []:
        if not containers(wg):
            fail("workerGroupSpec should have at least one container")
        check_worker_replicas(wg, autoscaling)
        name = wg.get("groupName")
        check_group_resources(name, wg.get("rayStartParams") or {}, wg.get("resources") or {})
        check_group_labels(name, wg.get("rayStartParams") or {}, wg.get("labels") or {})
        check_worker_idle_timeout(wg, spec)
        check_worker_priority(wg, spec)
    check_ft_annotation_and_options(spec, annotations)
    check_redis_address_implies_ft(spec, annotations)
    check_ft_options_exclusive(spec, annotations)
    check_ft_backend(spec, gates)
    check_redis_username(spec)
    check_worker_suspend_gate(spec, gates)
    check_v2_env_without_autoscaling(spec)
    check_autoscaling_rules(spec)
    check_autoscaler_options(spec)
    check_history_server(spec, gates)
    check_auth(spec)
    check_network_policy(spec, gates)
    check_tls(spec, gates)

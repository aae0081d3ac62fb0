"""The remaining branches of the ported KubeRay rules: every other message the operator can
give for RayCluster, RayService and RayJob objects, each on a violating object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from r1platform.k8s.validation import DEFAULT_GATES, KubeRayValidationError, validate

from .kuberay_objects import Mut, Obj, cs, head, head_env, raycluster, rayjob, rayservice, wg

ROCKS = DEFAULT_GATES | {"GCSFaultToleranceEmbeddedStorage"}
TLS = DEFAULT_GATES | {"RayClusterMTLS"}
NP = DEFAULT_GATES | {"RayClusterNetworkPolicy"}
HS = DEFAULT_GATES | {"RayClusterHistoryServer"}


def rocks(**opts: Any) -> Mut:
    return lambda o: o["spec"].update(gcsFaultToleranceOptions={"backend": "rocksdb", **opts})


def collector(*env: tuple[str, str], image: str = "c:1") -> Mut:
    return lambda o: o["spec"].update(
        historyServerOptions={
            "collectorOptions": {"image": image, "env": [{"name": k, "value": v} for k, v in env]}
        }
    )


def upgrade(**opts: Any) -> Mut:
    return lambda o: o["spec"].update(
        upgradeStrategy={
            "type": "NewClusterWithIncrementalUpgrade",
            "clusterUpgradeOptions": {
                "maxSurgePercent": 50,
                "stepSizePercent": 10,
                "intervalSeconds": 5,
                "gatewayClassName": "g",
                **opts,
            },
        }
    )


def rules_mode(*rules: dict[str, Any], **spec: Any) -> Mut:
    return lambda o: o["spec"].update(
        shutdownAfterJobFinishes=False,
        ttlSecondsAfterFinished=0,
        deletionStrategy={"deletionRules": list(rules)},
        **spec,
    )


def legacy(on_success: Any, on_failure: Any) -> Mut:
    return lambda o: o["spec"].update(
        deletionStrategy={"onSuccess": on_success, "onFailure": on_failure}
    )


def selector_mode(o: Obj) -> None:
    o["spec"].pop("rayClusterSpec")
    o["spec"].update(
        clusterSelector={"ray.io/cluster": "c"},
        shutdownAfterJobFinishes=False,
        ttlSecondsAfterFinished=0,
    )


def both(*muts: Mut) -> Mut:
    return lambda o: [m(o) for m in muts]


CASES: dict[str, tuple[Callable[[], Obj], Mut, str, frozenset[str]]] = {
    "rocksdb RedisUsername": (
        raycluster,
        rocks(redisUsername={"value": "u"}),
        "RedisUsername when backend is 'rocksdb'",
        ROCKS,
    ),
    "rocksdb RedisPassword": (
        raycluster,
        rocks(redisPassword={"value": "p"}),
        "RedisPassword when backend is 'rocksdb'",
        ROCKS,
    ),
    "rocksdb storage namespace": (
        raycluster,
        rocks(externalStorageNamespace="n"),
        "ExternalStorageNamespace when backend",
        ROCKS,
    ),
    "rocksdb storage path env": (
        raycluster,
        both(rocks(), lambda o: head_env(o, RAY_gcs_storage_path="/x")),
        "`RAY_gcs_storage_path` env var",
        ROCKS,
    ),
    "rocksdb mount path": (
        raycluster,
        both(
            rocks(),
            lambda o: head(o)["template"]["spec"]["containers"][0].update(
                volumeMounts=[{"name": "x", "mountPath": "/data/gcs"}]
            ),
        ),
        "mounted at /data/gcs",
        ROCKS,
    ),
    "network policy worker group rules": (
        raycluster,
        lambda o: o["spec"].update(
            networkPolicy={
                "mode": "DenyAllEgress",
                "workerGroups": [{"groupName": "h100", "ingressRules": [{}]}],
            }
        ),
        'workerGroups["h100"].ingressRules',
        NP,
    ),
    "network policy head ingress": (
        raycluster,
        lambda o: o["spec"].update(
            networkPolicy={"mode": "DenyAllEgress", "head": {"ingressRules": [{}]}}
        ),
        "head.ingressRules",
        NP,
    ),
    "tls env in worker": (
        raycluster,
        both(
            lambda o: o["spec"].update(tlsOptions={"enabled": True}),
            lambda o: wg(o)["template"]["spec"]["containers"][0].update(
                env=[{"name": "RAY_TLS_CA_CERT", "value": "x"}]
            ),
        ),
        'RAY_TLS_CA_CERT environment variable in worker group "h100"',
        TLS,
    ),
    "tls env in autoscaler": (
        raycluster,
        both(
            lambda o: o["spec"].update(tlsOptions={"enabled": True}),
            lambda o: o["spec"]["autoscalerOptions"].update(
                env=[{"name": "RAY_TLS_SERVER_KEY", "value": "x"}]
            ),
        ),
        "RAY_TLS_SERVER_KEY environment variable in autoscalerOptions.env",
        TLS,
    ),
    "tls mount in head": (
        raycluster,
        both(
            lambda o: o["spec"].update(tlsOptions={"enabled": True}),
            lambda o: head(o)["template"]["spec"]["containers"][0].update(
                volumeMounts=[{"name": "ray-tls", "mountPath": "/y"}]
            ),
        ),
        'volume mount named "ray-tls" in head Pod',
        TLS,
    ),
    "collector S3 without region": (
        raycluster,
        collector(("STORAGE_BACKEND", "s3")),
        "S3_REGION environment variable must be set",
        HS,
    ),
    "collector azure connection string": (
        raycluster,
        collector(
            ("STORAGE_BACKEND", "azureblob"), ("AZURE_STORAGE_AUTH_MODE", "Connection_String")
        ),
        "AZURE_STORAGE_CONNECTION_STRING environment variable must be set",
        HS,
    ),
    "collector azure workload identity": (
        raycluster,
        collector(
            ("STORAGE_BACKEND", "AZUREBLOB"), ("AZURE_STORAGE_AUTH_MODE", "workload_identity")
        ),
        "is workload_identity",
        HS,
    ),
    "collector aliyun endpoint": (
        raycluster,
        collector(("STORAGE_BACKEND", "ALIYUNOSS"), ("OSS_BUCKET", "b")),
        "OSS_ENDPOINT",
        HS,
    ),
    "collector head container name": (
        raycluster,
        both(
            collector(("STORAGE_BACKEND", "GCS"), ("GCS_BUCKET", "b")),
            lambda o: head(o)["template"]["spec"]["containers"].append(
                {"name": "ray-history-collector"}
            ),
        ),
        "head pod template must not define",
        HS,
    ),
    "incremental surge range": (
        rayservice,
        upgrade(maxSurgePercent=150),
        "maxSurgePercent must be between 0 and 100",
        DEFAULT_GATES,
    ),
    "incremental step missing": (
        rayservice,
        upgrade(stepSizePercent=None),
        "stepSizePercent must be between 0 and 100",
        DEFAULT_GATES,
    ),
    "incremental interval": (
        rayservice,
        upgrade(intervalSeconds=0),
        "intervalSeconds must be greater than 0",
        DEFAULT_GATES,
    ),
    "suspend in selector mode": (
        rayjob,
        both(
            selector_mode, lambda o: o["spec"].update(suspend=True, shutdownAfterJobFinishes=True)
        ),
        "doesn't support the suspend",
        DEFAULT_GATES,
    ),
    "sidecar with submitter config": (
        rayjob,
        lambda o: o["spec"].update(
            submissionMode="SidecarMode", submitterConfig={"backoffLimit": 1}
        ),
        "SidecarMode doesn't support SubmitterConfig",
        DEFAULT_GATES,
    ),
    "sidecar head restart policy": (
        rayjob,
        both(
            lambda o: o["spec"].update(submissionMode="SidecarMode"),
            lambda o: cs(o)["headGroupSpec"]["template"]["spec"].update(restartPolicy="Always"),
        ),
        "should be Never or unset when using SidecarMode",
        DEFAULT_GATES,
    ),
    "deletion strategy without gate": (
        rayjob,
        legacy({"policy": "DeleteCluster"}, {"policy": "DeleteCluster"}),
        "RayJobDeletionPolicy feature gate must be enabled",
        DEFAULT_GATES - {"RayJobDeletionPolicy"},
    ),
    "rules and legacy together": (
        rayjob,
        lambda o: o["spec"].update(
            shutdownAfterJobFinishes=False,
            ttlSecondsAfterFinished=0,
            deletionStrategy={
                "onSuccess": {"policy": "DeleteSelf"},
                "deletionRules": [{"policy": "DeleteSelf", "condition": {"jobStatus": "FAILED"}}],
            },
        ),
        "Cannot use both legacy",
        DEFAULT_GATES,
    ),
    "legacy onSuccess policy unset": (
        rayjob,
        legacy({}, {"policy": "DeleteCluster"}),
        "OnSuccess cannot be unset",
        DEFAULT_GATES,
    ),
    "legacy onFailure policy unset": (
        rayjob,
        legacy({"policy": "DeleteCluster"}, {}),
        "OnFailure cannot be unset",
        DEFAULT_GATES,
    ),
    "legacy selector DeleteCluster on success": (
        rayjob,
        both(selector_mode, legacy({"policy": "DeleteCluster"}, {"policy": "DeleteSelf"})),
        "doesn't support DeletionStrategy=DeleteCluster on success",
        DEFAULT_GATES,
    ),
    "legacy selector DeleteWorkers on failure": (
        rayjob,
        both(selector_mode, legacy({"policy": "DeleteSelf"}, {"policy": "DeleteWorkers"})),
        "doesn't support DeletionStrategy=DeleteWorkers on failure",
        DEFAULT_GATES,
    ),
    "rule without a status": (
        rayjob,
        rules_mode({"policy": "DeleteSelf", "condition": {}}),
        "exactly one of JobStatus and JobDeploymentStatus",
        DEFAULT_GATES,
    ),
    "rule negative ttl": (
        rayjob,
        rules_mode(
            {"policy": "DeleteSelf", "condition": {"jobStatus": "FAILED", "ttlSeconds": -1}}
        ),
        "TTLSeconds must be non-negative",
        DEFAULT_GATES,
    ),
    "rule DeleteCluster in selector mode": (
        rayjob,
        both(
            selector_mode,
            rules_mode({"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED"}}),
        ),
        "not supported when ClusterSelector is set",
        DEFAULT_GATES,
    ),
    "rule DeleteWorkers with autoscaling": (
        rayjob,
        rules_mode({"policy": "DeleteWorkers", "condition": {"jobStatus": "FAILED"}}),
        "'DeleteWorkers' not supported with autoscaling enabled",
        DEFAULT_GATES,
    ),
    "duplicate rule": (
        rayjob,
        rules_mode(
            {"policy": "DeleteSelf", "condition": {"jobDeploymentStatus": "Failed"}},
            {"policy": "DeleteSelf", "condition": {"jobDeploymentStatus": "Failed"}},
        ),
        "duplicate rule for DeletionPolicyType 'DeleteSelf' and JobDeploymentStatus 'Failed'",
        DEFAULT_GATES,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_variant_refuses_a_violating_object(name: str) -> None:
    factory, mutate, message, gates = CASES[name]
    obj = factory()
    mutate(obj)
    with pytest.raises(KubeRayValidationError) as err:
        validate(obj, gates)
    assert message in str(err.value)


def test_a_valid_rules_mode_job_passes() -> None:
    obj = rayjob()
    rules_mode(
        {"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED", "ttlSeconds": 10}},
        {"policy": "DeleteSelf", "condition": {"jobStatus": "FAILED", "ttlSeconds": 60}},
    )(obj)
    validate(obj)

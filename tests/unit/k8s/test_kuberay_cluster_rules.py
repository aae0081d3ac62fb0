"""Each ported KubeRay v1.7.0 RayCluster rule refuses an object that breaks it."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from r1platform.k8s import k8s_syntax as syn
from r1platform.k8s.validation import DEFAULT_GATES, KubeRayValidationError, validate

from .kuberay_objects import Mut, Obj, head, head_env, raycluster, rayjob, rayservice, wg

# name -> (factory, mutation, message fragment)
RULES: dict[str, tuple[Callable[[], Obj], Mut, str]] = {
    # RayCluster metadata / status / upgrade strategy
    "cluster status suspending+suspended": (
        raycluster,
        lambda o: o.update(
            status={
                "conditions": [
                    {"type": "RayClusterSuspending", "status": "True"},
                    {"type": "RayClusterSuspended", "status": "True"},
                ]
            }
        ),
        "should not be both true",
    ),
    "cluster name length": (
        raycluster,
        lambda o: o["metadata"].update(name="a" * 54),
        "no more than 53",
    ),
    "cluster name dns1035": (raycluster, lambda o: o["metadata"].update(name="1rc"), "DNS1035"),
    "cluster upgrade type": (
        raycluster,
        lambda o: o["spec"].update(upgradeStrategy={"type": "Rolling"}),
        "Spec.UpgradeStrategy.Type value Rolling",
    ),
    "cluster upgrade by owner": (
        raycluster,
        lambda o: (
            o["spec"].update(upgradeStrategy={"type": "Recreate"}),
            o["metadata"].update(labels={"ray.io/originated-from-crd": "RayService"}),
        ),
        "cannot be set when RayCluster is created by RayService",
    ),
    # head / worker groups
    "head without containers": (
        raycluster,
        lambda o: head(o)["template"]["spec"].update(containers=[]),
        "headGroupSpec should have at least one container",
    ),
    "head resources in both places": (
        raycluster,
        lambda o: head(o).update(resources={"CPU": "0"}),
        "both rayStartParams and Resources for Head",
    ),
    "head labels in rayStartParams": (
        raycluster,
        lambda o: head(o)["rayStartParams"].update(labels="a=b"),
        "rayStartParams['labels'] is not supported for Head",
    ),
    "worker labels in rayStartParams": (
        raycluster,
        lambda o: wg(o)["rayStartParams"].update(labels="a=b"),
        "rayStartParams['labels'] is not supported for h100",
    ),
    "group label key": (
        raycluster,
        lambda o: wg(o)["labels"].update({"bad key!": "x"}),
        "invalid label key for h100 group",
    ),
    "group label value": (
        raycluster,
        lambda o: wg(o)["labels"].update({"k": "-bad-"}),
        "invalid label value for key 'k'",
    ),
    "worker without containers": (
        raycluster,
        lambda o: wg(o)["template"]["spec"].update(containers=[]),
        "workerGroupSpec should have at least one container",
    ),
    "worker resources in both places": (
        raycluster,
        lambda o: wg(o)["rayStartParams"].update({"num-gpus": "8"}),
        "both rayStartParams and Resources for h100",
    ),
    "min/max required without autoscaling": (
        raycluster,
        lambda o: (
            o["spec"].update(enableInTreeAutoscaling=False),
            o["spec"].pop("autoscalerOptions"),
            wg(o).pop("idleTimeoutSeconds"),
            wg(o).pop("minReplicas"),
        ),
        "must set both minReplicas and maxReplicas",
    ),
    "negative minReplicas": (
        raycluster,
        lambda o: wg(o).update(minReplicas=-1),
        "negative minReplicas -1",
    ),
    "negative maxReplicas": (
        raycluster,
        lambda o: wg(o).update(minReplicas=None, maxReplicas=-1),
        "negative maxReplicas -1",
    ),
    "minReplicas > maxReplicas": (
        raycluster,
        lambda o: wg(o).update(minReplicas=3),
        "minReplicas 3 greater than maxReplicas 2",
    ),
    "negative group idle timeout": (
        raycluster,
        lambda o: wg(o).update(idleTimeoutSeconds=-1),
        "idleTimeoutSeconds must be non-negative",
    ),
    "group idle timeout without v2": (
        raycluster,
        lambda o: o["spec"]["autoscalerOptions"].update(version="v1"),
        "autoscaler v2 is not enabled",
    ),
    "priority without rayVersion": (
        raycluster,
        lambda o: (wg(o).update(priority=5), o["spec"].update(rayVersion="")),
        "priority is set, but RayVersion was not",
    ),
    "priority with bad rayVersion": (
        raycluster,
        lambda o: (wg(o).update(priority=5), o["spec"].update(rayVersion="two")),
        "RayVersion format is invalid",
    ),
    "priority on old Ray": (
        raycluster,
        lambda o: (wg(o).update(priority=5), o["spec"].update(rayVersion="2.55.1")),
        "minimum Ray version is 2.56.0",
    ),
    "priority without v2": (
        raycluster,
        lambda o: (
            wg(o).update(priority=5),
            wg(o).pop("idleTimeoutSeconds"),
            o["spec"]["autoscalerOptions"].update(version="v1"),
        ),
        "priority is set to 5",
    ),
    # GCS fault tolerance
    "ft annotation and options": (
        raycluster,
        lambda o: (
            o["metadata"].update(annotations={"ray.io/ft-enabled": "true"}),
            o["spec"].update(gcsFaultToleranceOptions={"redisAddress": "r:6379"}),
        ),
        "are both set",
    ),
    "redis address env without ft": (
        raycluster,
        lambda o: head_env(o, RAY_REDIS_ADDRESS="r:1"),
        "implicitly enables GCS fault tolerance",
    ),
    "redis-password param with ft": (
        raycluster,
        lambda o: (
            o["spec"].update(gcsFaultToleranceOptions={"redisAddress": "r:1"}),
            head(o)["rayStartParams"].update({"redis-password": "x"}),
        ),
        "`redis-password` in rayStartParams",
    ),
    "REDIS_PASSWORD env with ft": (
        raycluster,
        lambda o: (
            o["spec"].update(gcsFaultToleranceOptions={"redisAddress": "r:1"}),
            head_env(o, REDIS_PASSWORD="x"),
        ),
        "`REDIS_PASSWORD` env var",
    ),
    "RAY_REDIS_ADDRESS env with ft": (
        raycluster,
        lambda o: (
            o["spec"].update(gcsFaultToleranceOptions={"redisAddress": "r:1"}),
            head_env(o, RAY_REDIS_ADDRESS="r:1"),
        ),
        "`RAY_REDIS_ADDRESS` env var in head Pod",
    ),
    "storage-namespace annotation with ft": (
        raycluster,
        lambda o: (
            o["spec"].update(gcsFaultToleranceOptions={"redisAddress": "r:1"}),
            o["metadata"].update(annotations={"ray.io/external-storage-namespace": "n"}),
        ),
        "`ray.io/external-storage-namespace` annotation",
    ),
    "rocksdb without gate": (
        raycluster,
        lambda o: o["spec"].update(gcsFaultToleranceOptions={"backend": "rocksdb"}),
        "GCSFaultToleranceEmbeddedStorage",
    ),
    "redis backend with storage": (
        raycluster,
        lambda o: o["spec"].update(
            gcsFaultToleranceOptions={"redisAddress": "r:1", "storage": {"size": "1Gi"}}
        ),
        "cannot set GcsFaultToleranceOptions.Storage when backend is 'redis'",
    ),
    "redis username": (
        raycluster,
        lambda o: head(o)["rayStartParams"].update({"redis-username": "u"}),
        "cannot set redis username",
    ),
    "REDIS_USERNAME env": (
        raycluster,
        lambda o: head_env(o, REDIS_USERNAME="u"),
        "cannot set redis username",
    ),
    # autoscaler
    "v2 env without autoscaling": (
        raycluster,
        lambda o: (
            o["spec"].update(enableInTreeAutoscaling=False),
            o["spec"].pop("autoscalerOptions"),
            wg(o).pop("idleTimeoutSeconds"),
            head_env(o, RAY_enable_autoscaler_v2="true"),
        ),
        "cannot be set to 'true' when enableInTreeAutoscaling is false",
    ),
    "suspended group with autoscaling": (
        raycluster,
        lambda o: wg(o).update(suspend=True),
        "cannot be suspended with Autoscaler enabled",
    ),
    "autoscaler version and v2 env": (
        raycluster,
        lambda o: head_env(o, RAY_enable_autoscaler_v2="1"),
        "both .spec.autoscalerOptions.version and head Pod env",
    ),
    "head restartPolicy under v2": (
        raycluster,
        lambda o: head(o)["template"]["spec"].update(restartPolicy="Always"),
        "restartPolicy for head Pod should be Never",
    ),
    "worker restartPolicy under v2": (
        raycluster,
        lambda o: wg(o)["template"]["spec"].update(restartPolicy="OnFailure"),
        "restartPolicy for worker group h100",
    ),
    "negative autoscaler idle timeout": (
        raycluster,
        lambda o: o["spec"]["autoscalerOptions"].update(idleTimeoutSeconds=-5),
        "autoscalerOptions.idleTimeoutSeconds must be non-negative",
    ),
    "generated autoscaler cmd env": (
        raycluster,
        lambda o: o["spec"]["autoscalerOptions"].update(
            env=[{"name": "KUBERAY_GEN_AUTOSCALER_START_CMD", "value": "x"}]
        ),
        "must not contain KUBERAY_GEN_AUTOSCALER_START_CMD",
    ),
    # history server, auth, network policy, TLS
    "history server without gate": (
        raycluster,
        lambda o: o["spec"].update(historyServerOptions={"collectorOptions": {"image": "c:1"}}),
        "RayClusterHistoryServer",
    ),
    "token auth without rayVersion": (
        raycluster,
        lambda o: o["spec"].update(authOptions={"mode": "token"}, rayVersion=""),
        "RayVersion was not specified",
    ),
    "token auth with bad rayVersion": (
        raycluster,
        lambda o: o["spec"].update(authOptions={"mode": "token"}, rayVersion="x.y"),
        "RayVersion format is invalid",
    ),
    "token auth on Ray < 2.52": (
        raycluster,
        lambda o: o["spec"].update(authOptions={"mode": "token"}, rayVersion="2.51.0"),
        "minimum Ray version is 2.52.0",
    ),
    "k8s token auth on Ray < 2.55": (
        raycluster,
        lambda o: o["spec"].update(
            authOptions={"mode": "token", "enableK8sTokenAuth": True}, rayVersion="2.54.0"
        ),
        "minimum Ray version is 2.55.0",
    ),
    "k8s token auth with secretName": (
        raycluster,
        lambda o: o["spec"].update(
            authOptions={"mode": "token", "enableK8sTokenAuth": True, "secretName": "s"}
        ),
        "authOptions.secretName is also set",
    ),
    "k8s token auth without token mode": (
        raycluster,
        lambda o: o["spec"].update(authOptions={"enableK8sTokenAuth": True}),
        "authOptions.mode not set to 'token'",
    ),
    "network policy without gate": (
        raycluster,
        lambda o: o["spec"].update(networkPolicy={"mode": "DenyAll"}),
        "RayClusterNetworkPolicy feature gate",
    ),
    "tls without gate": (
        raycluster,
        lambda o: o["spec"].update(tlsOptions={"enabled": True}),
        "RayClusterMTLS feature gate",
    ),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_refuses_a_violating_object(name: str) -> None:
    factory, mutate, message = RULES[name]
    obj = factory()
    mutate(obj)
    with pytest.raises(KubeRayValidationError) as err:
        validate(obj)
    assert message in str(err.value)


@pytest.mark.parametrize("factory", [raycluster, rayservice, rayjob])
def test_the_reference_objects_are_valid(factory: Callable[[], Obj]) -> None:
    validate(factory())


def _gated(gate: str) -> frozenset[str]:
    return DEFAULT_GATES | {gate}


def test_rocksdb_rules_behind_their_gate() -> None:
    gates = _gated("GCSFaultToleranceEmbeddedStorage")
    obj = raycluster()
    obj["spec"]["gcsFaultToleranceOptions"] = {"backend": "rocksdb"}
    validate(obj, gates)
    for opts, msg in [
        ({"redisAddress": "r"}, "RedisAddress when backend is 'rocksdb'"),
        ({"storage": {"claimName": "c", "size": "1Gi"}}, "mutually exclusive"),
    ]:
        bad = copy.deepcopy(obj)
        bad["spec"]["gcsFaultToleranceOptions"].update(opts)
        with pytest.raises(KubeRayValidationError, match=msg):
            validate(bad, gates)
    bad = copy.deepcopy(obj)
    head_env(bad, RAY_gcs_storage="rocksdb")
    with pytest.raises(KubeRayValidationError, match="managed by KubeRay"):
        validate(bad, gates)
    bad = copy.deepcopy(obj)
    bad["spec"]["headGroupSpec"]["template"]["spec"]["volumes"] = [{"name": "gcs-storage"}]
    with pytest.raises(KubeRayValidationError, match='volume named "gcs-storage"'):
        validate(bad, gates)


def test_network_policy_rules_behind_their_gate() -> None:
    gates = _gated("RayClusterNetworkPolicy")
    obj = raycluster()
    obj["spec"]["networkPolicy"] = {"mode": "DenyAllIngress"}
    validate(obj, gates)
    for np, msg in [
        ({"mode": "DenyAllIngress", "head": {"egressRules": [{}]}}, "egress is not"),
        ({"mode": "DenyAllEgress", "worker": {"ingressRules": [{}]}}, "ingress is not"),
        ({"workerGroups": [{"groupName": "nope"}]}, "does not match any group"),
    ]:
        bad = copy.deepcopy(obj)
        bad["spec"]["networkPolicy"] = np
        with pytest.raises(KubeRayValidationError, match=msg):
            validate(bad, gates)
    bad = copy.deepcopy(obj)
    bad["spec"]["workerGroupSpecs"][0]["groupName"] = "H100"
    with pytest.raises(KubeRayValidationError, match="valid DNS1123 label"):
        validate(bad, gates)


def test_tls_rules_behind_their_gate() -> None:
    gates = _gated("RayClusterMTLS")
    obj = raycluster()
    obj["spec"]["tlsOptions"] = {"enabled": True}
    validate(obj, gates)
    bad = copy.deepcopy(obj)
    head_env(bad, RAY_USE_TLS="1")
    with pytest.raises(KubeRayValidationError, match="RAY_USE_TLS environment variable in head"):
        validate(bad, gates)
    bad = copy.deepcopy(obj)
    bad["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "x", "mountPath": "/etc/ray/tls"}
    ]
    with pytest.raises(KubeRayValidationError, match='at path "/etc/ray/tls" in worker group'):
        validate(bad, gates)
    bad = copy.deepcopy(obj)
    bad["spec"]["autoscalerOptions"]["volumeMounts"] = [{"name": "ray-tls", "mountPath": "/x"}]
    with pytest.raises(KubeRayValidationError, match=r"autoscalerOptions\.volumeMounts"):
        validate(bad, gates)


def test_history_server_collector_rules_behind_their_gate() -> None:
    gates = _gated("RayClusterHistoryServer")
    obj = raycluster()
    ok = {
        "image": "c:1",
        "env": [
            {"name": "STORAGE_BACKEND", "value": "S3"},
            {"name": "S3_REGION", "value": "us-east-1"},
        ],
    }
    obj["spec"]["historyServerOptions"] = {"collectorOptions": ok}
    validate(obj, gates)
    cases = [
        ({}, "collectorOptions must be set"),
        ({"collectorOptions": {"env": []}}, "image must be set"),
        (
            {"collectorOptions": {"image": "c:1", "env": [{"name": "POD_IP", "value": "x"}]}},
            "must not contain POD_IP",
        ),
        ({"collectorOptions": {"image": "c:1"}}, "STORAGE_BACKEND environment variable must be"),
        (
            {
                "collectorOptions": {
                    "image": "c:1",
                    "env": [{"name": "STORAGE_BACKEND", "value": "gcs"}],
                }
            },
            "GCS_BUCKET",
        ),
        (
            {
                "collectorOptions": {
                    "image": "c:1",
                    "env": [{"name": "STORAGE_BACKEND", "value": "AzureBlob"}],
                }
            },
            "either",
        ),
        (
            {
                "collectorOptions": {
                    "image": "c:1",
                    "env": [{"name": "STORAGE_BACKEND", "value": "aliyunoss"}],
                }
            },
            "OSS_BUCKET",
        ),
    ]
    for hs, msg in cases:
        bad = copy.deepcopy(obj)
        bad["spec"]["historyServerOptions"] = hs
        with pytest.raises(KubeRayValidationError, match=msg):
            validate(bad, gates)
    bad = copy.deepcopy(obj)
    bad["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"].append(
        {"name": "ray-history-collector"}
    )
    with pytest.raises(KubeRayValidationError, match="must not define a container"):
        validate(bad, gates)


def test_suspend_needs_the_deletion_policy_gate() -> None:
    obj = raycluster()
    obj["spec"]["workerGroupSpecs"][0]["suspend"] = True
    with pytest.raises(KubeRayValidationError, match="RayJobDeletionPolicy feature gate"):
        validate(obj, DEFAULT_GATES - {"RayJobDeletionPolicy"})


def test_syntax_helpers_match_apimachinery() -> None:
    assert syn.parse_generic_version("v2.60.0-rc1") == (2, 60, 0)
    with pytest.raises(ValueError):
        syn.parse_generic_version("2")
    with pytest.raises(ValueError):
        syn.parse_generic_version("02.1")
    assert syn.parse_go_duration("1h30m") == 5400 and syn.parse_go_duration("-1.5s") == -1.5
    with pytest.raises(ValueError):
        syn.parse_go_duration("5")
    assert syn.qualified_name("ray.io/accelerator-type") == []
    assert syn.qualified_name("r1p.pool") == [] and syn.qualified_name("/x") != []
    assert syn.label_value("") == [] and syn.label_value("a" * 64) != []
    assert syn.dns1035_label("r1") == [] and syn.dns1035_label("1r") != []

"""Each ported KubeRay v1.7.0 RayService and RayJob rule refuses an object that breaks it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from r1platform.k8s.validation import KubeRayValidationError, validate

from .kuberay_objects import Mut, Obj, cs, rayjob, rayservice, wg

# name -> (factory, mutation, message fragment)
RULES: dict[str, tuple[Callable[[], Obj], Mut, str]] = {
    # RayService
    "service name length": (
        rayservice,
        lambda o: o["metadata"].update(name="s" * 48),
        "no more than 47 characters",
    ),
    "service name dns1035": (rayservice, lambda o: o["metadata"].update(name="Svc"), "DNS1035"),
    "initializing timeout format": (
        rayservice,
        lambda o: o["metadata"].update(annotations={"ray.io/initializing-timeout": "soon"}),
        "has invalid format: soon",
    ),
    "initializing timeout non-positive": (
        rayservice,
        lambda o: o["metadata"].update(annotations={"ray.io/initializing-timeout": "0s"}),
        "must be a positive duration",
    ),
    "initializing timeout negative seconds": (
        rayservice,
        lambda o: o["metadata"].update(annotations={"ray.io/initializing-timeout": "-3"}),
        "must be a positive integer",
    ),
    "k8s token auth on service": (
        rayservice,
        lambda o: cs(o).update(authOptions={"mode": "token", "enableK8sTokenAuth": True}),
        "K8s token auth mode is currently not supported for RayService",
    ),
    "service cluster spec rule": (
        rayservice,
        lambda o: wg({"spec": cs(o)}).update(minReplicas=5),
        "The RayService spec is invalid: worker group h100",
    ),
    "head service name": (
        rayservice,
        lambda o: cs(o)["headGroupSpec"].update(headService={"metadata": {"name": "x"}}),
        "headService.metadata.name should not be set",
    ),
    "service upgrade type": (
        rayservice,
        lambda o: o["spec"].update(upgradeStrategy={"type": "Rolling"}),
        "Spec.UpgradeStrategy.Type value Rolling",
    ),
    "negative deletion delay": (
        rayservice,
        lambda o: o["spec"].update(rayClusterDeletionDelaySeconds=-1),
        "RayClusterDeletionDelaySeconds should be",
    ),
    "incremental upgrade without options": (
        rayservice,
        lambda o: o["spec"].update(upgradeStrategy={"type": "NewClusterWithIncrementalUpgrade"}),
        "ClusterUpgradeOptions are required",
    ),
    "incremental upgrade without autoscaler": (
        rayservice,
        lambda o: (
            o["spec"].update(upgradeStrategy={"type": "NewClusterWithIncrementalUpgrade"}),
            cs(o).update(enableInTreeAutoscaling=False),
        ),
        "Ray Autoscaler is required",
    ),
    "incremental upgrade step > surge": (
        rayservice,
        lambda o: o["spec"].update(
            upgradeStrategy={
                "type": "NewClusterWithIncrementalUpgrade",
                "clusterUpgradeOptions": {
                    "maxSurgePercent": 10,
                    "stepSizePercent": 20,
                    "intervalSeconds": 5,
                    "gatewayClassName": "g",
                },
            }
        ),
        "stepSizePercent must be less than or equal",
    ),
    "incremental upgrade gateway": (
        rayservice,
        lambda o: o["spec"].update(
            upgradeStrategy={
                "type": "NewClusterWithIncrementalUpgrade",
                "clusterUpgradeOptions": {"stepSizePercent": 20, "intervalSeconds": 5},
            }
        ),
        "gatewayClassName is required",
    ),
    # RayJob
    "job status waiting": (
        rayjob,
        lambda o: o.update(status={"jobDeploymentStatus": "Waiting"}),
        "cannot be `Waiting`",
    ),
    "job name length": (rayjob, lambda o: o["metadata"].update(name="j" * 48), "no more than 47"),
    "suspend without shutdown": (
        rayjob,
        lambda o: o["spec"].update(
            suspend=True, shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=0
        ),
        "not allowed to be suspended",
    ),
    "negative ttl": (
        rayjob,
        lambda o: o["spec"].update(ttlSecondsAfterFinished=-1),
        "TTLSecondsAfterFinished must be a non-negative",
    ),
    "ttl without shutdown": (
        rayjob,
        lambda o: o["spec"].update(shutdownAfterJobFinishes=False),
        "cannot have TTLSecondsAfterFinished",
    ),
    "empty deletion strategy": (
        rayjob,
        lambda o: o["spec"].update(deletionStrategy={}),
        "requires either BOTH onSuccess and onFailure",
    ),
    "deletion rules with shutdown": (
        rayjob,
        lambda o: o["spec"].update(
            deletionStrategy={
                "deletionRules": [{"policy": "DeleteSelf", "condition": {"jobStatus": "SUCCEEDED"}}]
            }
        ),
        "mutually exclusive",
    ),
    "legacy half set": (
        rayjob,
        lambda o: o["spec"].update(deletionStrategy={"onSuccess": {"policy": "DeleteCluster"}}),
        "both DeletionStrategy.OnSuccess and",
    ),
    "legacy DeleteNone with shutdown": (
        rayjob,
        lambda o: o["spec"].update(
            deletionStrategy={
                "onSuccess": {"policy": "DeleteNone"},
                "onFailure": {"policy": "DeleteNone"},
            }
        ),
        "deletion policy is 'DeleteNone'",
    ),
    "legacy DeleteWorkers with autoscaling": (
        rayjob,
        lambda o: o["spec"].update(
            deletionStrategy={
                "onSuccess": {"policy": "DeleteWorkers"},
                "onFailure": {"policy": "DeleteCluster"},
            }
        ),
        "DeleteWorkers currently does not support",
    ),
    "deletion rule TTL order": (
        rayjob,
        lambda o: o["spec"].update(
            shutdownAfterJobFinishes=False,
            ttlSecondsAfterFinished=0,
            deletionStrategy={
                "deletionRules": [
                    {
                        "policy": "DeleteCluster",
                        "condition": {"jobStatus": "FAILED", "ttlSeconds": 60},
                    },
                    {
                        "policy": "DeleteSelf",
                        "condition": {"jobStatus": "FAILED", "ttlSeconds": 10},
                    },
                ]
            },
        ),
        "DeleteSelf TTL (10) must be >= DeleteCluster TTL (60)",
    ),
    "deletion rule both statuses": (
        rayjob,
        lambda o: o["spec"].update(
            shutdownAfterJobFinishes=False,
            ttlSecondsAfterFinished=0,
            deletionStrategy={
                "deletionRules": [
                    {
                        "policy": "DeleteSelf",
                        "condition": {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed"},
                    }
                ]
            },
        ),
        "cannot set both JobStatus and JobDeploymentStatus",
    ),
    "no cluster spec nor selector": (
        rayjob,
        lambda o: o["spec"].pop("rayClusterSpec"),
        "one of RayClusterSpec or ClusterSelector must be set",
    ),
    "selector with empty cluster": (
        rayjob,
        lambda o: (
            o["spec"].pop("rayClusterSpec"),
            o["spec"].update(
                clusterSelector={"ray.io/cluster": ""},
                shutdownAfterJobFinishes=False,
                ttlSecondsAfterFinished=0,
            ),
        ),
        "cluster name in ClusterSelector should not be empty",
    ),
    "selector in sidecar mode": (
        rayjob,
        lambda o: (
            o["spec"].pop("rayClusterSpec"),
            o["spec"].update(clusterSelector={"ray.io/cluster": "c"}, submissionMode="SidecarMode"),
        ),
        "ClusterSelector is not supported in SidecarMode",
    ),
    "selector with backoff": (
        rayjob,
        lambda o: (
            o["spec"].pop("rayClusterSpec"),
            o["spec"].update(clusterSelector={"ray.io/cluster": "c"}, backoffLimit=2),
        ),
        "BackoffLimit is incompatible with ClusterSelector",
    ),
    "interactive with backoff": (
        rayjob,
        lambda o: o["spec"].update(submissionMode="InteractiveMode", backoffLimit=1),
        "incompatible with InteractiveMode",
    ),
    "sidecar with submitter template": (
        rayjob,
        lambda o: o["spec"].update(submissionMode="SidecarMode", submitterPodTemplate={"spec": {}}),
        "SidecarMode doesn't support SubmitterPodTemplate",
    ),
    "k8s token auth on job": (
        rayjob,
        lambda o: cs(o).update(authOptions={"mode": "token", "enableK8sTokenAuth": True}),
        "K8s token auth mode is currently not supported for RayJob",
    ),
    "job cluster spec rule": (
        rayjob,
        lambda o: cs(o)["headGroupSpec"]["rayStartParams"].update(labels="x=y"),
        "The RayJob spec is invalid: rayStartParams['labels']",
    ),
    "runtime env yaml": (
        rayjob,
        lambda o: o["spec"].update(runtimeEnvYAML="- just\n- a list"),
        "failed to unmarshal RuntimeEnvYAML",
    ),
    "active deadline": (
        rayjob,
        lambda o: o["spec"].update(activeDeadlineSeconds=0),
        "activeDeadlineSeconds must be a positive",
    ),
    "pre-running deadline": (
        rayjob,
        lambda o: o["spec"].update(preRunningDeadlineSeconds=-1),
        "preRunningDeadlineSeconds must be a positive",
    ),
    "negative backoff": (
        rayjob,
        lambda o: o["spec"].update(backoffLimit=-1),
        "backoffLimit must be a positive",
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

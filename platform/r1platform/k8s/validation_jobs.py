"""KubeRay v1.7.0's RayJob deletion rules (TTL, deletionStrategy legacy policies and
deletionRules), ported from validation.go (Apache-2.0)."""

from __future__ import annotations

from .validation_cluster import Obj, autoscaling_enabled, fail

_P = "The RayJob spec is invalid: "
_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")


def check_deletion_configuration(spec: Obj, gates: frozenset[str]) -> None:
    shutdown = spec.get("shutdownAfterJobFinishes") is True
    if not shutdown and (spec.get("ttlSecondsAfterFinished") or 0) > 0:
        fail(
            f"{_P}a RayJob with shutdownAfterJobFinishes set to false cannot have "
            "TTLSecondsAfterFinished"
        )
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return
    if "RayJobDeletionPolicy" not in gates:
        fail("RayJobDeletionPolicy feature gate must be enabled to use DeletionStrategy")
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = bool(strategy.get("deletionRules"))
    if rules and shutdown:
        fail(
            f"{_P}spec.shutdownAfterJobFinishes and spec.deletionStrategy.deletionRules are "
            "mutually exclusive"
        )
    if rules and legacy:
        fail(
            f"{_P}Cannot use both legacy onSuccess/onFailure fields and deletionRules "
            "simultaneously"
        )
    if legacy:
        check_legacy_deletion_policies(spec)
    elif rules:
        check_deletion_rules(spec)
    else:
        fail(
            f"{_P}DeletionStrategy requires either BOTH onSuccess and onFailure, OR the "
            "deletionRules field (cannot be empty)"
        )


def check_legacy_deletion_policies(spec: Obj) -> None:
    strategy = spec["deletionStrategy"]
    selector_mode = bool(spec.get("clusterSelector"))
    on_success, on_failure = strategy.get("onSuccess"), strategy.get("onFailure")
    if on_success is None or on_failure is None:
        fail(
            "both DeletionStrategy.OnSuccess and DeletionStrategy.OnFailure must be set when "
            "using the legacy deletion policy fields of DeletionStrategy"
        )
    ok, bad = on_success.get("policy"), on_failure.get("policy")
    if ok is None:
        fail(
            "the DeletionPolicyType field of DeletionStrategy.OnSuccess cannot be unset when "
            "DeletionStrategy is enabled"
        )
    if bad is None:
        fail(
            "the DeletionPolicyType field of DeletionStrategy.OnFailure cannot be unset when "
            "DeletionStrategy is enabled"
        )
    if selector_mode:
        if ok in ("DeleteCluster", "DeleteWorkers"):
            fail(f"the ClusterSelector mode doesn't support DeletionStrategy={ok} on success")
        if bad in ("DeleteCluster", "DeleteWorkers"):
            fail(f"the ClusterSelector mode doesn't support DeletionStrategy={bad} on failure")
    if "DeleteWorkers" in (ok, bad) and autoscaling_enabled(spec.get("rayClusterSpec")):
        fail(
            "DeletionStrategy=DeleteWorkers currently does not support RayCluster with "
            "autoscaling enabled"
        )
    if spec.get("shutdownAfterJobFinishes") is True and "DeleteNone" in (ok, bad):
        fail(f"{_P}shutdownAfterJobFinshes is set to 'true' while deletion policy is 'DeleteNone'")


def check_deletion_condition(cond: Obj) -> str | None:
    has_job, has_dep = (
        cond.get("jobStatus") is not None,
        cond.get("jobDeploymentStatus") is not None,
    )
    if has_job and has_dep:
        return "cannot set both JobStatus and JobDeploymentStatus at the same time"
    if not has_job and not has_dep:
        return "exactly one of JobStatus and JobDeploymentStatus must be set"
    if (cond.get("ttlSeconds") or 0) < 0:
        return "TTLSeconds must be non-negative"
    return None


def check_deletion_rules(spec: Obj) -> None:
    """All rule errors joined, like errors.Join in the operator."""
    selector_mode = bool(spec.get("clusterSelector"))
    autoscaling = autoscaling_enabled(spec.get("rayClusterSpec"))
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    errs: list[str] = []
    for i, rule in enumerate(spec["deletionStrategy"]["deletionRules"]):
        cond = rule.get("condition") or {}
        policy = rule.get("policy")
        err = check_deletion_condition(cond)
        if err:
            errs.append(f"deletionRules[{i}]: {err}")
            continue
        if selector_mode and policy in ("DeleteCluster", "DeleteWorkers"):
            errs.append(
                f"deletionRules[{i}]: DeletionPolicyType '{policy}' not supported when "
                "ClusterSelector is set"
            )
            continue
        if autoscaling and policy == "DeleteWorkers":
            errs.append(
                f"deletionRules[{i}]: DeletionPolicyType 'DeleteWorkers' not supported "
                "with autoscaling enabled"
            )
            continue
        if cond.get("jobStatus") is not None:
            key = ("JobStatus", cond["jobStatus"])
        else:
            key = ("JobDeploymentStatus", cond["jobDeploymentStatus"])
        by_policy = grouped.setdefault(key, {})
        if policy in by_policy:
            errs.append(
                f"deletionRules[{i}]: duplicate rule for DeletionPolicyType '{policy}' "
                f"and {key[0]} '{key[1]}'"
            )
            continue
        by_policy[policy] = cond.get("ttlSeconds") or 0
    for (ctype, cval), ttls in grouped.items():
        errs += ttl_order_errors(ttls, ctype, cval)
    if errs:
        fail("\n".join(errs))


def ttl_order_errors(ttls: dict[str, int], ctype: str, cval: str) -> list[str]:
    """Workers <= Cluster <= Self: a lower TTL deletes earlier."""
    errs, prev = [], None
    for policy in _ORDER:
        if policy not in ttls:
            continue
        if prev is not None and ttls[policy] < prev[1]:
            errs.append(
                f"for {ctype} '{cval}': {policy} TTL ({ttls[policy]}) must be >= "
                f"{prev[0]} TTL ({prev[1]})"
            )
        prev = (policy, ttls[policy])
    return errs

"""The Kubernetes permissions `r1p control --kubernetes` needs: exactly the calls it makes.

Tests record every request the actuators and discovery send to an in-process API server and
compare the set with RBAC_RULES; the chart's Role/ClusterRole is checked against it in turn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

GROUP, VERSION, RAYSERVICES = "ray.io", "v1", "rayservices"


class RbacRule(NamedTuple):
    api_group: str  # "" is the core group
    resource: str
    verbs: tuple[str, ...]


# Nodes are cluster-scoped (ClusterRole); rayservices are namespaced (Role).
RBAC_RULES: tuple[RbacRule, ...] = (
    RbacRule("", "nodes", ("list",)),  # pool discovery: CoreV1Api.list_node
    RbacRule(GROUP, RAYSERVICES, ("get", "patch")),  # read + patch spec.serveConfigV2
)
CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset({("", "nodes")})


def rbac_calls(rules: Iterable[RbacRule] = RBAC_RULES) -> frozenset[tuple[str, str, str]]:
    """(api_group, resource, verb) triples the rules allow."""
    return frozenset((r.api_group, r.resource, v) for r in rules for v in r.verbs)

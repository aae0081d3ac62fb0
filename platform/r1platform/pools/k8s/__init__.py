"""Kubernetes-side actuators of the pool controller (`r1p control --kubernetes`).

KubeRay stays the source of truth: Serve replica counts go into the RayService's serveConfigV2
(`RayServiceServeActuator`), node counts only through Ray's autoscaler, and RBAC_RULES lists
exactly the API calls made here.
"""

from .rbac import CLUSTER_SCOPED, RBAC_RULES, RbacRule, rbac_calls
from .serve import RayServiceServeActuator
from .serve_config import REPLICAS_ANNOTATION, RayServiceConfigError, RayServiceConflictError
from .wiring import (
    GcsAutoscalerCapacity,
    default_namespace,
    gcs_address_for,
    k8s_live_fleet,
    live_kubernetes,
    load_api_client,
    ray_auth_env,
)

__all__ = [
    "CLUSTER_SCOPED",
    "RBAC_RULES",
    "REPLICAS_ANNOTATION",
    "GcsAutoscalerCapacity",
    "RayServiceConfigError",
    "RayServiceConflictError",
    "RayServiceServeActuator",
    "RbacRule",
    "default_namespace",
    "gcs_address_for",
    "k8s_live_fleet",
    "live_kubernetes",
    "load_api_client",
    "ray_auth_env",
    "rbac_calls",
]

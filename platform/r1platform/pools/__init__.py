"""GPU-pool control plane: catalog, pools, model fit, planner, controller, simulator.

Public entry points: `models.load_pools`, `models.node_resources`, `models.node_labels`,
`inventory.from_ray`, `planner.plan`, `controller.Controller`, `cli.register`.
"""

from .errors import FitError, InfeasibleError, PoolsConfigError, PoolsError, UnknownGpuError
from .models import Pool, load_pools, node_labels, node_resources

__all__ = [
    "FitError",
    "InfeasibleError",
    "Pool",
    "PoolsConfigError",
    "PoolsError",
    "UnknownGpuError",
    "load_pools",
    "node_labels",
    "node_resources",
]

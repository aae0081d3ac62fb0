"""GPU-pool control plane: catalog, pools, model fit, planner, controller, simulator.

Public entry points: `fleet.load_pools`, `fleet.node_resources`, `fleet.node_labels`,
`inventory.from_ray`, `planner.plan(plan_model.PlanRequest)`, `controller.Controller` (its IO
Protocols in `protocols`), `prom.ControllerMetrics`, `cli.register`.
"""

from .errors import FitError, InfeasibleError, PoolsConfigError, PoolsError, UnknownGpuError
from .fleet import Pool, load_pools, node_labels, node_resources

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

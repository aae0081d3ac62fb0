"""The planner's data model: the request it answers and the plan it returns.

Every input of a solve is a field of `PlanRequest` (nothing is read from globals or context),
so the ILP and the greedy fallback see exactly the same problem.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from .fleet import Fleet
from .workloads import Workloads

Method = Literal["ilp", "greedy"]
Pair = tuple[str, str]  # (deployment, pool)

Profiles = Mapping[tuple[str, str, int, int], float]  # (model, gpu, tp, pp) -> measured rps


@dataclass(frozen=True)
class PlanRequest:
    """One placement problem.

    - `rates` overrides request_rate per deployment (the controller passes live load);
    - `pinned` fixes TP x PP per (deployment, pool) that already runs: changing the layout of
      running replicas means replacing every one of them;
    - `keep` is a floor of replicas per (deployment, pool): the controller keeps running
      replicas in place while demand is not falling, so scale-ups add capacity instead of
      migrating it;
    - `job_pools` keeps a running training job in its pool;
    - `held` GPUs per pool are off limits to serving (the controller's no-reclaim alternative);
    - `method` "ilp" falls back to the greedy heuristic when HiGHS finds nothing in
      `time_limit_s`; "greedy" skips the ILP;
    - `exact` skips option pruning and LP anchoring (slow at fleet scale; the reference).
    """

    fleet: Fleet
    workloads: Workloads
    rates: Mapping[str, float] = field(default_factory=dict)
    pinned: Mapping[Pair, tuple[int, int]] = field(default_factory=dict)
    keep: Mapping[Pair, int] = field(default_factory=dict)
    job_pools: Mapping[str, str] = field(default_factory=dict)
    held: Mapping[str, int] = field(default_factory=dict)
    profiles: Profiles | None = None
    method: Method = "ilp"
    time_limit_s: float = 10.0
    mip_gap: float = 1e-4
    exact: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("ilp", "greedy"):
            raise ValueError(f"method must be 'ilp' or 'greedy', got {self.method!r}")
        if self.time_limit_s <= 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")

    @property
    def floors(self) -> dict[Pair, int]:
        """The replica floors that bind (keep entries above zero)."""
        return {k: v for k, v in self.keep.items() if v > 0}

    def serving_capacity(self) -> dict[str, int]:
        """GPUs per pool serving may use: the pool's capacity less what training holds."""
        return {
            p.name: max(p.gpus_capacity - self.held.get(p.name, 0), 0) for p in self.fleet.pools
        }


@dataclass(frozen=True)
class Option:
    deployment: str
    pool: str
    gpu: str
    tp: int
    pp: int
    gpus_per_replica: int
    replica_capacity_rps: float
    replica_cost_per_hour: float
    batch: int
    tpot_s: float
    prefill_s: float
    source: str
    # Replica rps within the SLO per size class of the deployment (0: this layout cannot serve
    # the class); replica_capacity_rps is the rps at the mix of the classes it can serve.
    class_capacity_rps: tuple[float, ...] = ()

    @property
    def class_caps(self) -> tuple[float, ...]:
        return self.class_capacity_rps or (self.replica_capacity_rps,)

    @property
    def cost_per_rps(self) -> float:
        return self.replica_cost_per_hour / self.replica_capacity_rps


@dataclass
class ServingAssignment:
    deployment: str
    pool: str
    gpu: str
    replicas: int
    tp: int
    pp: int
    gpus: int
    capacity_rps: float
    cost_per_hour: float
    # What the replicas run: the workload's model and the engine profile of this GPU
    # (pools.engine_profiles); serve_config.serve_config turns these into the Serve config.
    model: str = ""
    dtype: str | None = None
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    fp8_kernel: str | None = None


@dataclass
class TrainingAssignment:
    job: str
    pool: str
    gpus: int


@dataclass
class PoolUsage:
    pool: str
    gpu: str
    gpus_capacity: int
    gpus_serving: int
    gpus_training: int
    gpus_free: int


@dataclass
class Plan:
    feasible: bool
    cost_per_hour: float
    serving: list[ServingAssignment] = field(default_factory=list)
    training: list[TrainingAssignment] = field(default_factory=list)
    pools: list[PoolUsage] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    binding: list[str] = field(default_factory=list)
    solver: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["cost_per_hour"] = round(self.cost_per_hour, 6)
        for s in d["serving"]:
            s["capacity_rps"] = round(s["capacity_rps"], 6)
            s["cost_per_hour"] = round(s["cost_per_hour"], 6)
        d["options"] = [
            {
                "deployment": o.deployment,
                "pool": o.pool,
                "gpu": o.gpu,
                "tp": o.tp,
                "pp": o.pp,
                "gpus_per_replica": o.gpus_per_replica,
                "replica_capacity_rps": round(o.replica_capacity_rps, 6),
                "replica_cost_per_hour": round(o.replica_cost_per_hour, 6),
                "batch": o.batch,
                "tpot_s": round(o.tpot_s, 6),
                "prefill_s": round(o.prefill_s, 6),
                "source": o.source,
                "class_capacity_rps": [round(c, 6) for c in o.class_caps],
            }
            for o in self.options
        ]
        return d

    def replicas(self) -> dict[tuple[str, str], int]:
        return {(s.deployment, s.pool): s.replicas for s in self.serving}

    def training_gpus(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for t in self.training:
            out[t.job] += t.gpus
        return dict(out)

"""The `Pool` model shared by every pool source (YAML, Ray discovery, Kubernetes discovery).

A pool is a group of identical nodes: one GPU type, `gpus_per_node` GPUs each, between
`min_nodes` and `max_nodes` of them (the autoscaler's range), `nodes` right now. The planner may
use max_nodes x gpus_per_node GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from r1platform.contracts.resources import ACCELERATOR_LABEL, POOL_LABEL, accelerator_key, pool_key

from .catalog import Catalog, load_catalog
from .errors import PoolsConfigError

# Ray resource names and k8s label values both accept this alphabet.
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    gpu: str
    nodes: int = Field(ge=0)
    gpus_per_node: int = Field(ge=1)
    min_nodes: int = Field(default=0, ge=0)
    max_nodes: int | None = Field(default=None, ge=0)
    cost_per_gpu_hour: float | None = Field(default=None, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Pool:
        if not _POOL_NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must match {_POOL_NAME.pattern}")
        if self.max_nodes is None:
            object.__setattr__(self, "max_nodes", max(self.nodes, self.min_nodes))
        assert self.max_nodes is not None
        if self.max_nodes < self.min_nodes:
            raise ValueError(f"max_nodes {self.max_nodes} < min_nodes {self.min_nodes}")
        if self.nodes > self.max_nodes:
            raise ValueError(f"nodes {self.nodes} > max_nodes {self.max_nodes}")
        if self.max_nodes * self.gpus_per_node == 0:
            raise ValueError("has zero GPUs (max_nodes x gpus_per_node = 0)")
        return self

    @property
    def gpus_capacity(self) -> int:
        """GPUs the planner may use: the autoscaler's ceiling, not today's node count."""
        return int(self.max_nodes or 0) * self.gpus_per_node

    def price(self, catalog: Catalog) -> float:
        if self.cost_per_gpu_hour is not None:
            return self.cost_per_gpu_hour
        return catalog[self.gpu].cost_per_gpu_hour


def node_resources(pool: Pool) -> dict[str, float]:
    """Custom resources a virtual (CPU-only) worker node of `pool` declares to Ray.

    No "GPU" resource: on a CPU host Ray would try to assign CUDA devices. Real GPU nodes carry
    "GPU" instead, and `inventory.from_ray` understands both.
    """
    n = float(pool.gpus_per_node)
    return {pool_key(pool.name): n, accelerator_key(pool.gpu): n}


def node_labels(pool: Pool) -> dict[str, str]:
    return {POOL_LABEL: pool.name, ACCELERATOR_LABEL: pool.gpu}


def _item_name(item: Any, index: int) -> str:
    if isinstance(item, Mapping) and item.get("name"):
        return f"pool {item['name']!r}"
    return f"pools[{index}]"


def parse_pools(data: Any, catalog: Catalog | None = None, *, source: str = "pools") -> list[Pool]:
    """Validate the `pools:` document; GPU names are resolved to catalog names."""
    catalog = catalog or load_catalog()
    if not isinstance(data, Mapping) or "pools" not in data:
        raise PoolsConfigError(f"{source}: expected a mapping with a 'pools:' list")
    items = data["pools"]
    if not isinstance(items, list) or not items:
        raise PoolsConfigError(f"{source}: 'pools' must be a non-empty list")
    pools: list[Pool] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{source}: {_item_name(item, i)}"
        if not isinstance(item, Mapping):
            raise PoolsConfigError(f"{where}: expected a mapping, got {type(item).__name__}")
        fields = dict(item)
        if "gpu" not in fields:
            raise PoolsConfigError(f"{where}: missing field 'gpu'")
        try:
            fields["gpu"] = catalog.resolve(str(fields["gpu"]))
        except PoolsConfigError as e:
            raise type(e)(f"{where}: {e}") from None
        try:
            pool = Pool(**fields)
        except ValidationError as e:
            raise PoolsConfigError(f"{where}: {_first_error(e)}") from None
        except TypeError as e:
            raise PoolsConfigError(f"{where}: {e}") from None
        if pool.name in seen:
            raise PoolsConfigError(f"{where}: duplicate pool name")
        seen.add(pool.name)
        pools.append(pool)
    return pools


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def read_yaml(path: str | Path, what: str) -> Any:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise PoolsConfigError(f"{what} file {str(p)!r}: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise PoolsConfigError(f"{what} file {str(p)!r}: malformed YAML{at}: {problem}") from None


class Fleet(BaseModel):
    """Pools plus the catalog they were validated against (with the file's overrides)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    pools: list[Pool]
    catalog: Any  # Catalog; pydantic has no schema for it

    def price(self, pool: Pool) -> float:
        return pool.price(self.catalog)


def load_fleet(path: str | Path) -> Fleet:
    """Pools YAML plus its optional `gpu_types:` catalog overrides."""
    data = read_yaml(path, "pools")
    src = str(path)
    overrides = data.get("gpu_types") if isinstance(data, Mapping) else None
    catalog = load_catalog(overrides)
    return Fleet(pools=parse_pools(data, catalog, source=src), catalog=catalog)


def load_pools(path: str | Path) -> list[Pool]:
    """Read a pools YAML: `pools: [{name, gpu, nodes, gpus_per_node, min_nodes, max_nodes,
    cost_per_gpu_hour?, labels?, taints?}]`. Raises PoolsConfigError (a ValueError) with a
    one-line message naming the bad item."""
    return load_fleet(path).pools

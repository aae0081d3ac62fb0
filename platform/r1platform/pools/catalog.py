"""GPU catalog: the figures in catalog.yaml plus user overrides, and GPU-name normalisation.

Discovery sources spell GPU names differently (Ray: "A100-80G", GPU feature discovery:
"NVIDIA-A100-SXM4-80GB"), so every name goes through `Catalog.resolve` before use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import PoolsConfigError, UnknownGpuError


class GpuType(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    memory_gb: float = Field(gt=0)
    hbm_bandwidth_gbs: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    nvlink: bool
    nvlink_gbs: float = Field(ge=0)
    fp8: bool = False
    # CUDA sm version (9.0 Hopper, 8.9 Ada, 8.0/8.6 Ampere, 7.5 Turing, 7.0 Volta): what
    # engine_profiles keys dtype and FP8 support on. None for a user-added type that did not say;
    # serving then refuses to pick a profile for it instead of guessing.
    compute_capability: float | None = Field(None, gt=0)
    cost_per_gpu_hour: float = Field(ge=0)
    ray_names: tuple[str, ...] = ()
    k8s_products: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


def _key(name: str) -> str:
    key = re.sub(r"[^A-Z0-9]", "", name.upper())
    for prefix in ("NVIDIA", "TESLA"):
        if key.startswith(prefix) and key != prefix:
            key = key[len(prefix) :]
    return key


class Catalog:
    """Immutable lookup of GPU types by canonical name or any known alias."""

    def __init__(self, types: Mapping[str, GpuType]) -> None:
        self._types = dict(sorted(types.items()))
        self._alias: dict[str, str] = {}
        for t in self._types.values():
            for alias in (t.name, *t.ray_names, *t.k8s_products):
                self._alias.setdefault(_key(alias), t.name)

    def names(self) -> list[str]:
        return list(self._types)

    def __contains__(self, name: str) -> bool:
        return self.try_resolve(name) is not None

    def __getitem__(self, name: str) -> GpuType:
        return self._types[self.resolve(name)]

    def types(self) -> list[GpuType]:
        return list(self._types.values())

    def try_resolve(self, raw: str, memory_gb: float | None = None) -> str | None:
        """Canonical name for `raw`, or None. `memory_gb` disambiguates e.g. bare "A100"."""
        key = _key(raw)
        if memory_gb is not None:
            family = [t for t in self._types.values() if _key(t.name).startswith(key) and key]
            if len(family) > 1:
                best = min(family, key=lambda t: abs(t.memory_gb - memory_gb))
                return best.name
        if key in self._alias:
            return self._alias[key]
        # Unlisted product strings such as "NVIDIA-A100-SXM4-80GB-MIG": take the longest alias
        # that is a prefix and ends where a word would ("H1000" is not an H100, "H200" not an H20).
        best_alias = max(
            (a for a in self._alias if key.startswith(a) and not key[len(a) :][:1].isdigit()),
            key=len,
            default=None,
        )
        return self._alias[best_alias] if best_alias else None

    def resolve(self, raw: str, memory_gb: float | None = None) -> str:
        name = self.try_resolve(raw, memory_gb)
        if name is None:
            raise UnknownGpuError(f"unknown GPU type {raw!r}; known: {', '.join(self.names())}")
        return name

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]] | None) -> Catalog:
        """Override any field of a known type, or add a new type given all required fields."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise PoolsConfigError("gpu_types must be a mapping of GPU name to fields")
        types = dict(self._types)
        for raw, fields in overrides.items():
            if not isinstance(fields, Mapping):
                raise PoolsConfigError(f"gpu_types.{raw}: expected a mapping of fields")
            name = self.try_resolve(str(raw))
            base = types[name].model_dump() if name else {"name": str(raw)}
            types[base["name"]] = _build(base["name"], {**base, **dict(fields)})
        return Catalog(types)


def _build(name: str, fields: Mapping[str, Any]) -> GpuType:
    try:
        return GpuType(**{**fields, "name": name})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise PoolsConfigError(f"gpu_types.{name}.{loc}: {err['msg']}") from None


@lru_cache(maxsize=1)
def _default() -> Catalog:
    text = resources.files(__package__).joinpath("catalog.yaml").read_text()
    data = yaml.safe_load(text)["gpu_types"]
    return Catalog({name: _build(name, fields) for name, fields in data.items()})


def load_catalog(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Catalog:
    """The built-in catalog, with optional per-type field overrides."""
    return _default().with_overrides(overrides)

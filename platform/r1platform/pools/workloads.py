"""Workloads YAML: serving deployments (rate + SLO) and training jobs (GPU range + priority).

```yaml
serving:
  - {name, model, request_rate, avg_input_tokens, avg_output_tokens,
     slo: {ttft_p99_s, tpot_p99_s}, gpu_types?: [..], context_tokens?, concurrency?,
     min_replicas?, replica_rps?: {GPU: rps}, dtype?, quantization?, kv_cache_dtype?,
     size_mix?: [{share, input_tokens, output_tokens}, ..]}
training:
  - {name, model, gpus: {min, max}, gpu_types?: [..], priority,
     parallel_strategy?: auto|ddp|fsdp, precision?: auto|fp32|bf16, kl_reference?}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from r1platform.training.fsdp import Precision, Strategy

from .catalog import Catalog, load_catalog
from .errors import PoolsConfigError
from .fit import Slo, model_spec
from .fleet import _first_error, read_yaml


class SloSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ttft_p99_s: float = Field(gt=0)
    tpot_p99_s: float = Field(gt=0)

    def slo(self) -> Slo:
        return Slo(self.ttft_p99_s, self.tpot_p99_s)


class SizeClass(BaseModel):
    """One request-size class of a deployment's traffic: its share of requests and their size."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    share: float = Field(gt=0, le=1)
    input_tokens: float = Field(gt=0)
    output_tokens: float = Field(gt=0)


class ServingWorkload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    model: str
    request_rate: float = Field(ge=0)
    avg_input_tokens: float = Field(gt=0)
    avg_output_tokens: float = Field(gt=0)
    slo: SloSpec
    gpu_types: list[str] | None = None
    # KV each replica must hold: context_tokens x concurrency (defaults: one average request
    # rounded up to 4k, 8 concurrent).
    context_tokens: int | None = Field(default=None, gt=0)
    concurrency: int = Field(default=8, ge=1)
    # Measured requests/s one replica sustains at the SLO, by GPU type (bench output). It
    # overrides the roofline estimate, which knows nothing of CPU-run or unusual engines.
    replica_rps: dict[str, float] | None = None
    # Replicas kept even when no request arrives: an endpoint that scales to zero answers the
    # next request only after minutes of weight loading, so the default keeps one up.
    min_replicas: int = Field(default=1, ge=0)
    # Request-size distribution (Melange, Griggs et al. 2024): short requests are cheapest on
    # small GPUs, long ones on big GPUs, so the planner gives each class its own throughput per
    # GPU type and routes each class to the layouts that serve it cheapest. Absent: one class
    # at the averages. Shares must sum to 1 and the share-weighted sizes must match avg_*.
    size_mix: list[SizeClass] | None = Field(default=None, min_length=1)
    # Engine profile choices (pools.engine_profiles); unset = the default of each pool's GPU.
    # A pool whose GPU cannot run the choice is not offered to this deployment.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    quantization: Literal["fp8", "none"] | None = None
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] | None = None

    def engine_choices(self) -> dict[str, str | None]:
        return {
            "dtype": self.dtype,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_cache_dtype,
        }

    @model_validator(mode="after")
    def _mix_matches_averages(self) -> ServingWorkload:
        if not self.size_mix:
            return self
        total = sum(c.share for c in self.size_mix)
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"size_mix shares sum to {total:.4f}, not 1")
        for field, avg in (
            ("input_tokens", self.avg_input_tokens),
            ("output_tokens", self.avg_output_tokens),
        ):
            mean = sum(c.share * getattr(c, field) for c in self.size_mix) / total
            if abs(mean - avg) > 0.05 * avg:
                raise ValueError(
                    f"size_mix mean {field} {mean:.0f} differs from avg_{field} {avg:.0f} "
                    "by more than 5%"
                )
        return self

    def size_classes(self) -> list[tuple[float, float, float]]:
        """(share, input_tokens, output_tokens) per class; one class at the averages if no mix."""
        if not self.size_mix:
            return [(1.0, self.avg_input_tokens, self.avg_output_tokens)]
        total = sum(c.share for c in self.size_mix)
        return [(c.share / total, c.input_tokens, c.output_tokens) for c in self.size_mix]

    def kv_tokens(self) -> int:
        ctx = self.context_tokens or max(4096, int(self.avg_input_tokens + self.avg_output_tokens))
        return ctx * self.concurrency


class GpuRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: int = Field(ge=0)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _order(self) -> GpuRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class TrainingJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    model: str
    gpus: GpuRange
    gpu_types: list[str] | None = None
    priority: int = 0
    # The job's GRPOSettings parallel_strategy / precision: the memory mode the planner sizes
    # (pools/training_memory.py), resolved by the trainer's own rule on each pool's GPU.
    parallel_strategy: Strategy = "auto"
    precision: Precision = "auto"
    kl_reference: bool = False  # beta > 0: a frozen reference model beside the policy


class Workloads(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    serving: list[ServingWorkload] = Field(default_factory=list)
    training: list[TrainingJob] = Field(default_factory=list)


def _parse_items(data: Any, key: str, cls: type[BaseModel], catalog: Catalog, src: str) -> list:
    items = data.get(key) or []
    if not isinstance(items, list):
        raise PoolsConfigError(f"{src}: '{key}' must be a list")
    out, seen = [], set()
    for i, item in enumerate(items):
        label = (
            f"{key} {item['name']!r}"
            if isinstance(item, Mapping) and item.get("name")
            else f"{key}[{i}]"
        )
        if not isinstance(item, Mapping):
            raise PoolsConfigError(f"{src}: {label}: expected a mapping")
        fields = dict(item)
        try:
            if fields.get("gpu_types") is not None:
                if not isinstance(fields["gpu_types"], list):
                    raise PoolsConfigError("gpu_types must be a list")
                fields["gpu_types"] = [catalog.resolve(str(g)) for g in fields["gpu_types"]]
            obj = cls(**fields)
            model_spec(obj.model)  # type: ignore[attr-defined]
        except ValidationError as e:
            raise PoolsConfigError(f"{src}: {label}: {_first_error(e)}") from None
        except PoolsConfigError as e:
            raise type(e)(f"{src}: {label}: {e}") from None
        if obj.name in seen:  # type: ignore[attr-defined]
            raise PoolsConfigError(f"{src}: {label}: duplicate name")
        seen.add(obj.name)  # type: ignore[attr-defined]
        out.append(obj)
    return out


def parse_workloads(data: Any, catalog: Catalog | None = None, *, source: str = "workloads"):
    catalog = catalog or load_catalog()
    if not isinstance(data, Mapping) or not ({"serving", "training"} & set(data)):
        raise PoolsConfigError(f"{source}: expected a mapping with 'serving:' and/or 'training:'")
    unknown = set(data) - {"serving", "training"}
    if unknown:
        raise PoolsConfigError(f"{source}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    return Workloads(
        serving=_parse_items(data, "serving", ServingWorkload, catalog, source),
        training=_parse_items(data, "training", TrainingJob, catalog, source),
    )


def load_workloads(path: str | Path, catalog: Catalog | None = None) -> Workloads:
    return parse_workloads(read_yaml(path, "workloads"), catalog, source=str(path))

"""Cold-start lead time of a serving replica, per GPU type and model size: the time from
"start a replica" to "it serves", which a controller must scale ahead by.

Three parts, each from what the catalog and the model's config already say:
- weight load from storage: the replica's weights read at the storage throughput (network
  volume or object store; every TP rank reads its shard, the replica's reads share one link);
- engine start: process, CUDA context and, with TP > 1, the NCCL communicator;
- warm-up: the engine's profiling pass and CUDA-graph capture, a fixed number of forward passes
  whose time scales with active parameters over the GPUs' compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .catalog import GpuType
from .fit import model_spec

# A vLLM-style warm-up runs the profiling batch (max_num_batched_tokens) and captures graphs
# for ~35 batch sizes; together about three profiling-batch forward passes.
_WARMUP_TOKENS = 3 * 8192
_MFU = 0.4  # achieved share of peak bf16 FLOPs in those large batches
_ENGINE_START_S = 20.0  # process + CUDA context + engine construction
_NCCL_S = 5.0  # per doubling of TP: communicator set-up and the first all-reduce
_WARMUP_FIXED_S = 10.0  # graph capture bookkeeping that does not scale with the model


@dataclass(frozen=True)
class ColdStart:
    load_s: float
    engine_s: float
    warmup_s: float

    @property
    def total_s(self) -> float:
        return self.load_s + self.engine_s + self.warmup_s


def cold_start(model: str, gpu: GpuType, tp: int = 1, storage_gbps: float = 2.0) -> ColdStart:
    """The three parts of a replica's start for `model` on `tp` x `gpu`."""
    if storage_gbps <= 0:
        raise ValueError(f"storage_gbps must be > 0, got {storage_gbps}")
    spec = model_spec(model)
    tp = max(int(tp), 1)
    load = spec.weight_bytes / (storage_gbps * 1e9)
    engine = _ENGINE_START_S + _NCCL_S * math.log2(tp)
    flops = 2.0 * spec.active_params * _WARMUP_TOKENS
    warmup = _WARMUP_FIXED_S + flops / (gpu.bf16_tflops * 1e12 * _MFU * tp)
    return ColdStart(load, engine, warmup)


def lead_time_s(model: str, gpu: GpuType, tp: int = 1, storage_gbps: float = 2.0) -> float:
    """Seconds from starting a replica to its first served request."""
    return cold_start(model, gpu, tp, storage_gbps).total_s

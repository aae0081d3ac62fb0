"""Training memory per GPU, for the mode the job will really run.

The mode is the trainer's own rule (`training.fsdp.resolve_mode`) applied to the job's
`parallel_strategy` / `precision` on the pool's GPU, so the planner and the trainer cannot
disagree: a GPU job defaults to FSDP with bf16 compute (fp32 on GPUs without bf16), and a job
pinned to DDP is sized as DDP. Bytes per parameter, AdamW, activations excluded:

- **ddp**: every GPU holds fp32 weights (4), gradients (4), DDP's gradient buckets (4, a second
  copy by default) and AdamW m, v (8): 20 B/param, whatever the GPU count.
- **fsdp**: fp32 master weights, gradients and m, v (16 B/param) sharded over the job's GPUs;
  plus two decoder blocks unsharded in the compute dtype (the running one and the prefetched
  one, weights and gradients); plus, on rank 0, the whole model in the compute dtype while a
  weight push gathers it (training/fsdp.SyncWeights).

A frozen KL reference (`kl_reference`, beta > 0) adds fp32 weights under DDP and sharded
compute-dtype weights under FSDP.
"""

from __future__ import annotations

from r1platform.training.fsdp import TrainMode, resolve_mode

from . import fit as fitmod
from .catalog import GpuType
from .engine_profiles import EngineProfileError, rule_for
from .fleet import Fleet, Pool
from .workloads import TrainingJob

FP32 = 4
ADAM_STATE = 8  # fp32 m and v
DDP_BUCKETS = 4  # DistributedDataParallel's gradient buckets: one more fp32 gradient copy
UNSHARDED_BLOCKS = 2  # FSDP holds the running block and the prefetched one in full


def job_mode(job: TrainingJob, gpu: GpuType) -> TrainMode:
    """The mode `job` runs on `gpu`: the trainer's `auto` rule with the GPU's bf16 support."""
    try:
        bf16_ok = rule_for(gpu).bf16
    except EngineProfileError:
        bf16_ok = False  # unknown capability: size it as fp32 compute, the larger one
    return resolve_mode(job.parallel_strategy, job.precision, on_gpu=True, bf16_ok=bf16_ok)


def bytes_per_gpu(spec: fitmod.ModelSpec, mode: TrainMode, gpus: int, *, reference: bool) -> float:
    """Peak bytes on the fullest GPU (rank 0) of a job of `gpus` GPUs in `mode`."""
    p = spec.params
    if mode.strategy == "ddp":
        return p * (FP32 + FP32 + DDP_BUCKETS + ADAM_STATE) + (p * FP32 if reference else 0.0)
    c = mode.compute_bytes
    sharded = p * (FP32 + FP32 + ADAM_STATE) / gpus + (p * c / gpus if reference else 0.0)
    working = UNSHARDED_BLOCKS * p / max(spec.layers, 1) * c * 2
    gathered = p * c  # the weight push's full copy on rank 0
    return sharded + working + gathered


def min_gpus(job: TrainingJob, gpu: GpuType) -> int | None:
    """The fewest GPUs of this type, within the job's range, on which it fits; None if none."""
    spec = fitmod.model_spec(job.model)
    mode = job_mode(job, gpu)
    usable = fitmod.usable_bytes(gpu)
    for n in range(max(job.gpus.min, 1), job.gpus.max + 1):
        if bytes_per_gpu(spec, mode, n, reference=job.kl_reference) <= usable:
            return n
        if mode.strategy == "ddp":
            return None  # DDP needs the same on every GPU: more GPUs never help
    return None


def pool_min_gpus(job: TrainingJob, fleet: Fleet, pool: Pool) -> int | None:
    """`min_gpus` on the pool's GPU type, or None when the pool cannot hold that many."""
    n = min_gpus(job, fleet.catalog[pool.gpu])
    return n if n is not None and n <= pool.gpus_capacity else None

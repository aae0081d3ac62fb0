"""The trainer's memory mode: fp32 DDP, or FSDP2 (torch `fully_shard`) with bf16 compute.

The planner sizes GPU training jobs as sharded mixed precision (pools/training_memory.py reads
the same `resolve_mode`), so that is what a GPU worker runs by default:

- **ddp** (the default on CPUs without AMX): every rank holds the whole fp32 model, gradients
  and AdamW state; Ray Train's `prepare_model` wraps it in DistributedDataParallel.
- **fsdp** (the default on GPUs and on CPUs with AMX): each decoder block, then the root, is
  `fully_shard`-ed over all ranks. Parameters, gradients and AdamW state stay fp32 and sharded
  (the master copy); with precision bf16 the forward/backward run on bf16 copies gathered one
  block at a time (`MixedPrecisionPolicy`, gradients reduced in fp32).

Weight sync needs whole tensors, so under FSDP every rank joins one all-gather per push
(`SyncWeights.gather`, timed as `weight_gather_s`) and the engines load the gathered copy, cast
to the compute dtype. Checkpoints gather the full model and optimizer state the same way, so a
checkpoint is the same servable HF dir in both modes and a resize re-shards it on load.

Only torch is imported lazily: `resolve_mode` is pure, and the planner calls it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Strategy = Literal["auto", "ddp", "fsdp"]
Precision = Literal["auto", "fp32", "bf16"]


class TrainModeError(ValueError):
    """A strategy / precision combination the trainer cannot run on this hardware."""


@dataclass(frozen=True)
class TrainMode:
    strategy: Literal["ddp", "fsdp"]
    precision: Literal["fp32", "bf16"]

    @property
    def compute_bytes(self) -> int:
        return 2 if self.precision == "bf16" else 4


def resolve_mode(
    strategy: Strategy,
    precision: Precision,
    *,
    on_gpu: bool,
    bf16_ok: bool,
    cpu_bf16_fast: bool = False,
) -> TrainMode:
    """The mode a job runs: `auto` is FSDP with bf16 on a GPU that has bf16 (Ampere and newer),
    FSDP in fp32 on an older GPU; on CPU, FSDP with bf16 where the cores multiply bf16 natively
    (`cpu_bf16_fast`: AMX), else fp32 DDP. An explicit choice is checked, never swapped.

    Why bf16 on AMX CPUs: the 27 M-parameter `small` model's loss forward + backward took
    2.6-3.0 s in bf16 against 6.9-8.2 s in fp32 (GRPO step 5.7-6.1 s against 10.1-11.8 s, one
    Sapphire-Rapids-class vCPU pair); without AMX, CPU bf16 kernels are slower than fp32."""
    if precision == "bf16" and not bf16_ok:
        raise TrainModeError(
            "precision bf16: this GPU has no bfloat16 (compute capability < 8.0); "
            "use precision fp32"
        )
    if strategy == "ddp" and precision == "bf16":
        raise TrainModeError(
            "precision bf16 needs parallel_strategy fsdp: DDP keeps the whole model in fp32"
        )
    if precision == "auto":
        fast = bf16_ok if on_gpu else cpu_bf16_fast
        # DDP keeps the whole model in fp32: an explicit ddp keeps auto at fp32.
        precision = "bf16" if fast and strategy != "ddp" else "fp32"
    chosen: Literal["ddp", "fsdp"]
    if strategy == "auto":
        chosen = "fsdp" if on_gpu or precision == "bf16" else "ddp"
    else:
        chosen = strategy
    return TrainMode(chosen, precision)


def cpu_bf16_fast() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles), where bf16 compute pays."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def worker_mode(strategy: Strategy, precision: Precision) -> TrainMode:
    """The mode on this Ray Train worker: its device decides what `auto` means."""
    import torch

    on_gpu = torch.cuda.is_available()
    # Every CPU can run bf16 (slowly without AMX), so an explicit bf16 is always allowed.
    bf16_ok = torch.cuda.is_bf16_supported() if on_gpu else True
    fast = not on_gpu and cpu_bf16_fast()
    return resolve_mode(strategy, precision, on_gpu=on_gpu, bf16_ok=bf16_ok, cpu_bf16_fast=fast)


# ---------------------------------------------------------------------------- wrapping


def prepare(model: Any, mode: TrainMode) -> Any:
    """The policy wrapped for this mode (called on every rank, after the process group is up)."""
    import ray.train.torch

    if mode.strategy == "ddp":
        return ray.train.torch.prepare_model(model)
    return _shard(model, mode, device=ray.train.torch.get_device())


def prepare_reference(model: Any | None, mode: TrainMode) -> Any | None:
    """The frozen KL reference: sharded like the policy under FSDP (stored in the compute dtype,
    since it is never updated), as loaded under DDP."""
    import ray.train.torch

    if model is None or mode.strategy == "ddp":
        return model
    import torch

    if mode.precision == "bf16":
        model = model.to(torch.bfloat16)
    return _shard(model, mode, device=ray.train.torch.get_device())


def _shard(model: Any, mode: TrainMode, *, device: Any) -> Any:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    if mode.precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    # One FSDP unit per decoder block (HF names them in `_no_split_modules`), so only one
    # block's full parameters exist at a time; the root unit holds embeddings, norm and head.
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# ---------------------------------------------------------------------------- weight sync


class SyncWeights:
    """What the rollout engines load, named as the checkpoint names it.

    DDP: the live parameters (`module` is the unwrapped model, as rollout.weight_source reads
    it). FSDP: the full tensors of the last `gather()`, which every rank must call right before
    the sync; only the ranks that load an engine keep them (`everywhere`)."""

    def __init__(self, model: Any, mode: TrainMode) -> None:
        self.model = model
        self.mode = mode
        self.sharded = is_sharded(model)
        self.module = self if self.sharded else getattr(model, "module", model)
        self._full: list[tuple[str, Any]] | None = None
        self.gather_s: float | None = None  # seconds of the last gather; None without FSDP

    def gather(self, *, everywhere: bool) -> float:
        """All-gather every parameter (a collective under FSDP); seconds taken."""
        if not self.sharded:
            return 0.0
        import torch
        import torch.distributed as dist

        dtype = torch.bfloat16 if self.mode.precision == "bf16" else torch.float32
        keep = everywhere or dist.get_rank() == 0
        self._full = None  # free the previous copy before the new one is gathered
        t0 = time.perf_counter()
        full: list[tuple[str, Any]] = []
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                t = p.full_tensor() if hasattr(p, "full_tensor") else p
                if keep:
                    full.append((name, t.to(dtype)))
                del t  # the other ranks hold one parameter at a time
        self._full = full if keep else None
        self.gather_s = time.perf_counter() - t0
        return self.gather_s

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        if not self.sharded:
            yield from self.module.named_parameters()
            return
        if self._full is None:
            raise RuntimeError("FSDP weight sync: gather() must run on every rank before a push")
        yield from self._full

    def record(self) -> dict[str, float]:
        """The step record's `weight_gather_s` (FSDP only)."""
        return {} if self.gather_s is None else {"weight_gather_s": self.gather_s}


# ---------------------------------------------------------------------------- checkpoints


class _FullModel:
    """save_pretrained over an FSDP model with its gathered full state dict."""

    def __init__(self, model: Any, state: dict[str, Any]) -> None:
        self.model, self.state = model, state

    def save_pretrained(self, directory: Any, **kw: Any) -> None:
        self.model.save_pretrained(directory, state_dict=self.state, **kw)


class _FullOptimizer:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return self.state


def checkpoint_views(model: Any, opt: Any) -> tuple[Any, Any]:
    """(model, optimizer) as checkpoints.save_checkpoint / trainer_state read them. Under FSDP
    their full state is gathered to rank 0's CPU (a collective: every rank calls this)."""
    if not is_sharded(model):
        return model, opt
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    # Tied weights come back as two entries; the HF dir keeps only the parameter's own name.
    state = {k: v for k, v in get_model_state_dict(model, options=full).items() if k in names}
    return _FullModel(model, state), _FullOptimizer(
        get_optimizer_state_dict(model, opt, options=full)
    )


def load_optimizer_state(model: Any, opt: Any, state: dict[str, Any]) -> None:
    """Restore the optimizer from a checkpoint's full state (every rank read the same file)."""
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
    )

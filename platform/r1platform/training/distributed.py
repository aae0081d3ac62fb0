"""Collectives between the Ray Train workers (torch.distributed), no-ops with one worker.

Every rank must call each of these at the same point of the step, or the job hangs.
"""

from __future__ import annotations

from typing import Any

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of this Ray Train worker."""
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def allgather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's value on every rank."""
    return allgather(obj, world)[0]


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_ranks_true(flag: bool, world: int) -> bool:
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)

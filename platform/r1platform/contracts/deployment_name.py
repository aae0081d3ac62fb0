"""The Serve deployment name of a model placed on one pool: `model@pool`.

Serving builds it, the pool controller parses it to find which (deployment, pool) a replica
count belongs to, and the cluster status view uses it to tell engine replicas from the ingress.

A model configured with only `accelerator_type: X` (no pool) is named `model@X`. X is then a GPU
type, not a pool: `resolve_pool` maps it to the one pool of the fleet with that GPU type, so the
controller manages it as that pool's deployment (and leaves it alone when several pools share
the type, since it cannot know which pool's GPUs the replicas took).
"""

from __future__ import annotations

from collections.abc import Iterable

SEP = "@"
ANY = "any"  # neither pool nor accelerator type: the replicas may land anywhere


def build(model: str, pool: str | None = None, accelerator_type: str | None = None) -> str:
    """`model@pool`, else `model@accelerator_type`, else `model@any`."""
    if not model or SEP in model:
        raise ValueError(f"model name {model!r} must be non-empty and contain no {SEP!r}")
    return f"{model}{SEP}{pool or accelerator_type or ANY}"


def parse(name: str) -> tuple[str, str | None]:
    """(model, placement target) of `model@target`; (name, None) for a name without `@`."""
    model, sep, target = name.rpartition(SEP)
    return (model, target) if sep and model else (name, None)


def is_engine(name: str) -> bool:
    """Engine deployments carry a placement target; the ingress does not."""
    return parse(name)[1] is not None


def resolve_pool(target: str | None, pools: Iterable[tuple[str, str]]) -> str | None:
    """The pool a name's target stands for, given the fleet's (pool name, GPU type) pairs: the
    pool of that name, else the only pool of that GPU type; None when there is no such pool,
    when several pools share the GPU type, or for `any`."""
    if target is None or target == ANY:
        return None
    pairs = list(pools)
    if any(name == target for name, _ in pairs):
        return target
    by_type = [name for name, gpu in pairs if gpu.lower() == target.lower()]
    return by_type[0] if len(by_type) == 1 else None

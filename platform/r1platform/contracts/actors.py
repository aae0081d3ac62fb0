"""Named Ray actors of the platform and the namespace they live in.

A training job J is controlled through the detached actor `r1p-train-J` (methods
current_gpus() -> int, checkpoint_and_shrink(gpus), grow(gpus, pool)); it lives as long as the
job, so a missing actor means the job is not running. The pool controller's loop, when run as
an actor, is `r1p-pools-controller`.
"""

from __future__ import annotations

NAMESPACE = "r1platform"
TRAINING_ACTOR_PREFIX = "r1p-train-"
CONTROLLER_ACTOR = "r1p-pools-controller"


def training_actor_name(job: str) -> str:
    return f"{TRAINING_ACTOR_PREFIX}{job}"

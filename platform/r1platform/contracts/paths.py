"""Where the platform keeps its files on this machine: one root, moved by `R1P_CACHE_DIR`.

The tiny model, the local cluster's state and Ray token, job runs and the controller's decision
record all live under it, so one variable relocates everything (tests and CI point it at a
scratch directory)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "R1P_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "r1platform")

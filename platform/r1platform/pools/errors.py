"""Errors of the pools package.

All of them subclass ValueError so callers that only know "bad input" can catch one type, and
every message is one line that names the offending item (the CLI prints it as is).
"""

from __future__ import annotations


class PoolsError(ValueError):
    """Base class: a user-facing, one-line problem with pools input."""


class PoolsConfigError(PoolsError):
    """A pools/workloads/catalog file is malformed or names something invalid."""


class UnknownGpuError(PoolsConfigError):
    """A GPU type that the catalog does not know."""


class FitError(PoolsError):
    """A model that fits on no pool."""


class InfeasibleError(PoolsError):
    """The planner cannot meet every serving demand within pool capacity."""

    def __init__(self, message: str, missing: list[dict] | None = None) -> None:
        super().__init__(message)
        self.missing = missing or []

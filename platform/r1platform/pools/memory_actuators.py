"""In-memory implementations of the controller's Protocols: the offline set `r1p control`
uses for a dry run, and the fakes tests drive the loop with.

Each one can be told to fail: `fail_next("method", times, error)` makes the next calls of that
method raise (a dashboard, GCS or actor that is down), and MemoryTraining can also accept a
request and then never carry it out (`drop_next`), the case a reply alone cannot reveal.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from .protocols import DeploymentLoad
from .workloads import Workloads


class FailureInjection:
    """Scripted failures, per method name, consumed one per call."""

    def __init__(self) -> None:
        self._failures: dict[str, list[Exception]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)

    def fail_next(self, method: str, times: int = 1, error: Exception | None = None) -> None:
        if not callable(getattr(self, method, None)):
            raise ValueError(f"{type(self).__name__} has no method {method!r} to fail")
        err = error or ConnectionError(f"injected failure of {type(self).__name__}.{method}")
        self._failures[method].extend([err] * times)

    def _call(self, method: str) -> None:
        self.calls[method] += 1
        if self._failures[method]:
            raise self._failures[method].pop(0)


class StaticLoad(FailureInjection):
    """The workloads file's request rates as if measured (no queue)."""

    def __init__(self, workloads: Workloads) -> None:
        super().__init__()
        self.rates = {w.name: w.request_rate for w in workloads.serving}

    def read(self) -> dict[str, DeploymentLoad]:
        self._call("read")
        return {d: DeploymentLoad(0.0, 0.0, r) for d, r in self.rates.items()}


class MemoryServe(FailureInjection):
    def __init__(self) -> None:
        super().__init__()
        self.replicas: dict[tuple[str, str], int] = {}
        # TP x PP each deployment's replicas were built with (a test fills it in: the layout
        # comes from the serving settings, not from set_replicas).
        self.layout: dict[tuple[str, str], tuple[int, int]] = {}
        self.configs: list[dict[str, Any]] = []  # every Serve config deployed, in order

    def layouts(self) -> dict[tuple[str, str], tuple[int, int]]:
        self._call("layouts")
        return dict(self.layout)

    def current_replicas(self) -> dict[tuple[str, str], int]:
        self._call("current_replicas")
        return {k: v for k, v in self.replicas.items() if v > 0}

    def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
        self._call("set_replicas")
        self.replicas[(deployment, pool)] = replicas

    def deploy(self, config: dict[str, Any]) -> None:
        """As Serve applies a config: what it lists runs as listed (read back through the
        platform's Settings, as the live app would build it), D@P it no longer lists are gone."""
        from .serve_config import layouts_from_config

        self._call("deploy")
        layouts = layouts_from_config(config)
        self.configs.append(copy.deepcopy(config))
        self.replicas = {(x.deployment, x.pool): x.replicas for x in layouts}
        self.layout = {(x.deployment, x.pool): (x.tp, x.pp) for x in layouts}


class MemoryCapacity(FailureInjection):
    def __init__(self) -> None:
        super().__init__()
        self.requested: dict[str, int] = {}

    def request(self, gpus_by_pool: Mapping[str, int]) -> None:
        self._call("request")
        self.requested = dict(gpus_by_pool)


class MemoryTraining(FailureInjection):
    """Jobs that checkpoint and release after `release_after` reads of current_gpus."""

    def __init__(self, release_after: int = 1, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self.asked_at: dict[str, float] = {}  # when the pending shrink was asked
        self.gpus: dict[str, int] = {}
        self.pool: dict[str, str] = {}
        self.pending: dict[str, list[int]] = {}
        self.checkpoints: dict[str, int] = defaultdict(int)
        self.release_after = release_after
        self._drops: dict[str, int] = defaultdict(int)

    def drop_next(self, method: str, times: int = 1) -> None:
        """Accept the next `times` calls of `method` and never act on them."""
        if method not in ("grow", "request_checkpoint_and_shrink"):
            raise ValueError(
                f"only grow and request_checkpoint_and_shrink can drop, not {method!r}"
            )
        self._drops[method] += times

    def _dropped(self, method: str) -> bool:
        if self._drops[method] > 0:
            self._drops[method] -= 1
            return True
        return False

    def current_gpus(self, job: str) -> int | None:
        self._call("current_gpus")
        if job in self.pending:
            target, left = self.pending[job]
            if left <= 1:  # the checkpoint finished: the job releases its GPUs
                self.gpus[job] = target
                del self.pending[job]
            else:
                self.pending[job] = [target, left - 1]
        return self.gpus.get(job, 0)

    def job_state(self, job: str):
        """As a job's control actor reports it: a shrink not released yet is its pending
        request, and a job shrunk to 0 is paused."""
        from .recovery import JobState

        self._call("job_state")
        held = self.gpus.get(job, 0)
        pending = None
        if job in self.pending:
            at = self.asked_at.get(job, 0.0)
            pending = {"kind": "shrink", "gpus": self.pending[job][0], "pool": None, "at": at}
        state = "paused" if held == 0 and job in self.checkpoints else "running"
        return JobState(held, self.pool.get(job), state, pending)

    def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
        self._call("request_checkpoint_and_shrink")
        if self._dropped("request_checkpoint_and_shrink"):
            return
        self.checkpoints[job] += 1
        self.pending[job] = [gpus, self.release_after]
        self.asked_at[job] = self.clock()

    def grow(self, job: str, gpus: int, pool: str) -> None:
        self._call("grow")
        if self._dropped("grow"):
            return
        self.gpus[job] = gpus
        self.pool[job] = pool


def offline(workloads: Workloads):
    """(load, serve, capacity, training) for a dry run: nothing outside this process."""
    return StaticLoad(workloads), MemoryServe(), MemoryCapacity(), MemoryTraining()

"""Where a step's time goes, and rank 0's reporting moved off the step's critical path.

Each step record carries `timing/<phase>_s` for the phases below, plus `timing/other_s` (the
step's time not in any phase) and `timing/overhead_frac`: the share of the step spent in
anything but generating tokens and training (rollout, and the forward + backward of the loss).
`report` is the previous step's reporting, since a record cannot contain its own write.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# rollout: token generation; reward: the reward functions; logprob: extra log-prob passes
# (the reference model with beta > 0; the old policy's log-probs are the engine's sampling
# ones, so there is no recompute pass); backward: the loss's forward + backward; optimizer:
# grad clipping + step; sync: weights to the engines (plus GPU sleep/wake in hybrid); data:
# drawing and tokenising prompts, building the batch; metrics: gathering and aggregating the
# record; report: handing the record to the log, console and Ray Train.
PHASES = ("rollout", "reward", "logprob", "backward", "optimizer", "sync", "data", "metrics",
          "report")  # fmt: skip
CORE = ("rollout", "backward")


class StepTimer:
    """Accumulates seconds per phase for one step (`with timer.phase("data"): ...`)."""

    def __init__(self, carried_report_s: float = 0.0) -> None:
        self.spent = dict.fromkeys(PHASES, 0.0)
        self.spent["report"] = carried_report_s

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] += time.perf_counter() - t0

    def record(self, step_s: float) -> dict[str, float]:
        """The timing fields of a step that took `step_s` (the carried report added to it)."""
        total = step_s + self.spent["report"]
        out = {f"timing/{p}_s": v for p, v in self.spent.items()}
        out["timing/other_s"] = max(0.0, total - sum(self.spent.values()))
        core = sum(self.spent[p] for p in CORE)
        out["timing/overhead_frac"] = 1.0 - core / total if total > 0 else 0.0
        return out


def breakdown(records: list[dict[str, Any]], skip: int = 1) -> dict[str, float]:
    """Mean share of each phase over steady steps (records after the first `skip`, eval steps
    left out): what a bench prints."""
    steady = [r for r in records[skip:] if "timing/rollout_s" in r and "eval_accuracy" not in r]
    if not steady:
        return {}
    keys = [f"timing/{p}_s" for p in PHASES] + ["timing/other_s"]
    totals = {k: sum(r[k] for r in steady) for k in keys}
    whole = sum(totals.values()) or 1.0
    return {k.removeprefix("timing/").removesuffix("_s"): v / whole for k, v in totals.items()}


class Reporter:
    """Runs rank 0's per-step outputs (metrics.jsonl, console, Prometheus, span) in order on
    one background thread; `flush()` waits until everything handed over is written."""

    def __init__(self) -> None:
        self._q: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="r1p-report", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._raise()
        self._q.put(fn)

    def flush(self) -> None:
        self._q.join()
        self._raise()

    def _raise(self) -> None:
        if self._errors:
            raise self._errors.pop(0)

    def _run(self) -> None:
        while True:
            fn = self._q.get()
            try:
                if fn is not None:
                    fn()
            except BaseException as err:  # surfaced on the step loop's next submit/flush
                self._errors.append(err)
            finally:
                self._q.task_done()

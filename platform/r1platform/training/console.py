"""What the job prints: a progress bar or one line per step, a few notes, and nothing else.

Framework output (vLLM engine logs, Ray Data progress, Ray Train) comes from worker processes
and reaches the driver through Ray's log stream. `JobConsole` takes that stream over: every
line goes to OUTPUT_DIR/job.log, and only rank 0's step records and notes (lines carrying a
marker) reach the console. `verbose` also forwards the rest to Ray's own printer, as before.
The driver's own `ray`/`vllm` loggers go to the same file; errors still reach the console.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from r1platform.training.metrics import jsonable, progress_line

STEP_MARKER = "R1P_STEP "
NOTE_MARKER = "R1P_NOTE "
HANDLER_NAME = "r1p_job_console"
RAY_HANDLER_NAME = "ray_print_logs"  # what ray.init(log_to_driver=True) registers
DRIVER_LOGGERS = ("ray", "vllm")


# ---------------------------------------------------------------------------- worker side


def report_step(record: dict[str, Any]) -> None:
    """Rank 0: hand a step record to the driver's console. Written to the stream directly:
    Ray Train patches `print` in workers to go through its logger."""
    sys.stdout.write(STEP_MARKER + json.dumps(jsonable(record)) + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """Rank 0: one line the user should see (abort, resume, resize)."""
    sys.stdout.write(NOTE_MARKER + text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- driver side


class JobConsole:
    """Routes worker output (see the module docstring) between `attach()` and `detach()`."""

    def __init__(
        self, log_path: Path, max_steps: int, *, verbose: bool = False, console: Any = None
    ) -> None:
        from rich.console import Console

        self.log_path, self.max_steps, self.verbose = log_path, max_steps, verbose
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._lock = threading.Lock()
        self._file: Any = None
        self._ray_handler: Any = None
        self._log_handler: logging.Handler | None = None
        self._muted: list[tuple[logging.Handler, int]] = []
        self._progress: Any = None
        self._task: Any = None

    # -- setup / teardown
    def attach(self) -> None:
        """Call before ray.init (catches its driver log lines) and `take_ray_stream()` after."""
        import ray  # noqa: F401  (importing ray installs the "ray" logger's handler muted below)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.log_path.open("a", buffering=1)
        self._log_handler = logging.StreamHandler(self._file)
        self._log_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        for name in DRIVER_LOGGERS:
            lg = logging.getLogger(name)
            lg.addHandler(self._log_handler)
            if self.verbose:
                continue
            for h in lg.handlers:
                if h is not self._log_handler and not isinstance(h, logging.FileHandler):
                    self._muted.append((h, h.level))
                    h.setLevel(max(h.level, logging.ERROR))
        self.take_ray_stream()
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold]grpo[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task("grpo", total=self.max_steps, stats="")
            self._progress.start()

    def take_ray_stream(self) -> None:
        """Replace Ray's worker-log printer with ours (idempotent).

        The dispatcher is the hook Ray's own client server uses to fan worker output out
        (ray/util/client/server/logservicer.py); it is internal, so without it (another Ray
        version) the job keeps Ray's printer and only loses the quiet console."""
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:
            return
        with dispatcher._lock:
            handlers = list(dispatcher.handlers)
        for name, fn in handlers:
            if name == RAY_HANDLER_NAME:
                self._ray_handler = fn
                dispatcher.remove_handler(RAY_HANDLER_NAME)
        dispatcher.remove_handler(HANDLER_NAME)
        dispatcher.add_handler(HANDLER_NAME, self.handle)

    def detach(self) -> None:
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:
            dispatcher = None
        if dispatcher is not None:
            # After this returns no `handle` call is running: emit holds the same lock.
            dispatcher.remove_handler(HANDLER_NAME)
            if self._ray_handler is not None:
                dispatcher.add_handler(RAY_HANDLER_NAME, self._ray_handler)
        self._ray_handler = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        for h, level in self._muted:
            h.setLevel(level)
        self._muted = []
        if self._log_handler is not None:
            for name in DRIVER_LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
            self._log_handler = None
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- the stream
    def handle(self, data: dict[str, Any]) -> None:
        """One batch of worker lines from Ray's log stream (runs on Ray's logger thread)."""
        rest: list[str] = []
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')}) " if who else f"(pid={data.get('pid')}) "
        with self._lock:
            for line in data.get("lines", []):
                if STEP_MARKER in line:
                    self.step(json.loads(line.split(STEP_MARKER, 1)[1]))
                elif NOTE_MARKER in line:
                    self.print(line.split(NOTE_MARKER, 1)[1])
                else:
                    rest.append(line)
                    if self._file is not None:
                        self._file.write(prefix + line + "\n")
        if self.verbose and rest and self._ray_handler is not None:
            self._ray_handler({**data, "lines": rest})

    def step(self, record: dict[str, Any]) -> None:
        if self._progress is None:
            self.console.print(progress_line(record, self.max_steps))
            return
        stats = progress_line(record, self.max_steps).split(f"/{self.max_steps} ", 1)[-1]
        self._progress.update(self._task, completed=record["step"], stats=stats)
        if "eval_accuracy" in record:  # keep the eval points on screen
            self._progress.console.print(progress_line(record, self.max_steps))

    def print(self, text: str) -> None:
        (self._progress.console if self._progress else self.console).print(text)

    def tail(self, n: int = 40) -> list[str]:
        """The last `n` lines of the log file (shown on error)."""
        if not self.log_path.exists():
            return []
        with self.log_path.open(errors="replace") as fh:
            return list(deque(fh, maxlen=n))


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """The before/after table a run ends with: held-out accuracy and reward, first vs last."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    table = Table("", "before", "after", title=f"grpo {summary['status'].lower()}")
    curve = summary.get("eval_curve") or []
    if curve:
        (s0, a0), (s1, a1) = curve[0], curve[-1]
        table.add_row("held-out greedy accuracy", f"{a0:.3f} (step {s0})", f"{a1:.3f} (step {s1})")
    rewards_seen = [
        r["reward_mean"]
        for r in _records(Path(summary["output_dir"]) / "metrics.jsonl")
        if isinstance(r.get("reward_mean"), int | float)
    ]
    if rewards_seen:
        table.add_row(
            "train reward (step mean)", f"{rewards_seen[0]:.3f}", f"{rewards_seen[-1]:.3f}"
        )
    console.print(table)
    # A path must stay one piece to be copied: no wrapping at the console width.
    console.print(
        f"checkpoint: {summary.get('checkpoint')}  (wall time {summary.get('wall_s')} s)",
        soft_wrap=True,
    )


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

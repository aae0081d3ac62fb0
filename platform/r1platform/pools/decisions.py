"""Local record of controller decisions (JSONL), rendered by `r1p decisions`.

Spans go to whatever OTLP collector is configured; this file is the record that is always
there, so an operator can ask "why did serving grow at 10:02" without a tracing backend.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from r1platform.contracts.paths import cache_dir

_lock = threading.Lock()


@dataclass
class Decision:
    ts: float
    cycle: int
    kind: str  # scale | deploy | reclaim | lend | retry | rollback | capacity | plan | error
    target: str  # deployment, job or pool the decision acts on
    pool: str | None
    gpu: str | None
    before: float
    after: float
    reason: str
    cost_per_hour_before: float | None = None
    cost_per_hour_after: float | None = None
    applied: bool = True
    trace_id: str | None = None
    error: str | None = None  # why applying it failed (applied is then False)


def state_dir() -> Path:
    base = os.environ.get("R1P_STATE_DIR")
    return Path(base) if base else cache_dir()


def default_path() -> Path:
    return state_dir() / "decisions.jsonl"


def append(decisions: Iterable[Decision], path: str | Path | None = None) -> None:
    p = Path(path) if path else default_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(asdict(d), sort_keys=True) + "\n" for d in decisions)
    if not lines:
        return
    with _lock, p.open("a") as f:
        f.write(lines)


def read_last(n: int, path: str | Path | None = None) -> list[Decision]:
    """The last n decisions, oldest first; unreadable lines (a torn write) are skipped."""
    p = Path(path) if path else default_path()
    if not p.exists():
        return []
    tail: deque[str] = deque(maxlen=max(n, 0))
    with p.open() as f:
        for line in f:
            tail.append(line)
    out = []
    fields = set(Decision.__dataclass_fields__)
    for line in tail:
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(Decision(**{k: v for k, v in raw.items() if k in fields}))
    return out


@dataclass(frozen=True)
class Where:
    """When and under which span a decision was taken; `applied` is False in a dry run."""

    ts: float
    cycle: int
    span: Any
    applied: bool


def decision(
    where: Where, kind, target, pool, gpu, before, after, reason, cb, ca, error=None
) -> Decision:
    """A Decision tied to its span's trace id, applied only when the action did not fail."""
    ctx = where.span.get_span_context()
    return Decision(
        ts=where.ts,
        cycle=where.cycle,
        kind=kind,
        target=target,
        pool=pool,
        gpu=gpu,
        before=before,
        after=after,
        reason=reason,
        cost_per_hour_before=cb,
        cost_per_hour_after=ca,
        applied=where.applied and error is None,
        error=error,
        trace_id=f"{ctx.trace_id:032x}" if ctx and ctx.trace_id else None,
    )

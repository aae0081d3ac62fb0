"""Polling helpers the integration tests share (live clusters change state asynchronously)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 240.0, every: float = 0.2):
    """The first truthy value of cond(), or TimeoutError naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file another process is appending to (a torn last line is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out

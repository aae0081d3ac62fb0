"""The ingress's view of an engine's output stream: the in-process stream, and a request's
deadline (`serve.request_timeout_s`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class LocalStream:
    """The in-process twin of a streaming DeploymentResponseGenerator."""

    def __init__(self, agen: AsyncIterator[dict[str, Any]]) -> None:
        self._agen = agen
        self._closing: asyncio.Future[None] | None = None

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._agen.__anext__()

    def cancel(self) -> None:
        # Closing the generator closes vLLM's generate(), which aborts the engine request.
        self._closing = asyncio.ensure_future(self._agen.aclose())  # type: ignore[attr-defined]


class Deadline:
    """A request's time limit, armed once for the whole request.

    `asyncio.timeout()` around each read would arm and cancel a timer per streamed chunk. This
    arms one; when it fires during a read it cancels the reading task, and that read raises
    TimeoutError. A read after expiry raises at once. Reads happen in whichever task drives the
    response (the handler, then the streaming body), so the task is taken at each read.
    """

    __slots__ = ("_handle", "_reading", "_task", "expired")

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._reading = False
        self._task: asyncio.Task[Any] | None = None
        self._handle = asyncio.get_running_loop().call_later(max(seconds, 0.0), self._fire)

    def _fire(self) -> None:
        self.expired = True
        if self._reading and self._task is not None:
            self._task.cancel()

    async def read(self, stream: Any) -> Any:
        """The stream's next item; TimeoutError once the deadline has passed."""
        if self.expired:
            raise TimeoutError
        task = self._task = asyncio.current_task()
        self._reading = True
        try:
            return await stream.__anext__()
        except asyncio.CancelledError:
            # Ours only if the deadline fired and nobody else asked to cancel this task.
            if self.expired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._reading = False

    def cancel(self) -> None:
        self._handle.cancel()


def chunk_object(method: str) -> str:
    return "chat.completion.chunk" if method == "chat" else "text_completion"


def has_text(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries generated text (what time to first token waits for)."""
    for c in chunk["choices"]:
        d = c.get("delta")
        if (d and (d.get("content") or d.get("reasoning_content"))) or c.get("text"):
            return True
    return False


def replica_lost(err: BaseException) -> bool:
    """Whether `err` means the replica (or node) running the request is gone, not that the
    request itself is bad: only then may it be sent again."""
    from ray.exceptions import NodeDiedError, RayActorError, RayTaskError, WorkerCrashedError

    lost = (RayActorError, WorkerCrashedError, NodeDiedError)
    if isinstance(err, RayTaskError):
        return isinstance(err.cause, lost)
    return isinstance(err, lost)

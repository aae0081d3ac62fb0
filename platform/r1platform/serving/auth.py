"""API keys and per-key concurrency limits for the ingress."""

from __future__ import annotations

import hashlib
import hmac

from r1platform.serving.protocol import ClientError

ANONYMOUS = "anonymous"


class KeyChecker:
    def __init__(self, keys: list[str]) -> None:
        # Compare digests so every comparison has the same length; check all keys, always.
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> str:
        """Return a stable, non-secret key id; raises 401 when keys are on and none matches."""
        if not self.enabled:
            return ANONYMOUS
        token = ""
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        if not token:
            raise ClientError(
                "Missing API key: send 'Authorization: Bearer <key>'.",
                status=401,
                type_="authentication_error",
                code="invalid_api_key",
            )
        digest = hashlib.sha256(token.encode()).digest()
        match = -1
        for i, d in enumerate(self._digests):
            if hmac.compare_digest(d, digest):
                match = i
        if match < 0:
            raise ClientError(
                "Incorrect API key provided.",
                status=401,
                type_="authentication_error",
                code="invalid_api_key",
            )
        return f"key-{match}"


class ConcurrencyLimiter:
    """In-flight requests per key id. Single-threaded asyncio: no lock needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._inflight: dict[str, int] = {}
        # The most in flight at once per key: what proves the limit held, whatever the timing.
        self.peak: dict[str, int] = {}

    def acquire(self, key_id: str) -> None:
        n = self._inflight.get(key_id, 0)
        if n >= self.limit:
            raise ClientError(
                f"Too many concurrent requests for this key (limit {self.limit}).",
                status=429,
                type_="rate_limit_error",
                code="rate_limit_exceeded",
            )
        self._inflight[key_id] = n + 1
        self.peak[key_id] = max(self.peak.get(key_id, 0), n + 1)

    def release(self, key_id: str) -> None:
        n = self._inflight.get(key_id, 0) - 1
        if n <= 0:
            self._inflight.pop(key_id, None)
        else:
            self._inflight[key_id] = n

    def inflight(self, key_id: str) -> int:
        return self._inflight.get(key_id, 0)

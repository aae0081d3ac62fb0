"""Local networking helpers."""

from __future__ import annotations

import socket


def free_port(host: str = "") -> int:
    """A TCP port nothing listens on now (the OS picks it; another process may still take it
    before the caller binds, so callers bind promptly)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

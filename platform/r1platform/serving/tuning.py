"""Ray Serve runtime settings for every process of a cluster: token-streaming knobs, and the
proxy guard (`proxy_guard.py`), which Serve reads from the same environment.

Serve's defaults run user code and the router on extra event loops and talk to replicas over
actor calls. Each streamed token then pays several thread hops, which on a CPU-bound box costs
more than decoding it. These settings are Serve's own throughput profile minus direct ingress
(that one needs HAProxy), minus gRPC, and with the handle router kept on its own loop:
running it on the caller's loop deadlocks a synchronous `handle.remote().result()` in a
driver. They must be in the environment before Ray starts.
"""

from __future__ import annotations

import os

SERVE_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # Serve's gRPC transport measured ~15% slower for token streams here than actor calls.
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    # Not a speed knob: the proxy's guard for requests on an ingress replica that dies.
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "r1platform.serving.proxy_guard:middlewares",
}


def serve_env() -> dict[str, str]:
    """The knobs, with anything the operator already set taking precedence."""
    return {k: os.environ.get(k, v) for k, v in SERVE_ENV.items()}


def apply() -> None:
    os.environ.update(serve_env())

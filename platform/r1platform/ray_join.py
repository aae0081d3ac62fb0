"""Joining "a running local Ray" safely: check the cluster is alive before `ray.init` joins it.

`ray start` records its GCS address in Ray's current-cluster file (`<ray temp dir>/
ray_current_cluster`) and `ray.init()` with no address joins whatever that file names. When
the cluster is gone but the file is not, ray.init sits in GCS connection timeouts for minutes.
So every joiner here asks `gcs_alive` first (a TCP connect, well under a second), joins a live
cluster with its auth settings, and otherwise starts its own or fails fast with a message.
`init_tolerant` is `ray.init` that survives Ray Client's occasional failure to start a
client's server on the head (CLIENT_START_FAILURES).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAY_ADDRESS_ENV = "RAY_ADDRESS"
# What Ray Client's proxier answers when the per-client server it forked died at start. Ray
# 2.60's proxier forks that server from a thread-busy gRPC process; about 1 start in 12 aborts
# in gRPC's fork handlers (ray-project/ray#63202, reproduced here). A fresh connect gets a
# fresh fork, so these, and only these, are worth retrying.
# The proxier's per-client server start failing, in the forms Ray 2.60 reports it. The last one
# is a race in the proxier itself: the server process exits between its poll() and psutil's
# cmdline(), and the ZombieProcess traceback comes back through start_specific_server.
CLIENT_START_FAILURES = (
    "Starting Ray client server failed",
    "Proxy failed to Connect to backend",
    "start_specific_server",
)


class ClusterUnreachable(ConnectionError):
    """A cluster named explicitly does not answer; the message says which and what to do."""


def gcs_alive(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts connections at the GCS address `host:port` within timeout_s."""
    host, _, port = address.removeprefix("http://").rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def ray_temp_dir() -> Path:
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def current_cluster_file() -> Path:
    return ray_temp_dir() / "ray_current_cluster"


def read_current_cluster() -> str | None:
    path = current_cluster_file()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def clear_stale_ray_state(gcs_address: str, session: str | None = None) -> list[Path]:
    """Remove what `ray stop` would for the cluster at gcs_address: Ray's current-cluster file
    when it names that cluster, and the `session_latest` link when it points at its session.
    Another cluster's files are left alone. Returns the paths removed."""
    removed = []
    if read_current_cluster() == gcs_address:
        current_cluster_file().unlink(missing_ok=True)
        removed.append(current_cluster_file())
    latest = ray_temp_dir() / "session_latest"
    if session and latest.is_symlink() and Path(os.readlink(latest)).name == session:
        latest.unlink(missing_ok=True)
        removed.append(latest)
    return removed


def join_address(address: str | None, local_gcs: str | None = None) -> str | None:
    """The address for ray.init to join a *live* cluster, or "local" to start a new one.

    An explicit address (argument or RAY_ADDRESS, as `ray job submit` sets) must answer, else
    ClusterUnreachable. With none, the r1p cluster (`local_gcs`) or the last `ray start`
    cluster is joined when alive; a stale current-cluster file is removed and a new local
    cluster is started instead of waiting on a dead head. `ray://` client addresses and
    "local" pass through."""
    explicit = address or os.environ.get(RAY_ADDRESS_ENV) or None
    if explicit == "local" or (explicit and explicit.startswith("ray://")):
        return address
    if explicit and explicit != "auto":
        if not gcs_alive(explicit):
            raise ClusterUnreachable(
                f"no Ray cluster answers at {explicit}: start one (`r1p up`), or unset "
                f"{RAY_ADDRESS_ENV} / the address to run on a local cluster of its own"
            )
        return address
    if local_gcs and gcs_alive(local_gcs):
        return local_gcs
    current = read_current_cluster()
    if current and gcs_alive(current):
        return address  # Ray finds it from the file itself, with its own auth discovery
    if current:
        clear_stale_ray_state(current)
    if explicit == "auto":
        raise ClusterUnreachable("address 'auto': no running Ray cluster found on this machine")
    return "local"


def init_tolerant(
    address: str | None,
    *,
    attempts: int = 3,
    backoff_s: float = 2.0,
    init: Callable[..., Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> Any:
    """`ray.init(address, **kwargs)`; a `ray://` connect that failed because the head could not
    start its per-client server is tried again, up to `attempts` times in all. Any other
    failure, and the last of these, is raised as is."""
    if init is None:
        import ray

        init = ray.init
    # Only Ray Client forks a per-client server, so only a ray:// connect gets more tries.
    tries = attempts if address and address.startswith("ray://") else 1
    for attempt in range(1, tries):
        try:
            return init(address=address, **kwargs)
        except ConnectionAbortedError as e:
            if not any(marker in str(e) for marker in CLIENT_START_FAILURES):
                raise
            sleep(backoff_s * attempt)
    return init(address=address, **kwargs)

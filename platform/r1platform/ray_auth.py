"""Ray token authentication for the local cluster (Ray >= 2.52).

An open Ray dashboard or Jobs API is remote code execution for anyone who can reach it, so
`r1p up` starts the cluster with Ray's token auth on. Ray reads three environment variables:
`RAY_AUTH_MODE=token` turns it on; the token comes from `RAY_AUTH_TOKEN`, else the file named
by `RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`. Every process of ours (the `ray start`ed
head and nodes, and so every worker and job they spawn; the CLI; jobs joining the cluster)
gets the same explicit mode and token path, so none of them falls back to Ray's own defaults.
Ray's HTTP clients (Jobs, Serve REST) then send `Authorization: Bearer <token>`, and gRPC
clients (`ray.init`) send it as metadata.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

TOKEN_FILE_NAME = "ray-auth-token"
ENV_MODE, ENV_TOKEN, ENV_TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE_NAME


def ensure_token(state_dir: Path) -> Path:
    """The token file for the local cluster, written owner-only (0600): RAY_AUTH_TOKEN when set,
    else the token stored by an earlier `r1p up`, else a new random one (256 bits, as Ray's own
    `ray get-auth-token --generate` makes)."""
    path = token_path(state_dir)
    token = os.environ.get(ENV_TOKEN, "").strip()
    if not token and path.is_file():
        token = path.read_text().strip()
    token = token or secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    path.chmod(0o600)  # O_CREAT's mode does not apply to a file that already existed
    return path


def read_token(state_dir: Path) -> str | None:
    """The token this process will present: RAY_AUTH_TOKEN wins, as it does inside Ray."""
    env = os.environ.get(ENV_TOKEN, "").strip()
    if env:
        return env
    path = token_path(state_dir)
    return path.read_text().strip() if path.is_file() else None


def auth_env(mode: str, state_dir: Path) -> dict[str, str]:
    """The environment that puts a process in the cluster's auth mode."""
    if mode == "token":
        return {ENV_MODE: "token", ENV_TOKEN_PATH: str(token_path(state_dir))}
    return {ENV_MODE: "disabled"}


def auth_headers(mode: str, state_dir: Path) -> dict[str, str]:
    """HTTP headers for the dashboard (Jobs API, Serve REST API) of a cluster in `mode`."""
    token = read_token(state_dir) if mode == "token" else None
    return {"Authorization": f"Bearer {token}"} if token else {}


def apply(env: dict[str, str]) -> None:
    """Put this process in `env`'s auth mode. Ray caches its config and the token on first use,
    so when Ray is already loaded the caches are refreshed too, as Ray's own token setup does."""
    os.environ.update(env)
    if "ray._raylet" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

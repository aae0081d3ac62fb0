"""`r1p`: the platform's command line (typer + rich)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from r1platform.config import ConfigError, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="r1-platform: serve and "
    "GRPO-train R1-style reasoning models on one heterogeneous GPU fleet.",
)
model_app = typer.Typer(no_args_is_help=True, help="Model utilities.")
app.add_typer(model_app, name="model")
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.callback()
def _cluster_auth() -> None:
    """Every command that talks to the local cluster (status, control, ...) presents its Ray
    token. An auth mode already set in the environment (RAY_AUTH_MODE) is for another
    cluster and is kept."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    from r1platform import localcluster

    if localcluster.load_state() is not None:
        localcluster.use_cluster_auth()


@model_app.command("build-tiny")
def build_tiny(
    out: Path = typer.Option(None, help="output dir (default: the cache's models/tiny-r1[-SIZE])"),
    seed: int = typer.Option(0, help="seed; the build is deterministic given it"),
    size: str = typer.Option("tiny", help="size preset: tiny (default) or small (~50x params)"),
    force: bool = typer.Option(False, help="rebuild even if present"),
) -> None:
    """Build the tiny R1 base model (a Qwen2 HF directory) used by the local platform."""
    from r1platform.models.tiny import (
        build_tiny_model,
        count_params,
        default_model_dir,
        get_preset,
        is_built,
    )

    try:
        preset = get_preset(size)
    except ValueError as err:
        raise fail(str(err)) from None
    target = out or default_model_dir(size)
    params = count_params(size)
    shape = f"{preset.num_hidden_layers} layers, hidden {preset.hidden_size}"
    console.print(f"size [bold]{size}[/]: {shape}, {params:,} parameters")
    if is_built(target, seed, size) and not force:
        console.print(f"{size} model already built at [bold]{target}[/]")
        return
    with console.status(f"pre-training the {size} model on arithmetic traces…"):
        info = build_tiny_model(target, seed=seed, preset=size)
    console.print(
        f"built [bold]{target}[/] in {info['train_seconds']} s (loss {info['final_loss']})"
    )


@app.command()
def up(
    pools: Path = typer.Option(Path("configs/pools/local.yaml"), help="pools YAML"),
    config: Path = typer.Option(Path("configs/local.yaml"), help="settings YAML (R1P_CONFIG)"),
    auth: bool = typer.Option(
        True,
        help="Ray token auth on the dashboard, Jobs API and GCS (token: RAY_AUTH_TOKEN, or "
        "generated once into the state dir, mode 0600)",
    ),
    serve: bool = typer.Option(True, help="deploy the OpenAI endpoint (--no-serve: Ray only)"),
) -> None:
    """Start the local Ray cluster with its virtual GPU fleet and deploy the OpenAI endpoint."""
    from r1platform import localcluster, ray_auth
    from r1platform.pools.errors import PoolsConfigError
    from r1platform.pools.fleet import load_pools

    if not config.is_file():
        raise fail(f"config file not found: {config}")
    os.environ["R1P_CONFIG"] = str(config.resolve())
    try:
        settings = load_settings()
        fleet = load_pools(pools)
    except (ConfigError, PoolsConfigError) as err:
        raise fail(str(err)) from None
    spec = localcluster.ClusterSpec()
    with console.status("starting") as status:
        try:
            state = localcluster.up(
                fleet, spec, settings.serve.port, status.update, auth=auth, serve=serve
            )
        except RuntimeError as err:
            raise fail(str(err)) from None
    endpoint = f"endpoint [bold]{state.serve_url}[/]  " if serve else ""
    console.print(f"[green]ready[/]  {endpoint}dashboard [bold]{state.dashboard_url}[/]")
    if auth:
        token = ray_auth.token_path(localcluster.state_dir())
        console.print(f"Ray token auth on: token in [bold]{token}[/] (RAY_AUTH_TOKEN_PATH)")
    else:
        console.print(
            "[yellow]Ray token auth is off[/]: anyone who reaches the dashboard runs code"
        )


@app.command()
def down() -> None:
    """Stop everything `r1p up` started."""
    from r1platform import localcluster

    state = localcluster.load_state()
    port = localcluster.gcs_port_of(state) if state else localcluster.ClusterSpec().gcs_port
    n = localcluster.stop_cluster(port)
    console.print(f"stopped {n} processes" if n else "nothing was running")


@app.command()
def status() -> None:
    """Cluster nodes and pools, Serve deployments and replica placement, and jobs."""
    from r1platform import localcluster
    from r1platform.cluster_status import status_report

    state = localcluster.load_state()
    if state is None or not localcluster.cluster_pids(localcluster.gcs_port_of(state)):
        raise fail("no local cluster is running (start one with `r1p up`)")
    if not localcluster.cluster_alive(state):
        raise fail(f"the local cluster's GCS at {state.gcs_address} does not answer; `r1p down`")
    report = status_report(state.gcs_address, state.dashboard_url)
    console.print(f"endpoint {state.serve_url}   dashboard {state.dashboard_url}")
    nodes = Table("node", "role", "pool", "gpu", "gpus", "cpus", title="nodes and pools")
    for n in report["nodes"]:
        gpu = f"{n['gpu']} (simulated)" if n["simulated"] else n["gpu"]
        nodes.add_row(n["node_id"], n["role"], n["pool"], gpu, str(n["gpus"]), str(n["cpus"]))
    console.print(nodes)
    reps = Table("app", "deployment", "replica", "pool", "gpu", title="serve replicas")
    for r in report["replicas"]:
        reps.add_row(r["app"], r["deployment"], r["actor"], r["pool"], r["gpu"])
    console.print(reps)
    for name, a in report["apps"].items():
        console.print(
            f"app [bold]{name}[/]: {a['status']}  "
            + ", ".join(f"{d}={s}" for d, s in a["deployments"].items())
        )
    jobs = Table("job", "status", "entrypoint", title="jobs")
    for j in report["jobs"]:
        jobs.add_row(j["id"], j["status"], j["entrypoint"])
    console.print(jobs)
    from r1platform.pools.controller_actor import describe

    console.print(describe(report.get("controller")))


def _register_pools() -> None:
    from r1platform.pools.cli import register

    register(app)


_register_pools()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

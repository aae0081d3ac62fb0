"""`r1p plan`, `r1p control` and `r1p decisions`, registered on the top-level typer app.

Bad input prints one red line and exits 1 (2 for an infeasible plan), never a traceback.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import InfeasibleError, PoolsError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Format(StrEnum):
    table = "table"
    json = "json"


def _fail(e: Exception, code: int = 1) -> typer.Exit:
    msg = str(e).replace("[", r"\[")  # rich markup would eat "[...]" in messages
    err.print(f"[bold red]error:[/bold red] [red]{msg}[/red]", highlight=False)
    return typer.Exit(code)


def _print_table(renderable) -> None:
    # Piped or captured output defaults to 80 columns, which truncates every column; tables are
    # meant to be read whole, so widen them there (a terminal keeps its own width).
    c = out if out.is_terminal else Console(width=180)
    c.print(renderable)


PoolsOpt = Annotated[Path, typer.Option("--pools", "-p", help="Pools YAML.")]
WorkloadsOpt = Annotated[Path, typer.Option("--workloads", "-w", help="Workloads YAML.")]


def plan_cmd(
    pools: PoolsOpt,
    workloads: WorkloadsOpt,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    time_limit: Annotated[float, typer.Option(help="ILP time limit (s); greedy after.")] = 10.0,
    greedy: Annotated[bool, typer.Option(help="Skip the ILP (heuristic only).")] = False,
    serve_config_out: Annotated[
        Path | None,
        typer.Option(
            "--serve-config",
            help="Also write the Serve config that deploys this plan (serve deploy / serveConfigV2).",
        ),
    ] = None,
) -> None:
    """Solve the cost-optimal placement of serving and training on the GPU pools: one TP x PP
    layout and engine profile per deployment and pool (the rule `r1p control` plans with)."""
    import yaml

    from .fleet import load_fleet
    from .plan_model import PlanRequest
    from .planner import plan_one_layout
    from .render import plan_tables
    from .serve_config import serve_config
    from .workloads import load_workloads

    try:
        fleet = load_fleet(pools)
        wl = load_workloads(workloads, fleet.catalog)
        # The controller's rule: one layout per Serve deployment `D@P` (plan_one_layout).
        p = plan_one_layout(
            PlanRequest(fleet, wl, time_limit_s=time_limit, method="greedy" if greedy else "ilp")
        )
        if serve_config_out is not None:
            serve_config_out.write_text(yaml.safe_dump(serve_config(p), sort_keys=False))
    except InfeasibleError as e:
        if format is Format.json:
            print(json.dumps({"feasible": False, "error": str(e), "missing": e.missing}))
        raise _fail(e, 2) from None
    except PoolsError as e:
        raise _fail(e) from None
    if format is Format.json:
        print(json.dumps(p.to_json(), indent=2))
    else:
        _print_table(plan_tables(p, wl))


def control_cmd(
    pools: PoolsOpt,
    workloads: WorkloadsOpt,
    interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between reconcile cycles [default: 30, or R1P_CONTROL_INTERVAL_S]."
        ),
    ] = None,
    once: Annotated[bool, typer.Option(help="Run one cycle and exit.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Plan and record, act on nothing.")] = False,
    address: Annotated[str | None, typer.Option(help="Ray address (live mode).")] = None,
    metrics_url: Annotated[
        str | None, typer.Option(help="Prometheus text endpoint with Ray Serve metrics.")
    ] = None,
    dashboard: Annotated[
        str, typer.Option(help="Ray dashboard URL (Serve's REST API for replica targets).")
    ] = "http://127.0.0.1:8265",
    actor: Annotated[bool, typer.Option(help="Run the loop as a detached Ray actor.")] = False,
    decisions_file: Annotated[Path | None, typer.Option("--decisions-file")] = None,
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes",
            help="In a Kubernetes cluster: replica counts and planned layouts go into the "
            "RayService's serveConfigV2, pools are discovered from the nodes (needs --address, --rayservice).",
        ),
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(
            envvar="R1P_K8S_NAMESPACE",
            help="Namespace of the RayService (--kubernetes) [default: the pod's own].",
        ),
    ] = None,
    rayservice: Annotated[
        str | None,
        typer.Option(envvar="R1P_K8S_RAYSERVICE", help="RayService to scale (--kubernetes)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve the controller's Prometheus metrics here."),
    ] = None,
) -> None:
    """Run the reconcile loop: live load -> plan -> Serve replicas, autoscaler, training.

    Tuning (cooldowns, headroom, lend reserve, rate window...) comes from R1P_CONTROL_<FIELD>
    environment variables; see docs/pools.md."""
    from pydantic import ValidationError

    from . import actuators
    from .controller import Controller, ControllerConfig
    from .fleet import load_fleet
    from .workloads import load_workloads

    try:
        fleet = load_fleet(pools)
        wl = load_workloads(workloads, fleet.catalog)
        try:
            cfg = ControllerConfig(**({} if interval is None else {"interval_s": interval}))
        except ValidationError as e:
            first = e.errors()[0]
            name = str(first["loc"][0])
            given = name == "interval_s" and interval is not None
            field = "--interval" if given else f"R1P_CONTROL_{name.upper()}"
            raise _fail(ValueError(f"{field}: {first['msg']}")) from None
        if kubernetes and (address is None or rayservice is None or actor):
            missing = "--address" if address is None else "--rayservice"
            why = "is not for --actor" if actor else f"needs {missing}"
            raise _fail(ValueError(f"--kubernetes {why} (see docs/pools.md)"))
        if actor:
            from .controller_actor import describe

            health = actuators.start_controller_actor(
                pools,
                workloads,
                cfg,
                address=address,
                metrics_url=metrics_url,
                record_path=decisions_file,
                dashboard=dashboard,
            )
            if health["state"] in ("failed", "dead"):
                raise _fail(RuntimeError(f"controller actor {describe(health)}"))
            out.print(
                f"controller actor {actuators.ACTOR_NAME!r} started (interval {cfg.interval_s:g}s)"
            )
            out.print(describe(health))
            return
        fleet_view = None
        if kubernetes:
            from .k8s import live_kubernetes

            fleet_view, parts = live_kubernetes(
                fleet,
                address=address,
                namespace=namespace,
                rayservice=rayservice,
                metrics_url=metrics_url,
                rate_window_s=cfg.rate_window_s,
                record_path=str(decisions_file) if decisions_file else None,
                dry_run=dry_run,
            )
            dry = dry_run
        elif dry_run or address is None:
            parts = actuators.offline(wl)
            dry = True
            why = "--dry-run" if dry_run else "no --address given"
            err.print(
                f"dry run ({why}): plans from the workloads file's rates, acts on nothing; "
                "pass --address to control a Ray cluster"
            )
        else:
            parts = actuators.live(
                address, metrics_url, dashboard, cfg.rate_window_s, configured=fleet
            )
            dry = False
        metrics = None
        if metrics_port is not None:
            from .prom import ControllerMetrics

            metrics = ControllerMetrics()
            metrics.serve(metrics_port)
        ctl = Controller(
            fleet_view or (fleet if dry else actuators.live_fleet(fleet)),
            wl,
            *parts,
            cfg,
            dry_run=dry,
            record_path=str(decisions_file) if decisions_file else None,
            **({"metrics": metrics} if metrics else {}),
        )
        if kubernetes:
            parts[1].cycle = lambda: ctl.mem.cycle  # restore decisions carry the cycle
        if not dry:
            from .recovery import recover_before_start

            # A restart (after a crash mid-reclaim, say) picks up what is in flight.
            recover_before_start(ctl)
        if once:
            ds = ctl.step()
            p = ctl.last_plan
            cost = f"${p.cost_per_hour:,.2f}/hour" if p else "no plan"
            out.print(f"cycle 1: {len(ds)} decision(s){' (dry run)' if dry else ''}; plan {cost}")
            return
        ctl.run()
    except PoolsError as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def decisions_cmd(
    last: Annotated[int, typer.Option("--last", "-n", help="How many to show.")] = 20,
    decisions_file: Annotated[Path | None, typer.Option("--decisions-file")] = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Show the controller's last N decisions from the local record."""
    from dataclasses import asdict

    from . import decisions as rec
    from .render import decisions_table

    if last < 1:
        raise _fail(ValueError(f"--last must be >= 1, got {last}"))
    ds = rec.read_last(last, decisions_file)
    if format is Format.json:
        print(json.dumps([asdict(d) for d in ds], indent=2))
        return
    if not ds:
        out.print(f"no decisions recorded yet in {decisions_file or rec.default_path()}")
        return
    _print_table(decisions_table(ds))


def register(app: typer.Typer) -> None:
    """Add plan, control and decisions to the top-level `r1p` app."""
    app.command("plan")(plan_cmd)
    app.command("control")(control_cmd)
    app.command("decisions")(decisions_cmd)

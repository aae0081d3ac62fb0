"""Rich tables for plans and decisions: what a person reads (the JSON is for machines)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .decisions import Decision
from .plan_model import Plan, ServingAssignment
from .workloads import Workloads


def _money(x: float) -> str:
    return f"${x:,.2f}"


def profile_label(s: ServingAssignment) -> str:
    """`fp8(w8a8)/bf16 kv auto`: weights (FP8 kernel), activations, KV cache."""
    if s.dtype is None:
        return "-"
    short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
    act = short.get(s.dtype, s.dtype)
    weights = f"fp8({s.fp8_kernel})/{act}" if s.quantization else act
    return f"{weights} kv {s.kv_cache_dtype}"


def plan_tables(plan: Plan, workloads: Workloads) -> Group:
    demand = {w.name: w for w in workloads.serving}
    pools = Table(title="Pools", title_justify="left")
    for col in ("pool", "gpu", "capacity", "serving", "training", "free"):
        pools.add_column(col, justify="left" if col in ("pool", "gpu") else "right")
    for u in plan.pools:
        pools.add_row(
            u.pool,
            u.gpu,
            str(u.gpus_capacity),
            str(u.gpus_serving),
            str(u.gpus_training),
            str(u.gpus_free),
        )

    dep = Table(title="Serving", title_justify="left")
    for col in (
        "deployment",
        "pool",
        "gpu",
        "replicas",
        "tp x pp",
        "engine profile",
        "gpus",
        "capacity rps",
        "demand rps",
        "$/hour",
        "$/M out tok",
    ):
        dep.add_column(col, justify="left" if col in ("deployment", "pool", "gpu") else "right")
    by_dep: dict[str, float] = {}
    for s in plan.serving:
        by_dep[s.deployment] = by_dep.get(s.deployment, 0.0) + s.cost_per_hour
    for s in plan.serving:
        w = demand[s.deployment]
        tokens_per_hour = w.request_rate * w.avg_output_tokens * 3600
        # The deployment's whole cost over its whole output, shown on each of its rows.
        per_m = by_dep[s.deployment] / tokens_per_hour * 1e6 if tokens_per_hour else 0.0
        dep.add_row(
            s.deployment,
            s.pool,
            s.gpu,
            str(s.replicas),
            f"{s.tp} x {s.pp}",
            profile_label(s),
            str(s.gpus),
            f"{s.capacity_rps:.2f}",
            f"{w.request_rate:.2f}",
            _money(s.cost_per_hour),
            _money(per_m),
        )

    train = Table(title="Training (borrowed GPUs)", title_justify="left")
    for col in ("job", "pool", "gpus", "min", "max", "priority"):
        train.add_column(col, justify="left" if col in ("job", "pool") else "right")
    jobs = {j.name: j for j in workloads.training}
    for t in plan.training:
        j = jobs[t.job]
        train.add_row(t.job, t.pool, str(t.gpus), str(j.gpus.min), str(j.gpus.max), str(j.priority))
    idle = [j for j in workloads.training if j.name not in {t.job for t in plan.training}]
    for j in idle:
        train.add_row(j.name, "-", "0", str(j.gpus.min), str(j.gpus.max), str(j.priority))

    total = Text.assemble(
        ("Serving cost ", "bold"),
        (f"{_money(plan.cost_per_hour)}/hour", "bold green"),
        f"   solver {plan.solver.get('method')} in {plan.solver.get('time_s', 0):.3f}s",
    )
    parts: list = [pools, dep]
    if workloads.training:
        parts.append(train)
    parts.append(total)
    if plan.binding:
        parts.append(Text("Binding: " + "; ".join(plan.binding), style="yellow"))
    return Group(*parts)


def decisions_table(decisions: Sequence[Decision]) -> Table:
    t = Table(title=f"Last {len(decisions)} decisions", title_justify="left")
    for col in (
        "time",
        "cycle",
        "kind",
        "target",
        "pool",
        "gpu",
        "before",
        "after",
        "$/h before",
        "$/h after",
        "reason",
    ):
        t.add_column(col, justify="right" if col in ("cycle", "before", "after") else "left")
    for d in decisions:
        stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(d.ts))
        t.add_row(
            stamp,
            str(d.cycle),
            d.kind + ("" if d.applied else " (failed)" if d.error else " (dry)"),
            d.target,
            d.pool or "-",
            d.gpu or "-",
            f"{d.before:g}",
            f"{d.after:g}",
            "-" if d.cost_per_hour_before is None else _money(d.cost_per_hour_before),
            "-" if d.cost_per_hour_after is None else _money(d.cost_per_hour_after),
            d.reason + (f" [failed: {d.error}]" if d.error else ""),
        )
    return t

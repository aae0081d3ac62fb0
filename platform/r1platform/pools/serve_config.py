"""The plan is what gets deployed: one function turns a plan into the Serve config document
(Serve's declarative config: `serve deploy`, the dashboard REST API, a RayService's
serveConfigV2), and one reads a Serve config back into (deployment, pool) layouts.

Each serving assignment `D@P` becomes one model of the settings the app is built from
(`serve_apps.r1_chat:build_app_from_args`): the workload's model as `path`, the pool and its GPU
type, TP, PP and the engine profile written out explicitly (so the engine runs what the plan
shows, not a default re-derived later), and a fixed replica count, which the pool controller
then owns. A deployment planned on several pools is refused: the app routes one model name to
one Serve deployment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import PoolsConfigError
from .fit import builtin_key, hf_id
from .plan_model import Plan, ServingAssignment

APP_NAME = "r1"  # localcluster.SERVE_APP_NAME: a deploy replaces the app `r1p up` started
IMPORT_PATH = "serve_apps.r1_chat:build_app_from_args"


class ServeConfigError(PoolsConfigError):
    """A plan the Serve app cannot express, or a Serve config that is not one of ours."""


@dataclass(frozen=True)
class DeployedLayout:
    """What one `D@P` Serve deployment runs: the round-trip unit of plan <-> Serve config."""

    deployment: str
    pool: str
    gpu: str
    replicas: int
    tp: int
    pp: int
    dtype: str | None
    quantization: str | None
    kv_cache_dtype: str


def layout_of(s: ServingAssignment) -> DeployedLayout:
    tiny = builtin_key(s.model) == "tiny-r1"
    return DeployedLayout(
        s.deployment,
        s.pool,
        s.gpu,
        s.replicas,
        s.tp,
        s.pp,
        # The tiny model runs on CPU engines (its simulated pools): it keeps the CPU dtype.
        None if tiny else s.dtype,
        None if tiny else s.quantization,
        "auto" if tiny else s.kv_cache_dtype,
    )


def _model_settings(s: ServingAssignment) -> dict[str, Any]:
    tiny = builtin_key(s.model) == "tiny-r1"
    ms: dict[str, Any] = {
        "path": None if tiny else (hf_id(s.model) or s.model),
        "pool": s.pool,
        "accelerator_type": s.gpu,
        "tensor_parallel_size": s.tp,
        "pipeline_parallel_size": s.pp,
        "autoscaling": {"min_replicas": s.replicas, "max_replicas": s.replicas},
    }
    if not tiny:
        ms["dtype"] = s.dtype
        # "none", not absent: an explicit no-quantization survives a change of defaults.
        ms["quantization"] = s.quantization or "none"
        ms["kv_cache_dtype"] = s.kv_cache_dtype
    return ms


def serve_config(
    plan: Plan,
    *,
    serve: Mapping[str, Any] | None = None,
    models: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Serve config document that deploys `plan`'s serving layouts.

    `serve` is the settings' `serve:` block (host, API keys...); `models` adds per-deployment
    settings the plan does not decide (max_model_len, gpu_memory_utilization...), keyed by
    deployment name. Models whose replica fits on one node come first: the first model is hosted
    inside the ingress replicas, which must never span nodes."""
    by_dep: dict[str, list[ServingAssignment]] = defaultdict(list)
    for s in plan.serving:
        by_dep[s.deployment].append(s)
    if not by_dep:
        raise ServeConfigError("the plan has no serving assignment to deploy")
    for dep, rows in by_dep.items():
        if len(rows) > 1:
            where = ", ".join(f"{r.pool} ({r.tp}x{r.pp})" for r in rows)
            raise ServeConfigError(
                f"deployment {dep!r} is planned on several pools/layouts ({where}); the Serve app "
                "routes one model name to one deployment: split the workload per pool "
                "(gpu_types) or plan with one layout per deployment"
            )
    order = sorted(by_dep, key=lambda d: (by_dep[d][0].pp > 1, d))
    extra = models or {}
    settings_models = {
        d: {**dict(extra.get(d) or {}), **_model_settings(by_dep[d][0])} for d in order
    }
    args: dict[str, Any] = {"models": settings_models}
    if serve:
        args["serve"] = dict(serve)
        if args["serve"].get("ingress", "proxy") != "proxy":
            # Serve reads the ingress switches at process start: the pods' environment, which
            # the chart sets for its proxy; a redeploy cannot change it.
            raise ServeConfigError(
                f"serve.ingress {args['serve']['ingress']!r}: on Kubernetes the chart serves "
                "through Serve's HTTP proxy; only `r1p up` starts HAProxy (use 'proxy')"
            )
    deployments = [
        {"name": f"{d}@{by_dep[d][0].pool}", "num_replicas": by_dep[d][0].replicas} for d in order
    ]
    from r1platform.serving.tuning import serve_env

    return {
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                # The same Serve knobs `r1p up` deploys with (localcluster.serve_config).
                "runtime_env": {"env_vars": serve_env()},
                "args": args,
                "deployments": deployments,
            }
        ]
    }


# What serve_config writes for each model: everything else in a running model's settings
# (max_model_len, engine_extra, ...) is the operator's, not the plan's, and must survive a deploy.
_PLAN_KEYS = frozenset(
    {
        "path",
        "pool",
        "accelerator_type",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "autoscaling",
        "dtype",
        "quantization",
        "kv_cache_dtype",
    }
)


def carry_running(
    new_apps: list[dict[str, Any]], running_apps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`new_apps` (from serve_config) with what the plan does not decide taken from the running
    application of the same name: the `serve:` block (host, API keys, limits), each model's
    non-layout settings and the runtime_env. Without this a controller deploy would drop the
    operator's API keys and max_model_len. Pure, so both Serve actuators share it."""
    running = {a.get("name"): a for a in running_apps if isinstance(a, dict)}
    out = []
    for app in new_apps:
        old = running.get(app.get("name"))
        if old is None:
            out.append(app)
            continue
        old_args = old.get("args") or {}
        args = dict(app.get("args") or {})
        if "serve" not in args and "serve" in old_args:
            args["serve"] = old_args["serve"]
        old_models = old_args.get("models") or {}
        args["models"] = {
            name: {
                **{k: v for k, v in (old_models.get(name) or {}).items() if k not in _PLAN_KEYS},
                **ms,
            }
            for name, ms in (args.get("models") or {}).items()
        }
        merged = {**app, "args": args}
        if old.get("runtime_env"):
            merged["runtime_env"] = old["runtime_env"]
        out.append(merged)
    return out


def layouts_from_config(config: Mapping[str, Any]) -> list[DeployedLayout]:
    """Read a Serve config back through the platform's own Settings: what each `D@P` will run
    (the replica count from the deployment override when there is one, as Serve applies it)."""
    from r1platform.config import Settings

    apps = [a for a in config.get("applications") or [] if a.get("import_path") == IMPORT_PATH]
    if len(apps) != 1:
        raise ServeConfigError(f"expected one application with import_path {IMPORT_PATH}")
    app = apps[0]
    settings = Settings(**app["args"])
    overrides = {d["name"]: d.get("num_replicas") for d in app.get("deployments") or []}
    out = []
    for name, ms in settings.models.items():
        if ms.pool is None or ms.accelerator_type is None:
            raise ServeConfigError(f"model {name!r} has no pool and accelerator_type")
        replicas = overrides.get(f"{name}@{ms.pool}", ms.autoscaling.min_replicas)
        prof = None if ms.path is None else ms.engine_profile(ms.accelerator_type)
        out.append(
            DeployedLayout(
                name,
                ms.pool,
                ms.accelerator_type,
                int(replicas),
                ms.tensor_parallel_size,
                ms.pipeline_parallel_size,
                prof.dtype if prof else None,
                prof.quantization if prof else None,
                prof.kv_cache_dtype if prof else "auto",
            )
        )
    return sorted(out, key=lambda x: (x.deployment, x.pool))

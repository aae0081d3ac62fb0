"""The demand side of the loop: what each deployment should be provisioned for, with the
hysteresis that keeps load noise from flapping replicas, and the forecast it is judged by."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .control_config import ControllerConfig
from .forecast import Holt
from .headroom import Burstiness
from .protocols import DeploymentLoad


@dataclass
class Memory:
    """What the loop remembers between cycles (the only mutable state of the policy)."""

    rates: dict[str, float] = field(default_factory=dict)
    fc: dict[str, Holt] = field(default_factory=dict)  # load forecast per deployment
    bursts: dict[str, Burstiness] = field(default_factory=dict)  # measured climbs
    headroom: dict[str, float] = field(default_factory=dict)  # last headroom applied
    wants: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # recent demand
    last_up: dict[str, float] = field(default_factory=dict)
    last_reclaim: dict[str, float] = field(default_factory=dict)
    pending_shrink: dict[str, int] = field(default_factory=dict)
    shrink_since: dict[str, float] = field(default_factory=dict)  # when the reclaim was asked
    pending_grow: dict[str, tuple[int, float]] = field(default_factory=dict)  # (gpus, since)
    job_pool: dict[str, str] = field(default_factory=dict)
    layout: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # The full layout (TP, PP, dtype, quantization, kv_cache_dtype) each D@P was last deployed
    # with by this loop: a plan that differs from it is deployed as a whole Serve config.
    deployed: dict[tuple[str, str], tuple] = field(default_factory=dict)
    # Arrival rate each deployment was expected to have at the next cycle (forecast error).
    forecast: dict[str, float] = field(default_factory=dict)
    cycle: int = 0


def base_rate(load: DeploymentLoad, fc: Holt | None) -> float:
    """The rate the forecast starts from: the forecaster's level (noise averaged out, shifts
    followed at once), the read itself before there is one."""
    return fc.level if fc is not None and fc.level is not None else load.request_rate


def demand(
    load: DeploymentLoad,
    cfg: ControllerConfig,
    rise: float = 0.0,
    headroom=None,
    base: float | None = None,
) -> float:
    """Rate to provision for: the base rate (the read unless given) plus the rise forecast
    over the horizon (at most double: a step change is a burst, not a trend to extrapolate
    forever), plus what it takes to drain the queue, plus headroom (the configured prior
    unless a measured one is given)."""
    h = cfg.headroom if headroom is None else headroom
    b = load.request_rate if base is None else base
    rate = b + min(max(rise, 0.0), b)
    return (rate + load.queued / cfg.queue_drain_s) * (1 + h)


def horizon_s(cfg: ControllerConfig, lead_s: float) -> float:
    """How far ahead a replica asked for now starts serving: the next cycle plus its cold
    start, capped by lookahead_s (0 turns extrapolation off)."""
    return min(cfg.interval_s + lead_s, cfg.lookahead_s)


def observe_rates(
    loads: Mapping[str, DeploymentLoad],
    mem: Memory,
    now: float,
    cfg: ControllerConfig,
    leads: Mapping[str, float],
) -> None:
    """Fold this cycle's reads into each deployment's forecast and burstiness, and note the
    rate expected at the next cycle (what forecast_error judges)."""
    for name, load in loads.items():
        fc = mem.fc.setdefault(
            name, Holt(cfg.forecast_alpha, cfg.forecast_beta, outlier_sd=cfg.forecast_outlier_sd)
        )
        fc.update(now, load.request_rate)
        h = horizon_s(cfg, leads.get(name, 0.0))
        base = base_rate(load, fc)
        expected = base + min(fc.rise(h), base)
        b = mem.bursts.setdefault(name, Burstiness(cfg.burst_window_s))
        b.observe(now, load.request_rate, expected if fc.reads >= 2 else None, h, fc.shifted)
        mem.forecast[name] = fc.predict(cfg.interval_s)


def target_rates(
    loads: Mapping[str, DeploymentLoad],
    mem: Memory,
    now: float,
    cfg: ControllerConfig,
    defaults: Mapping[str, float],
    leads: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Hysteresis: move up at once when demand passes the band; move down only after the
    cooldown since the last rise, only to the highest demand seen over the last
    down_stabilization_s, and only when that is well below the target (Kubernetes HPA's
    scale-down stabilization: a metrics pipeline that exports every ~10 s shows steady load as
    dips and spikes, and a single dip must not release replicas)."""
    out = {}
    for name, default in defaults.items():
        prev = mem.rates.get(name)
        load = loads.get(name)
        fc, b = mem.fc.get(name), mem.bursts.get(name)
        rise = fc.rise(horizon_s(cfg, (leads or {}).get(name, 0.0))) if fc else 0.0
        h = (
            b.headroom(cfg.headroom_budget, cfg.headroom, cfg.headroom_max, cfg.burst_headroom_max)
            if b
            else None
        )
        want = demand(load, cfg, rise, h, base_rate(load, fc)) if load is not None else default
        mem.headroom[name] = cfg.headroom if h is None else h
        hist = [(t, w) for t, w in mem.wants.get(name, []) if now - t < cfg.down_stabilization_s]
        hist.append((now, want))
        mem.wants[name] = hist
        stable = max(w for _, w in hist)
        cooled = now - mem.last_up.get(name, -1e18) >= cfg.down_cooldown_s
        if prev is None or want > prev * (1 + cfg.up_threshold):
            out[name] = want
        elif cooled and stable < prev * (1 - cfg.down_threshold):
            out[name] = stable
        else:
            out[name] = prev
    return out


def forecast_error(forecast: Mapping[str, float], loads: Mapping[str, DeploymentLoad]) -> float:
    """Relative error of last cycle's forecast against the rates observed now, over the
    deployments both know: sum |forecast - observed| / sum observed (0 when nothing flows)."""
    names = [n for n in forecast if n in loads]
    observed = sum(loads[n].request_rate for n in names)
    miss = sum(abs(forecast[n] - loads[n].request_rate) for n in names)
    if observed <= 0:
        return 0.0 if miss <= 0 else 1.0
    return miss / observed

"""The demand side of the loop: what each deployment should be provisioned for, with the
hysteresis that keeps load noise from flapping replicas, and the forecast it is judged by."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .control_config import ControllerConfig
from .protocols import DeploymentLoad


@dataclass
class Memory:
    """What the loop remembers between cycles (the only mutable state of the policy)."""

    rates: dict[str, float] = field(default_factory=dict)
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (t, rate)
    wants: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # recent demand
    last_up: dict[str, float] = field(default_factory=dict)
    last_reclaim: dict[str, float] = field(default_factory=dict)
    pending_shrink: dict[str, int] = field(default_factory=dict)
    shrink_since: dict[str, float] = field(default_factory=dict)  # when the reclaim was asked
    pending_grow: dict[str, tuple[int, float]] = field(default_factory=dict)  # (gpus, since)
    job_pool: dict[str, str] = field(default_factory=dict)
    layout: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # Arrival rate each deployment was expected to have at the next cycle (forecast error).
    forecast: dict[str, float] = field(default_factory=dict)
    cycle: int = 0


def demand(load: DeploymentLoad, cfg: ControllerConfig, slope: float = 0.0) -> float:
    """Rate to provision for: arrivals (extrapolated over the lookahead when rising) plus what
    it takes to drain the queue, plus headroom."""
    # At most double: a step change is a burst, not a trend to extrapolate forever.
    rate = load.request_rate + min(max(slope, 0.0) * cfg.lookahead_s, load.request_rate)
    return (rate + load.queued / cfg.queue_drain_s) * (1 + cfg.headroom)


def target_rates(
    loads: Mapping[str, DeploymentLoad],
    mem: Memory,
    now: float,
    cfg: ControllerConfig,
    defaults: Mapping[str, float],
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
        slope = 0.0
        if load is not None and name in mem.seen and now > mem.seen[name][0]:
            t0, r0 = mem.seen[name]
            slope = (load.request_rate - r0) / (now - t0)
        want = demand(load, cfg, slope) if load is not None else default
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


def forecast_rates(
    loads: Mapping[str, DeploymentLoad], mem: Memory, now: float, horizon_s: float
) -> dict[str, float]:
    """Arrival rate expected `horizon_s` from now by the same trend `demand` provisions for
    (rising rates extrapolated, at most doubled; falling ones held)."""
    out = {}
    for name, load in loads.items():
        slope = 0.0
        if name in mem.seen and now > mem.seen[name][0]:
            t0, r0 = mem.seen[name]
            slope = (load.request_rate - r0) / (now - t0)
        rise = min(max(slope, 0.0) * horizon_s, load.request_rate)
        out[name] = load.request_rate + rise
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

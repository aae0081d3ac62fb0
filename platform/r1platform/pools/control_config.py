"""Tuning of the reconcile loop (pydantic-settings: R1P_CONTROL_<FIELD> in the environment)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControllerConfig(BaseSettings):
    """Loop tuning; every field can be set from the environment as R1P_CONTROL_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="R1P_CONTROL_", extra="forbid")

    interval_s: float = Field(30.0, gt=0)
    # Headroom above the forecast: the prior, used until a deployment's burstiness has been
    # measured (headroom.Burstiness); from then on it is derived from the SLO and the climbs
    # above forecast measured within one lead time: the least headroom whose expected share of
    # requests without capacity is within headroom_budget (a part of the SLO's miss budget,
    # the rest is for what no forecast sees), at most headroom_max.
    # The budget is a quarter of a 99% SLO's miss budget, not half: a request that finds no
    # capacity also delays the ones queued behind it, so the misses a shortfall causes exceed
    # the shortfall itself (fleet sim, synthetic trace, one-day window: 0.5% gave 98.68% on seed 2).
    headroom: float = Field(0.15, ge=0)
    headroom_budget: float = Field(0.0025, gt=0, lt=1)
    headroom_max: float = Field(1.0, ge=0)
    # What headroom the climbs of shifts (a burst's onset, headroom.Burstiness) may buy at most:
    # the noise's headroom is always bought; an onset beyond this is left to the forecaster,
    # which follows a shift at once (tuned on the synthetic trace only).
    burst_headroom_max: float = Field(0.3, ge=0)
    # Climbs older than this no longer count. A day: bursts recur a few times a day, and a
    # window of an hour forgot each one before the next came, which then met the few percent
    # of headroom an hour of calm load measures (fleet sim, synthetic seed 3: 0.3-0.4% of the
    # day's requests missed in the first minutes of each burst).
    burst_window_s: float = Field(86400.0, gt=0)
    # Holt forecast (forecast.Holt): weight of a new read in the level and of a level change in
    # the trend.
    forecast_alpha: float = Field(0.5, gt=0, le=1)
    forecast_beta: float = Field(0.3, gt=0, le=1)
    # A read this many standard deviations of the one-step forecast error away is a shift the
    # level follows at once; closer ones are noise it averages (0: off, the level is an EWMA).
    forecast_outlier_sd: float = Field(3.0, ge=0)
    # Storage read throughput for a replica's weights, GB/s (coldstart.lead_time_s).
    storage_gbps: float = Field(2.0, gt=0)
    # Re-target up when demand exceeds the target by this fraction ...
    up_threshold: float = Field(0.05, ge=0)
    down_threshold: float = Field(0.20, ge=0, lt=1)  # ... and down only when it falls this far
    down_cooldown_s: float = Field(300.0, ge=0)  # no scale-down sooner than this after a rise
    # Scale down only to the highest demand of this window (several metric export intervals).
    down_stabilization_s: float = Field(60.0, ge=0)
    lend_cooldown_s: float = Field(600.0, ge=0)  # no lending to a job this soon after a reclaim
    queue_drain_s: float = Field(30.0, gt=0)  # queued requests should drain within this time
    # Request rates are the counters' increase over this window (Prometheus rate()): longer
    # than the metrics export interval, short enough to see a burst within a cycle or two.
    rate_window_s: float = Field(30.0, gt=0)
    # Replicas take minutes to start (coldstart.lead_time_s per GPU type and model), so
    # provision for where a rising rate will be one interval plus that lead time ahead, but
    # never further than this; falling rates are not extrapolated (0: no extrapolation).
    lookahead_s: float = Field(900.0, ge=0)
    # Keep this share of a pool's serving GPUs un-lent so small rises need no reclaim
    # (each reclaim costs the job a checkpoint and a restart).
    lend_reserve: float = Field(0.10, ge=0)
    # After a reclaim the next cycle comes this soon (not a full interval later), so the GPUs
    # the job releases after its checkpoint start serving as soon as they are free.
    reclaim_poll_s: float = Field(30.0, gt=0)
    # A lent grow the job has not taken up by then is given up (the job may be gone or its
    # workers unschedulable); until then the GPUs count as the job's.
    grow_timeout_s: float = Field(600.0, gt=0)
    plan_time_limit_s: float = Field(5.0, gt=0)
    # Re-pack every deployment from scratch (moving replicas, make before break) when that
    # plan is cheaper than keeping running replicas in place by more than this share
    # (0: never; running replicas move only when their deployment's demand falls).
    repack_gain: float = Field(0.0, ge=0, lt=1)
    # Take GPUs back from training only when that makes serving this much cheaper (or when
    # the free GPUs cannot carry the load): every reclaim costs a checkpoint and a restart.
    reclaim_tolerance: float = Field(0.05, ge=0)
    # Re-planning every cycle: a 0.1% optimality gap is far below load noise and 10x faster.
    mip_gap: float = Field(1e-3, ge=0)
    # A reclaim the job has not carried out by then is asked for again (the request may have
    # been lost with a restarted control actor); the GPUs stay off limits meanwhile.
    shrink_timeout_s: float = Field(900.0, gt=0)
    # A failed cycle (dashboard, GCS or an actuator down) is retried after error_backoff_s,
    # doubling with each failure in a row up to max_backoff_s.
    error_backoff_s: float = Field(5.0, gt=0)
    max_backoff_s: float = Field(300.0, gt=0)

    def backoff_s(self, failures_in_a_row: int) -> float:
        """Wait before the next cycle after this many failed cycles in a row."""
        if failures_in_a_row <= 0:
            return self.interval_s
        return min(self.error_backoff_s * 2 ** (failures_in_a_row - 1), self.max_backoff_s)

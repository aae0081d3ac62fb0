"""Short-horizon load forecast for one deployment: Holt's linear smoothing (an EWMA of the
level plus an EWMA of its trend) on irregularly spaced reads, with a seasonal correction once
the history covers a full season and a bit.

Why Holt: a replica takes minutes to start (coldstart.lead_time_s), so the controller must
provision for where the rate will be one lead time from now; a trend estimate smoothed over
several reads extrapolates a real ramp while a single noisy read moves it little. Why seasonal
only with history: diurnal traffic repeats daily, but a controller that has run for an hour has
seen no season, and a fitted season from less than two cycles is noise.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field


@dataclass
class Holt:
    """Level and trend (rate units per second) of one rate series."""

    alpha: float = 0.5  # weight of a new read in the level
    beta: float = 0.3  # weight of a new level change in the trend
    season_s: float = 86400.0
    level: float | None = None
    trend: float = 0.0
    t: float | None = None
    reads: int = 0
    history: list[tuple[float, float]] = field(default_factory=list)  # (t, rate), for seasons
    # A read further than outlier_sd standard deviations of the one-step error from the
    # forecast is a shift, not noise: the level jumps to it at once (alpha 1). So a small alpha
    # can average noisy reads without lagging a burst (a Shewhart 3-sigma rule on the
    # residuals). 0 turns it off.
    outlier_sd: float = 0.0
    var: float | None = None  # EWMA of squared one-step errors (clipped at outlier_sd)
    var_weight: float = 0.1
    shifted: bool = False  # the last read was a shift (see outlier_sd)

    def update(self, t: float, rate: float) -> None:
        """Fold in the rate read at time t (a read at or before the last one moves the level
        only: no time passed to turn into a trend)."""
        self.shifted = False
        if self.level is None or self.t is None:
            self.level, self.t = rate, t
        else:
            dt = t - self.t
            if dt <= 0:
                a = self._weight(rate - self.level)
                self.level = a * rate + (1 - a) * self.level
            elif self.reads == 1:  # the first difference: one trend step from none (a
                # step change between the first two reads is not a ramp to extrapolate)
                self.trend = self.beta * (rate - self.level) / dt
                self.level, self.t = rate, t
            else:
                prior = self.level + self.trend * dt
                a = self._weight(rate - prior)
                level = a * rate + (1 - a) * prior
                self.trend = self.beta * (level - self.level) / dt + (1 - self.beta) * self.trend
                self.level, self.t = level, t
        self.reads += 1
        if not self.history or t > self.history[-1][0]:
            self.history.append((t, rate))
            # Keep one season and a margin: enough for the seasonal lookup, bounded memory.
            while self.history and self.history[0][0] < t - 1.5 * self.season_s:
                self.history.pop(0)

    def _weight(self, e: float) -> float:
        """The level's weight for a read that missed the forecast by e; learns the error's
        spread (clipped, so one burst does not make every later burst look like noise)."""
        if self.outlier_sd <= 0:
            return self.alpha
        if self.var is None:  # no spread measured yet: every read is news
            self.var = e * e
            return 1.0
        limit = self.outlier_sd * math.sqrt(self.var)
        self.shifted = abs(e) > limit
        clipped = max(-limit, min(e, limit))
        self.var = self.var_weight * clipped * clipped + (1 - self.var_weight) * self.var
        return 1.0 if self.shifted else self.alpha

    def _rate_at(self, t: float) -> float | None:
        i = bisect.bisect_left(self.history, (t, float("-inf")))
        if i >= len(self.history):
            return None
        return self.history[i][1]

    def predict(self, horizon_s: float) -> float:
        """Rate expected horizon_s after the last read (never below 0)."""
        if self.level is None or self.t is None:
            return 0.0
        base = self.level + self.trend * horizon_s
        if self.history and self.t - self.history[0][0] >= self.season_s + horizon_s:
            # Seasonal: scale by how last season's rate moved over the same horizon.
            then, later = (
                self._rate_at(self.t - self.season_s),
                self._rate_at(self.t - self.season_s + horizon_s),
            )
            if then and later is not None:
                base = self.level * later / then
        return max(base, 0.0)

    def rise(self, horizon_s: float) -> float:
        """How much the rate is expected to rise over horizon_s (0 when flat or falling)."""
        if self.level is None:
            return 0.0
        return max(self.predict(horizon_s) - self.level, 0.0)

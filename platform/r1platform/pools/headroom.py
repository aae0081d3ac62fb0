"""Headroom from the SLO and the measured burstiness of one deployment's load.

A replica asked for now serves one horizon later (the control interval plus the cold-start
lead time), so what matters is how far the load can climb above the forecast within one
horizon. Every cycle's forecast is kept; once its horizon has passed, the highest rate read in
it over the forecast is one sample of that climb (a log ratio). The headroom covers the
`quantile` of those samples over a sliding window, modelled as log-normal (mean + z x std of
the log ratios, z from the quantile) so that a few dozen samples give a stable estimate and a
single burst widens it for as long as it stays in the window, then lets it go.

The quantile is where the SLO comes in: a 99% attainment goal covers the climb 99% of the time.
Until `min_samples` climbs are measured the prior (the configured headroom) is used.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist


@dataclass
class Burstiness:
    window_s: float = 3600.0
    pending: deque = field(default_factory=deque)  # (t made, t due, forecast, highest read)
    samples: deque = field(default_factory=deque)  # (t due, ln(highest read / forecast))

    def observe(self, t: float, rate: float, forecast: float | None, horizon_s: float) -> None:
        """Fold in the rate read at t and register this cycle's forecast for the horizon (None:
        no forecast to judge yet, e.g. before the forecaster has seen a trend)."""
        for item in self.pending:
            if item[0] < t <= item[1]:
                item[3] = max(item[3], rate)
        while self.pending and self.pending[0][1] <= t:
            _, due, fc, peak = self.pending.popleft()
            if fc > 0 and peak > 0:
                self.samples.append((due, math.log(peak / fc)))
        while self.samples and self.samples[0][0] < t - self.window_s:
            self.samples.popleft()
        if forecast is not None:
            self.pending.append([t, t + max(horizon_s, 0.0), forecast, 0.0])

    def headroom(self, quantile: float, prior: float, cap: float, min_samples: int = 8) -> float:
        """Relative headroom covering the `quantile` of measured climbs (0 .. cap)."""
        if len(self.samples) < min_samples:
            return prior
        xs = [x for _, x in self.samples]
        z = NormalDist().inv_cdf(min(max(quantile, 0.5), 0.9999))
        h = math.exp(statistics.fmean(xs) + z * statistics.pstdev(xs)) - 1.0
        return min(max(h, 0.0), cap)

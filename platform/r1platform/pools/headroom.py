"""Headroom from the SLO and the measured burstiness of one deployment's load.

A replica asked for now serves one horizon later (the control interval plus the cold-start
lead time), so what matters is how far the load climbs above the forecast within one horizon.
Every cycle's forecast is kept; each rate read before its horizon has passed is one sample of
that climb (read / forecast). The headroom is the smallest h whose expected shortfall over the
samples of the last `window_s`, sum(max(0, x - (1 + h))) / sum(x), the share of requests that
would find no capacity, stays within `budget`: the part of the SLO's miss budget (1% for a 99%
goal) that headroom may spend. Smooth load needs little, a noisy or bursty one more; one burst
widens it while it is in the window, then lets it go.

Until `min_samples` climbs are measured the prior (the configured headroom) is used.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Burstiness:
    window_s: float = 3600.0
    pending: deque = field(default_factory=deque)  # (t made, t due, forecast)
    samples: deque = field(default_factory=deque)  # (t read, read / forecast)

    def observe(self, t: float, rate: float, forecast: float | None, horizon_s: float) -> None:
        """Fold in the rate read at t and register this cycle's forecast for the horizon (None:
        no forecast to judge yet, e.g. before the forecaster has seen a trend)."""
        while self.pending and self.pending[0][1] < t:
            self.pending.popleft()
        for made, _due, fc in self.pending:
            if made < t and fc > 0:
                self.samples.append((t, rate / fc))
        while self.samples and self.samples[0][0] < t - self.window_s:
            self.samples.popleft()
        if forecast is not None:
            self.pending.append((t, t + max(horizon_s, 0.0), forecast))

    def headroom(self, budget: float, prior: float, cap: float, min_samples: int = 8) -> float:
        """Smallest relative headroom (0 .. cap) whose expected shortfall is within budget."""
        if len(self.samples) < min_samples:
            return prior
        return shortfall_headroom([x for _, x in self.samples], budget, cap)


def shortfall_headroom(xs: list[float], budget: float, cap: float) -> float:
    """The least h in [0, cap] with sum(max(0, x - 1 - h)) <= budget * sum(x), exactly.

    The shortfall falls piecewise linearly in h; with the k largest climbs above 1 + h it is
    S_k - k (1 + h) (S_k: their sum), and the answer is in the first segment whose solution
    of S_k - k (1 + h) = budget * sum(x) does not fall below the next climb. One sort, so a
    window of a day of samples costs milliseconds."""
    ys = sorted(xs, reverse=True)
    target = budget * sum(ys)
    top = 0.0
    for k, y in enumerate(ys, 1):
        top += y
        h = (top - target) / k - 1.0
        if k == len(ys) or h >= ys[k] - 1.0:
            return min(max(h, 0.0), cap)
    return 0.0  # no samples

"""Serving load traces: synthetic diurnal + bursts, or the Azure LLM inference trace CSV
(columns TIMESTAMP, ContextTokens, GeneratedTokens), binned into per-tick arrival rates."""

from __future__ import annotations

import csv
import math
import random
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import PoolsConfigError

SAMPLE_CSV = Path(__file__).with_name("data") / "azure_llm_sample.csv"


@dataclass(frozen=True)
class Trace:
    """Relative load per tick (mean 1.0) plus mean tokens per request and the spread of
    request sizes (standard deviation of ln tokens), from which size mixes are built."""

    tick_s: float
    shape: list[float]
    avg_input_tokens: float
    avg_output_tokens: float
    # The spread write_sample draws with (log-normal sigma 0.8 context, 0.7 generated, around
    # the Azure conversation trace's medians); azure_csv measures it from the rows.
    sigma_input: float = 0.8
    sigma_output: float = 0.7

    def at(self, t: float) -> float:
        return self.shape[int(t // self.tick_s) % len(self.shape)]

    @property
    def peak(self) -> float:
        return max(self.shape)


def synthetic(
    duration_s: float,
    tick_s: float,
    seed: int,
    *,
    amplitude: float = 0.6,
    bursts_per_day: float = 4.0,
    burst_height: float = 1.5,
    burst_s: float = 900.0,
) -> Trace:
    """Diurnal sine (trough at 04:00, peak at 16:00) with Poisson bursts that ramp up and
    decay, the pattern of production chat traffic (Azure LLM trace, Splitwise paper fig. 3)."""
    rng = random.Random(seed)
    n = max(int(duration_s // tick_s), 1)
    shape = []
    bursts: list[tuple[float, float]] = []
    t = rng.expovariate(bursts_per_day / 86400.0)
    while t < duration_s:
        bursts.append((t, burst_height * rng.uniform(0.5, 1.0)))
        t += rng.expovariate(bursts_per_day / 86400.0)
    for i in range(n):
        t = i * tick_s
        base = 1.0 + amplitude * math.sin(2 * math.pi * (t / 86400.0 - 10 / 24))
        extra = 0.0
        for start, h in bursts:
            if start <= t < start + burst_s:
                x = (t - start) / burst_s
                extra += h * min(1.0, 4 * x) * (1 - x)  # fast ramp, slower decay
        shape.append(max(base + extra, 0.05) * rng.uniform(0.95, 1.05))
    mean = sum(shape) / n
    return Trace(tick_s, [s / mean for s in shape], 1000.0, 1000.0)


def _parse_ts(s: str) -> float:
    s = s.strip()
    if "." in s:  # the Azure trace has 7 fractional digits; datetime takes 6
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        return float(s)


def azure_csv(path: str | Path, tick_s: float) -> Trace:
    p = Path(path)
    counts: dict[int, int] = {}
    n = 0
    tin = tout = 0.0
    logs: tuple[list[float], list[float]] = ([], [])
    try:
        with p.open(newline="") as f:
            rows = csv.DictReader(f)
            missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(rows.fieldnames or [])
            if missing:
                raise PoolsConfigError(f"trace {str(p)!r}: missing column(s) {sorted(missing)}")
            t0 = None
            for i, row in enumerate(rows, start=2):
                try:
                    ts = _parse_ts(row["TIMESTAMP"])
                    cin, cout = float(row["ContextTokens"]), float(row["GeneratedTokens"])
                except (TypeError, ValueError):
                    raise PoolsConfigError(f"trace {str(p)!r}: bad row at line {i}") from None
                tin += cin
                tout += cout
                logs[0].append(math.log(max(cin, 1.0)))
                logs[1].append(math.log(max(cout, 1.0)))
                t0 = ts if t0 is None else t0
                k = int((ts - t0) // tick_s)
                counts[k] = counts.get(k, 0) + 1
                n += 1
    except OSError as e:
        raise PoolsConfigError(f"trace {str(p)!r}: {e.strerror or e}") from None
    if not n:
        raise PoolsConfigError(f"trace {str(p)!r}: no rows")
    shape = [float(counts.get(k, 0)) for k in range(max(counts) + 1)]
    mean = sum(shape) / len(shape)
    return Trace(
        tick_s,
        [s / mean for s in shape],
        tin / n,
        tout / n,
        statistics.pstdev(logs[0]),
        statistics.pstdev(logs[1]),
    )


def write_sample(path: str | Path, seed: int = 0, minutes: int = 30, rps: float = 1.5) -> None:
    """Generate an Azure-format sample: Poisson arrivals under a synthetic shape, token counts
    log-normal around the conversation trace's medians (~1k context, ~250 generated)."""
    rng = random.Random(seed)
    shape = synthetic(minutes * 60, 60, seed, bursts_per_day=96, burst_s=300)
    base = datetime(2023, 11, 16, 18, 0, 0).timestamp()
    t = 0.0
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        while t < minutes * 60:
            t += rng.expovariate(rps * shape.at(t))
            stamp = datetime.fromtimestamp(base + t).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
            w.writerow(
                [
                    stamp,
                    max(int(rng.lognormvariate(math.log(1000), 0.8)), 1),
                    max(int(rng.lognormvariate(math.log(250), 0.7)), 1),
                ]
            )

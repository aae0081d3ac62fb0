"""Serving load traces: synthetic diurnal + bursts, or any CSV in the Azure LLM inference trace
format (columns TIMESTAMP, ContextTokens, GeneratedTokens), binned into per-tick arrival rates,
split over deployments by a seeded hash of each request and looped with mirrored joins."""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import random
import statistics
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from .errors import PoolsConfigError

# One hour of Azure's production LLM conversation service (CC-BY 4.0; attribution and license
# next to it in data/).
AZURE_CONV = Path(__file__).with_name("data") / "azure_llm_2023_conv.csv.gz"


@dataclass(frozen=True)
class Trace:
    """Relative load per tick (mean 1.0) plus mean tokens per request and the spread of
    request sizes (standard deviation of ln tokens), from which size mixes are built."""

    tick_s: float
    shape: list[float]
    avg_input_tokens: float
    avg_output_tokens: float
    # Spread of ln tokens for the synthetic trace: about the Azure conversation trace's
    # (azure_csv measures it from the rows).
    sigma_input: float = 0.8
    sigma_output: float = 0.7
    # One shape per deployment (a split real trace); empty: every deployment follows `shape`.
    per_deployment: tuple[list[float], ...] = ()

    def at(self, t: float, deployment: int | None = None) -> float:
        s = self.shape
        if deployment is not None and self.per_deployment:
            s = self.per_deployment[deployment % len(self.per_deployment)]
        return s[int(t // self.tick_s) % len(s)]

    @property
    def peak(self) -> float:
        return max(self.shape)

    def shape_of(self, deployment: int) -> list[float]:
        if self.per_deployment:
            return self.per_deployment[deployment % len(self.per_deployment)]
        return self.shape

    def window(self, start_s: float, duration_s: float) -> Trace:
        """The slice [start_s, start_s + duration_s) as a trace of its own (its shapes keep
        their scale: a slice of the peak hours stays at peak load)."""
        a, b = int(start_s // self.tick_s), int((start_s + duration_s) // self.tick_s)

        def cut(s: list[float]) -> list[float]:
            return [s[k % len(s)] for k in range(a, max(b, a + 1))]

        return replace(
            self, shape=cut(self.shape), per_deployment=tuple(cut(s) for s in self.per_deployment)
        )


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
        return float(s)  # seconds (a plain number) are accepted too


@dataclass(frozen=True)
class Request:
    line: int  # line in the file (the header is line 1)
    t: float  # seconds since the first request
    context_tokens: float
    generated_tokens: float


def read_requests(path: str | Path) -> list[Request]:
    """Every row of a CSV in the Azure LLM inference trace format (TIMESTAMP, ContextTokens,
    GeneratedTokens; other columns ignored; .gz read as gzip), sorted by time. A row that does
    not parse is an error naming the file, the line and the field."""
    p = Path(path)
    raw: list[tuple[int, float, float, float]] = []
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", newline="") as f:
            rows = csv.DictReader(f)
            missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(rows.fieldnames or [])
            if missing:
                raise PoolsConfigError(f"trace {str(p)!r}: missing column(s) {sorted(missing)}")
            for i, row in enumerate(rows, start=2):
                raw.append((i, *_parse_row(p, i, row)))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise PoolsConfigError(f"trace {str(p)!r}: {getattr(e, 'strerror', None) or e}") from None
    if not raw:
        raise PoolsConfigError(f"trace {str(p)!r}: no rows")
    raw.sort(key=lambda r: (r[1], r[0]))
    t0 = raw[0][1]
    return [Request(i, ts - t0, cin, cout) for i, ts, cin, cout in raw]


def _parse_row(p: Path, i: int, row: dict) -> tuple[float, float, float]:
    def bad(field: str, why: str) -> PoolsConfigError:
        return PoolsConfigError(
            f"trace {str(p)!r}: bad row at line {i}: {field} {row.get(field)!r} {why}"
        )

    try:
        ts = _parse_ts(row["TIMESTAMP"] or "")
    except (TypeError, ValueError):
        raise bad("TIMESTAMP", "is not a date-time or a number of seconds") from None
    out = []
    for field in ("ContextTokens", "GeneratedTokens"):
        try:
            v = float(row[field])
        except (TypeError, ValueError):
            raise bad(field, "is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise bad(field, "must be a finite count >= 0")
        out.append(v)
    if not math.isfinite(ts):
        raise bad("TIMESTAMP", "is not finite")
    return ts, out[0], out[1]


def split_key(req: Request, seed: int) -> int:
    """The deployment-split hash of one request: blake2b over the seed, the request's line
    and its timestamp. Seeded, so each seed deals the trace differently; stable across runs
    and machines (no Python hash randomisation)."""
    h = hashlib.blake2b(f"{seed}:{req.line}:{req.t:.6f}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def split(reqs: list[Request], n: int, seed: int) -> list[list[Request]]:
    """Deal the requests over n deployments: request r goes to split_key(r, seed) mod n."""
    out: list[list[Request]] = [[] for _ in range(max(n, 1))]
    for r in reqs:
        out[split_key(r, seed) % len(out)].append(r)
    return out


def binned(reqs: list[Request], tick_s: float, n_ticks: int) -> list[float]:
    """Arrivals per tick (n_ticks of them; the last partial tick of the trace is dropped, so
    it does not read as a dip)."""
    counts = [0.0] * n_ticks
    for r in reqs:
        k = int(r.t // tick_s)
        if k < n_ticks:
            counts[k] += 1
    return counts


def mirror_loop(series: list[float], n: int) -> list[float]:
    """Extend `series` to n points by playing it forward, then backward, then forward...:
    every seam joins a point to itself, so looping adds no jump the trace did not have."""
    if not series:
        raise ValueError("mirror_loop: empty series")
    period = series + series[::-1]
    return [period[k % len(period)] for k in range(n)]


def azure_csv(
    path: str | Path,
    tick_s: float,
    *,
    duration_s: float | None = None,
    deployments: int = 1,
    seed: int = 0,
) -> Trace:
    """A trace from an Azure-format CSV: arrivals per tick (relative, mean 1.0) looped with
    mirrored joins to duration_s (default: the trace's own length), and, with deployments > 1,
    one shape per deployment from the seeded hash split (each scaled to mean 1.0: the
    workload's request_rate sets the absolute rate, so the trace scales to any fleet)."""
    reqs = read_requests(path)
    n_own = max(int(reqs[-1].t // tick_s), 1)
    n = max(math.ceil(duration_s / tick_s), 1) if duration_s else n_own

    def shape(rs: list[Request]) -> list[float]:
        s = mirror_loop(binned(rs, tick_s, n_own), n)
        mean = sum(s) / len(s)
        if mean <= 0:
            raise PoolsConfigError(f"trace {str(path)!r}: a deployment got no requests")
        return [x / mean for x in s]

    parts = split(reqs, deployments, seed) if deployments > 1 else []
    logs_in = [math.log(max(r.context_tokens, 1.0)) for r in reqs]
    logs_out = [math.log(max(r.generated_tokens, 1.0)) for r in reqs]
    return Trace(
        tick_s,
        shape(reqs),
        statistics.fmean(r.context_tokens for r in reqs),
        statistics.fmean(r.generated_tokens for r in reqs),
        statistics.pstdev(logs_in),
        statistics.pstdev(logs_out),
        tuple(shape(p) for p in parts),
    )

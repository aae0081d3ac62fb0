"""Simulator fidelity: does the fleet simulator predict what the live platform does?

    .venv/bin/python bench/sim_fidelity.py [--minutes 40] [--compress 4] [--json OUT.json]
                                           [--live-json SAVED.json]

Forty minutes of the Azure LLM conversation trace (the in-repo copy, read with
pools.trace.read_requests) are replayed, scaled down, against a live `r1p up` cluster with
`r1p control` running, and the same arrivals go through the simulator with the same settings.

Scaling: the window is the `--minutes` of the trace whose per-minute rate swings most; its
timestamps are divided by `--compress` (40 trace minutes in 10 wall minutes at 4), and each
request is kept when its seeded hash (trace.split_key) falls in a fraction chosen so the busiest
rate window needs about 3 of the tiny model's replicas. A replica too fast for that even with
every request kept raises the compression (and the trace minutes, so the replay lasts as long
in wall time) until it is outgrown (`fit_compress`). Request sizes are not replayed: the tiny
model's context is 256 tokens, so every request is one short chat turn (the shape whose
capacity is measured). Every time constant (control interval, rate window, cooldowns) is in
wall seconds and is the same for both sides; nothing else is rescaled.

Live side (the real platform: Ray, Serve + vLLM CPU engines, a GRPO job, `r1p control`):
1. `r1p up` with one L4 pool of 4 GPU units; a GRPO job with 1-2 train workers;
2. one replica's capacity measured under the job's load: open-loop chat requests at rising
   rates, climbing until one fails, the highest rate where >= 99% meet the SLO (TTFT and TPOT
   p99 targets);
3. `r1p control` with that capacity declared (replica_rps), then the replay; a watcher samples
   Serve's replica targets and running replicas twice a second.
Measured there and handed to the simulator: the replica capacity, the replica start time
(target raised -> replica RUNNING), the job's release time after a reclaim (checkpoint).

Sim side: pools.sim.simulate with the r1p policy on the same fleet, workloads and
ControllerConfig, with three things made to match what the live loop sees and starts from:
the load read as the live MetricsLoadSource reads it (arrivals over rate_window_s, as of the
last metrics export), one replica serving and the job on 1 GPU at t=0 (what `r1p up` and the
submitted job leave), and the measured start and checkpoint times.

Compared (see `compare`): the order of scale-up, scale-down, lend and reclaim events (repeats
in a row collapsed), the scale-up lag after each rise in load (matched scale-ups within one
control interval of each other), and SLO attainment (the share of requests whose TTFT and TPOT
both meet the workload's p99 targets; within 2 points). `agrees` in the JSON says whether all
three hold (`--strict`: exit 1 when not).

This runs in `make bench`, not CI: a live replay takes ~15 minutes of a whole cluster. The
replay must outlast a replica's start (116-145 s measured on 2 cores), or no scale-up it
triggers can serve any of it: 10 trace minutes, the old default, replayed in 140-150 s.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
R1P = str(Path(sys.executable).with_name("r1p"))
DASHBOARD = "http://127.0.0.1:8265"
JOB = "fidelity"
POOL_GPUS = 4
SLO_TTFT_S, SLO_TPOT_S = 1.0, 0.1
POOLS = "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 4, min_nodes: 1, max_nodes: 1}\n"
SETTINGS = """models:
  tiny-r1:
    pool: l4
    num_cpus: 0.25
    max_model_len: 256
    autoscaling: {min_replicas: 1, max_replicas: 1}
serve: {host: 127.0.0.1, port: %d}
"""
WORKLOADS = """serving:
  - {name: tiny-r1, model: tiny-r1, request_rate: %.3f, avg_input_tokens: 16,
     avg_output_tokens: 8, slo: {ttft_p99_s: %g, tpot_p99_s: %g}, gpu_types: [L4],
     replica_rps: {L4: %.3f}}
training:
  - {name: fidelity, model: tiny-r1, gpus: {min: 1, max: 2}, gpu_types: [L4], priority: 1}
"""
# One ControllerConfig for both sides (R1P_CONTROL_<FIELD> live): a short cooldown, as the
# pools cycle scenario uses, so a 2.5-minute replay shows scale-downs and lends.
CONTROL = {
    "interval_s": 5.0,
    "rate_window_s": 30.0,
    "down_cooldown_s": 30.0,
    "down_stabilization_s": 30.0,
    "lend_cooldown_s": 30.0,
    "lend_reserve": 0.0,
}
METRICS_EXPORT_S = 10.0  # Ray's metrics agent exports every ~10 s: reads are that stale
MAX_ONGOING = 128  # Serve's max_ongoing_requests per engine replica (2 x max_num_seqs 64)
TARGET_REPLICAS = 2.5  # the busiest rate window should need about this many replicas
BODY = {"model": "tiny-r1", "messages": [{"role": "user", "content": "3+4"}], "max_tokens": 8}


# ------------------------------------------------------------------ the replayed arrivals
def pick_window(times: list[float], minutes: int) -> float:
    """Start (s) of the `minutes`-long window whose per-minute arrival counts swing most
    (max/min), so the replay has rises and falls to scale on."""
    per_min = [0] * (int(times[-1] // 60) + 1)
    for t in times:
        per_min[int(t // 60)] += 1
    best, start = -1.0, 0
    for a in range(0, max(len(per_min) - minutes, 0) + 1):
        w = per_min[a : a + minutes]
        swing = max(w) / max(min(w), 1)
        if swing > best:
            best, start = swing, a
    return start * 60.0


def keep_fraction(times: list[float], compress: float, cap_rps: float, window_s: float) -> float:
    """Share of the window's requests to keep so its busiest rate window (wall time) asks for
    TARGET_REPLICAS replicas of cap_rps each."""
    wall = sorted(t / compress for t in times)
    busiest = max(
        bisect.bisect_right(wall, t + window_s) - i for i, t in enumerate(wall)
    ) / window_s  # fmt: skip
    return min(1.0, TARGET_REPLICAS * cap_rps / max(busiest, 1e-9))


def fit_compress(times: list[float], compress: float, cap_rps: float, window_s: float) -> float:
    """The smallest compression, from `compress` up (x1.25 steps, at most 64), at which the
    window's busiest rate asks for TARGET_REPLICAS replicas even with every request kept: a
    fast replica must still be outgrown, or the replay has nothing to scale on."""
    while compress < 64 and keep_fraction(times, compress, cap_rps, window_s) >= 1.0:
        compress *= 1.25
    return compress


def schedule(reqs, start_s: float, minutes: int, compress: float, keep: float, seed: int):
    """Wall-clock offsets of the kept requests of the window (sorted)."""
    from r1platform.pools.trace import split_key

    cut = int(keep * 2**64)
    return sorted(
        (r.t - start_s) / compress
        for r in reqs
        if start_s <= r.t < start_s + minutes * 60 and split_key(r, seed) < cut
    )


def metrics_rate(arrivals: list[float], t: float, window_s: float, export_s: float) -> float:
    """The arrival rate the live MetricsLoadSource reports at t: counters as of the last export
    of Ray's metrics agent (every export_s), their increase over the window; a replica's
    counter exists only from the export after its first request, and that first sample is the
    baseline (metrics_load.counter_increase), so the first export interval of load is not
    seen. The export phase is taken as aligned with the replay's start."""
    if not arrivals or t <= 0:
        return 0.0
    last = math.floor(t / export_s) * export_s
    first = math.ceil(max(arrivals[0], 1e-9) / export_s) * export_s
    lo = max(last - window_s, first)
    if last <= lo:
        return 0.0
    n = bisect.bisect_right(arrivals, last) - bisect.bisect_right(arrivals, lo)
    return n / window_s


def windowed_rate(arrivals: list[float], t: float, window_s: float) -> float:
    """Arrivals per second over (t - window_s, t]."""
    return (bisect.bisect_right(arrivals, t) - bisect.bisect_right(arrivals, t - window_s)) / (
        window_s
    )


# ------------------------------------------------------------------ comparison (pure)
@dataclass(frozen=True)
class Event:
    t: float  # seconds from the start of the replay
    kind: str  # scale | lend | reclaim
    before: int
    after: int

    @property
    def label(self) -> str:
        if self.kind == "scale":
            return "scale-up" if self.after > self.before else "scale-down"
        return self.kind


def events_from_decisions(rows: list[dict[str, Any]], t0: float) -> list[Event]:
    """The applied scale / lend / reclaim decisions, timed from t0."""
    return [
        Event(round(r["ts"] - t0, 2), r["kind"], int(r["before"]), int(r["after"]))
        for r in rows
        if r["kind"] in ("scale", "lend", "reclaim") and r.get("applied", True)
    ]


def order(events: list[Event]) -> list[str]:
    """The event labels in time order, a repeat in a row collapsed (a scale-up taken in two
    steps, 1->2 then 2->3, is one response to one rise)."""
    out: list[str] = []
    for e in sorted(events, key=lambda e: e.t):
        if not out or out[-1] != e.label:
            out.append(e.label)
    return out


def scale_up_lags(
    events: list[Event], arrivals: list[float], cap_rps: float, window_s: float, step_s: float = 1.0
) -> list[tuple[float, float]]:
    """(rise time, lag) per scale-up: the rise is the first moment since the previous scale
    event at which the load over the rate window outgrew the replicas running (before x
    capacity); the lag is from there to the scale-up (0 when it came ahead of the rise)."""
    out = []
    prev = 0.0
    for e in sorted(events, key=lambda e: e.t):
        if e.kind == "scale" and e.after > e.before:
            rise = None
            t = prev
            while t <= e.t:
                if windowed_rate(arrivals, t, window_s) > e.before * cap_rps:
                    rise = t
                    break
                t += step_s
            out.append((e.t if rise is None else rise, 0.0 if rise is None else e.t - rise))
        if e.kind == "scale":
            prev = e.t
    return out


def slo_attainment(records: list[dict[str, Any]], ttft_s: float, tpot_s: float) -> float:
    """Share of requests answered 200 with TTFT and TPOT within the targets."""
    if not records:
        return 1.0
    ok = sum(
        1
        for r in records
        if r.get("status") == 200 and r["ttft"] <= ttft_s and (r.get("tpot") or 0.0) <= tpot_s
    )
    return ok / len(records)


def compare(
    live: list[Event],
    sim: list[Event],
    lags_live: list[tuple[float, float]],
    lags_sim: list[tuple[float, float]],
    slo_live: float,
    slo_sim: float,
    interval_s: float,
) -> dict[str, Any]:
    """The three agreements the simulator is held to, with the numbers behind each."""
    o_live, o_sim = order(live), order(sim)
    n = min(len(lags_live), len(lags_sim))
    diffs = [abs(lags_live[i][1] - lags_sim[i][1]) for i in range(n)]
    # A scale-up matched by ordinal: its time, not only its lag, must agree.
    t_live = [e.t for e in sorted(live, key=lambda e: e.t) if e.label == "scale-up"]
    t_sim = [e.t for e in sorted(sim, key=lambda e: e.t) if e.label == "scale-up"]
    slo_points = abs(float(slo_live) - float(slo_sim)) * 100
    out = {
        "order_live": o_live,
        "order_sim": o_sim,
        "order_agrees": o_live == o_sim,
        "scale_up_lags_live_s": [round(x[1], 1) for x in lags_live],
        "scale_up_lags_sim_s": [round(x[1], 1) for x in lags_sim],
        "scale_up_times_live_s": t_live,
        "scale_up_times_sim_s": t_sim,
        "lag_max_diff_s": round(max(diffs), 1) if diffs else None,
        "lag_agrees": len(lags_live) == len(lags_sim) and all(d <= interval_s for d in diffs),
        "slo_live": round(slo_live, 4),
        "slo_sim": round(slo_sim, 4),
        "slo_diff_points": round(slo_points, 2),
        "slo_agrees": slo_points <= 2.0,
    }
    out["agrees"] = out["order_agrees"] and out["lag_agrees"] and out["slo_agrees"]
    return out


# ------------------------------------------------------------------ the simulator side
def simulate(arrivals: list[float], duration_s: float, measured: dict[str, float], tick_s=5.0):
    """The same arrivals through pools.sim with the r1p policy: (events, SLO attainment)."""
    import yaml
    from r1platform.pools import sim, sim_policies
    from r1platform.pools.catalog import load_catalog
    from r1platform.pools.control_config import ControllerConfig
    from r1platform.pools.controller import Controller
    from r1platform.pools.fleet import Fleet, parse_pools
    from r1platform.pools.plan_model import PlanRequest
    from r1platform.pools.planner import plan
    from r1platform.pools.protocols import DeploymentLoad
    from r1platform.pools.trace import Trace
    from r1platform.pools.workloads import Workloads, parse_workloads

    cap = measured["replica_rps"]
    catalog = load_catalog()
    fleet = Fleet(pools=parse_pools(yaml.safe_load(POOLS), catalog), catalog=catalog)
    wl = parse_workloads(yaml.safe_load(WORKLOADS % (0.2, SLO_TTFT_S, SLO_TPOT_S, cap)), catalog)
    serving = wl.serving
    n = max(math.ceil(duration_s / tick_s), 1)
    counts = [0.0] * n
    for t in arrivals:
        if t < n * tick_s:
            counts[int(t // tick_s)] += 1
    # The trace in arrivals per second (request_rate 1.0 below): the same requests, binned.
    tr = Trace(tick_s, [c / tick_s for c in counts], 16.0, 8.0)
    serving = [w.model_copy(update={"request_rate": 1.0}) for w in serving]
    cfg = sim.SimConfig(
        duration_s=n * tick_s,
        tick_s=tick_s,
        control_interval_s=CONTROL["interval_s"],
        checkpoint_s=measured["checkpoint_s"],
        restart_s=measured["restart_s"],
        checkpoint_every_s=1e9,
    )
    job = sim.JobSpec(JOB, "tiny-r1", 1, 2, 1e9, 1, 0.0, ["L4"])
    events: list[Event] = []

    class LiveLikeLoad:
        """Arrivals over rate_window_s as of the last metrics export (what the live
        MetricsLoadSource reads), the queue as the sim's backlog."""

        def __init__(self, st) -> None:
            self.st = st

        def read(self) -> dict[str, DeploymentLoad]:
            r = metrics_rate(arrivals, self.st.now, CONTROL["rate_window_s"], METRICS_EXPORT_S)
            # Live, a replica takes up to max_ongoing_requests (2 x max_num_seqs = 128) before
            # Serve queues: the backlog is in flight on the replicas, not queued.
            ready = sum(1 for x in self.st.replicas if x.ready_at <= self.st.now)
            backlog = self.st.backlog["tiny-r1"]
            queued = max(backlog - ready * MAX_ONGOING, 0.0)
            return {"tiny-r1": DeploymentLoad(backlog - queued, queued, r)}

    class Recording(sim_policies._SimServe):
        def set_replicas(self, deployment: str, pool: str, replicas: int) -> None:
            old = {id(r) for r in self.st.replicas}
            before = sum(1 for r in self.st.replicas if r.deployment == deployment)
            super().set_replicas(deployment, pool, replicas)
            for r in self.st.replicas:  # the measured start, not the GPU model's
                if id(r) not in old:
                    r.ready_at = self.st.now + measured["replica_start_s"]
            events.append(Event(self.st.now, "scale", before, replicas))

    class RecordingTraining(sim_policies._SimTraining):
        def request_checkpoint_and_shrink(self, job: str, gpus: int) -> None:
            events.append(Event(self.st.now, "reclaim", self.st.jobs[job].gpus, gpus))
            super().request_checkpoint_and_shrink(job, gpus)
            # Measured live: the next step boundary, the checkpoint and the trainer's teardown
            # (a pause also stops the job's engines), per kind of release.
            key = "pause_release_s" if gpus == 0 else "shrink_release_s"
            self.st.jobs[job].busy_until = self.st.now + measured.get(key, cfg.checkpoint_s)

        def grow(self, job: str, gpus: int, pool: str) -> None:
            events.append(Event(self.st.now, "lend", self.st.jobs[job].gpus, gpus))
            super().grow(job, gpus, pool)

    class Fidelity(sim_policies.R1pPolicy):
        def start(self, st, serving, trace) -> None:
            # What `r1p up` and the submitted job leave before the controller starts.
            p = plan(PlanRequest(st.fleet, Workloads(serving=serving, training=[]),
                                 rates={"tiny-r1": 0.2}))  # fmt: skip
            sim_policies._install(st, p, ready_at=0.0)
            st.jobs[JOB].gpus, st.jobs[JOB].pool = 1, "l4"
            ref: list = []
            self.ctl = Controller(
                st.fleet, Workloads(serving=serving, training=[]), LiveLikeLoad(st),
                Recording(st, ref, {w.name: w.model for w in serving}), sim_policies._SimCapacity(),
                RecordingTraining(st), ControllerConfig(**CONTROL), record=False,
                clock=lambda: st.now,
            )  # fmt: skip
            ref.append(self.ctl)

    with _quiet():
        res = sim.simulate(Fidelity(), fleet, serving, [job], tr, cfg)
    return events, res.slo_attainment


def _quiet():
    sys.path.insert(0, str(Path(__file__).parent))
    from benchutil import quiet_stdout

    return quiet_stdout()


# ------------------------------------------------------------------ the live side
class Replay:
    """Open-loop streaming chat requests at the given wall offsets; per request its status,
    TTFT and TPOT (one thread per request, so slow answers never delay later arrivals)."""

    def __init__(self, base: str, offsets: list[float]) -> None:
        self.base, self.offsets = base, offsets
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def _one(self, sent: float) -> None:
        import httpx

        rec: dict[str, Any] = {"sent": sent, "status": None, "ttft": math.inf, "tpot": None}
        t0 = time.monotonic()
        first = last = None
        chunks = 0
        try:
            with httpx.stream("POST", f"{self.base}/v1/chat/completions",
                              json={**BODY, "stream": True}, timeout=120) as r:  # fmt: skip
                rec["status"] = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        now = time.monotonic()
                        item = json.loads(line[6:])
                        if "error" in item:  # the stream was cut: a miss
                            rec["status"] = item["error"].get("code") or "stream error"
                        choices = item.get("choices") or [{}]  # the usage chunk has none
                        delta = choices[0].get("delta") or {}
                        if delta.get("content") or delta.get("reasoning_content"):
                            first = first or now
                            last = now
                            chunks += 1
        except Exception as e:  # counted as a miss, with its reason
            rec["error"] = repr(e)
        if first is not None:
            rec["ttft"] = first - t0
            rec["tpot"] = (last - first) / (chunks - 1) if chunks > 1 else 0.0
        with self.lock:
            self.records.append(rec)

    def run(self) -> list[dict[str, Any]]:
        t0 = time.monotonic()
        threads = []
        for off in self.offsets:
            time.sleep(max(0.0, t0 + off - time.monotonic()))
            th = threading.Thread(target=self._one, args=(off,), daemon=True)
            th.start()
            threads.append(th)
        for th in threads:
            th.join(timeout=180)
        return self.records


PROBE_RATES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0)


def probe_capacity(base: str, rates=PROBE_RATES, seconds=15.0) -> float:
    """Highest open-loop rate at which one replica meets the SLO for >= 99% of requests,
    climbing until a rate fails: a probe that stops while it still passes hands the simulator
    a lower bound, and a replica that is really faster drains a backlog the sim says grows."""
    best = rates[0] / 2
    for r in rates:
        recs = Replay(base, [i / r for i in range(int(seconds * r))]).run()
        att = slo_attainment(recs, SLO_TTFT_S, SLO_TPOT_S)
        print(f"  probe {r:g} rps: SLO attainment {att:.3f}", flush=True)
        if att < 0.99:
            break
        best = r
    return best


class ServeWatch:
    """(t, target, running) of tiny-r1@l4 twice a second."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        client = ServeSubmissionClient(DASHBOARD)
        while not self.stop.is_set():
            try:
                dep = client.get_serve_details()["applications"]["r1"]["deployments"]["tiny-r1@l4"]
                run = sum(1 for r in dep.get("replicas", []) if r.get("state") == "RUNNING")
                self.samples.append((time.time(), int(dep["target_num_replicas"]), run))
            except Exception as e:  # a slow dashboard: skip the sample, keep why
                self.errors.append(repr(e)[:200])
            time.sleep(0.5)

    def start_times(self) -> tuple[list[float], float]:
        """Seconds from each raise of the target to that many replicas RUNNING, and the
        longest wait of a raise never served (a lower bound on the start time; 0 if none)."""
        out, pending = [], 0.0
        for i in range(1, len(self.samples)):
            t, target, _ = self.samples[i]
            if target > self.samples[i - 1][1]:
                ready = next((s[0] for s in self.samples[i:] if s[2] >= target), None)
                if ready is not None:
                    out.append(ready - t)
                else:
                    pending = max(pending, self.samples[-1][0] - t)
        return out, pending


def run_live(minutes: int, compress: float, seed: int, workdir: Path) -> dict[str, Any]:
    from r1platform.contracts.net import free_port
    from r1platform.localcluster import local_env, use_cluster_auth
    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.pools.trace import AZURE_CONV, read_requests
    from ray.job_submission import JobSubmissionClient

    ensure_tiny_model()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (workdir / "pools.yaml").write_text(POOLS)
    (workdir / "settings.yaml").write_text(SETTINGS % port)
    os.environ.update(local_env())
    up = subprocess.run([R1P, "up", "--pools", str(workdir / "pools.yaml"), "--config",
                         str(workdir / "settings.yaml")], capture_output=True, text=True,
                        cwd=ROOT, timeout=900)  # fmt: skip
    if up.returncode:
        raise RuntimeError("r1p up failed: " + up.stdout[-1500:] + up.stderr[-1500:])
    control = job_id = watch = None
    jobs = None
    log = open(workdir / "control.log", "w")  # noqa: SIM115 - closed in finally
    try:
        use_cluster_auth()
        jobs = JobSubmissionClient(DASHBOARD)
        out = workdir / "out"
        args = ["--run_name", JOB, "--train_pool", "l4", "--num_workers", "1",
                "--prompts_per_step", "4", "--group_size", "4", "--max_new_tokens", "32",
                "--eval_size", "8", "--eval_every", "100000", "--save_every", "100000",
                "--max_steps", "100000", "--max_failures", "0", "--output_dir", str(out)]  # fmt: skip
        job_id = jobs.submit_job(
            entrypoint="python jobs/grpo.py " + " ".join(args),
            runtime_env={"working_dir": str(ROOT), "excludes": [".venv*", ".git",
                         "**/__pycache__", "outputs", "*.egg-info"]},
        )  # fmt: skip
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 600
        while sum(1 for x in _jsonl(metrics) if "event" not in x) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the GRPO job made no step in 600 s")
            time.sleep(2)
        print("live: measuring one replica's capacity under the job's load", flush=True)
        cap = probe_capacity(base)
        # The controller must not see the probe's load: let the rate window forget it.
        time.sleep(CONTROL["rate_window_s"] + 2 * METRICS_EXPORT_S)
        reqs = read_requests(AZURE_CONV)
        times = [r.t for r in reqs]
        start = pick_window(times, minutes)
        window = [t - start for t in times if start <= t < start + minutes * 60]
        fitted = fit_compress(window, compress, cap, CONTROL["rate_window_s"])
        if fitted > compress:  # more trace minutes, so the replay lasts as long in wall time
            minutes = min(int(times[-1] // 60), math.ceil(minutes * fitted / compress))
            start = pick_window(times, minutes)
            window = [t - start for t in times if start <= t < start + minutes * 60]
            compress = fit_compress(window, fitted, cap, CONTROL["rate_window_s"])
        keep = keep_fraction(window, compress, cap, CONTROL["rate_window_s"])
        offsets = schedule(reqs, start, minutes, compress, keep, seed)
        (workdir / "workloads.yaml").write_text(
            WORKLOADS % (0.2, SLO_TTFT_S, SLO_TPOT_S, cap)
        )  # fmt: skip
        env = {**os.environ, **{f"R1P_CONTROL_{k.upper()}": str(v) for k, v in CONTROL.items()}}
        decisions = workdir / "decisions.jsonl"
        control = subprocess.Popen(
            [R1P, "control", "-p", str(workdir / "pools.yaml"), "-w",
             str(workdir / "workloads.yaml"), "--address", "127.0.0.1:6379", "--dashboard",
             DASHBOARD, "--decisions-file", str(decisions)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        watch = ServeWatch()
        watch.thread.start()
        time.sleep(2 * CONTROL["interval_s"])  # its first cycles (the lend) before the load
        print(f"live: replaying {len(offsets)} requests over {offsets[-1]:.0f}s "
              f"(trace minutes {start / 60:.0f}-{start / 60 + minutes:.0f}, keep {keep:.3f}, "
              f"x{compress:g})", flush=True)  # fmt: skip
        t0 = time.time()
        records = Replay(base, offsets).run()
        duration = max(offsets[-1], time.time() - t0)
        resizes = [x for x in _jsonl(metrics) if x.get("event") == "resize"]
        releases = {
            k: [x["release_s"] for x in resizes if x.get("release_s") and x["reason"] == r]
            for k, r in (("shrink_release_s", "reclaim"), ("pause_release_s", "pause"))
        }
        every = [x for v in releases.values() for x in v]
        starts, never = watch.start_times()
        return {
            "t0": t0,
            "duration_s": duration,
            "trace_start_s": start,
            "keep": keep,
            "compress": compress,
            "offsets": offsets,
            "records": records,
            "decisions": _jsonl(decisions),
            "measured": {
                "replica_rps": cap,
                # Replicas that never ran during the replay started later than it lasted.
                "replica_start_s": statistics.median(starts) if starts else max(never, 30.0),
                "replica_never_ran_s": round(never, 1),
                **{k: statistics.median(v) for k, v in releases.items() if v},
                "checkpoint_s": statistics.median(every) if every else 20.0,
                "restart_s": 20.0,
                "replica_starts_s": [round(x, 1) for x in starts],
            },
            "resizes": resizes,
            "watch": {"samples": watch.samples, "errors": watch.errors[:5]},
        }
    finally:
        if watch is not None:
            watch.stop.set()
        if control is not None:
            control.terminate()
            try:
                control.wait(timeout=60)
            except subprocess.TimeoutExpired:
                control.kill()
        log.close()
        if jobs is not None and job_id is not None:
            jobs.stop_job(job_id)
        subprocess.run([R1P, "down"], capture_output=True, cwd=ROOT, timeout=180)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line
    return out


# ------------------------------------------------------------------ main
def evaluate(live: dict[str, Any]) -> dict[str, Any]:
    """Run the simulator on the live run's arrivals and measurements and compare."""
    m, offsets = live["measured"], live["offsets"]
    ev_live = events_from_decisions(live["decisions"], live["t0"])
    ev_sim, slo_sim = simulate(offsets, live["duration_s"], m)
    w = CONTROL["rate_window_s"]
    report = compare(
        ev_live,
        ev_sim,
        scale_up_lags(ev_live, offsets, m["replica_rps"], w),
        scale_up_lags(ev_sim, offsets, m["replica_rps"], w),
        slo_attainment(live["records"], SLO_TTFT_S, SLO_TPOT_S),
        float(slo_sim),
        CONTROL["interval_s"],
    )
    report["events_live"] = [asdict(e) for e in ev_live]
    report["events_sim"] = [asdict(e) for e in ev_sim]
    report["measured"] = m
    report["requests"] = len(offsets)
    report["settings"] = {**CONTROL, "compress": live["compress"], "keep": live["keep"],
                          "trace_start_s": live["trace_start_s"]}  # fmt: skip
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=int, default=40)
    ap.add_argument("--compress", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the comparison here")
    ap.add_argument("--live-json", type=Path, default=None,
                    help="re-evaluate a saved live run (its raw data) instead of running one")  # fmt: skip
    ap.add_argument("--strict", action="store_true", help="exit 1 unless all three agree")
    a = ap.parse_args()
    if a.live_json and a.live_json.exists():
        live = json.loads(a.live_json.read_text())
    else:
        live = run_live(a.minutes, a.compress, a.seed, Path(tempfile.mkdtemp(prefix="r1p-fid-")))
        if a.live_json:
            a.live_json.write_text(json.dumps(live))
    r = evaluate(live)
    print(f"order live: {' -> '.join(r['order_live'])}")
    print(f"order sim : {' -> '.join(r['order_sim'])}   agree: {r['order_agrees']}")
    print(f"scale-up lags live {r['scale_up_lags_live_s']} s, sim {r['scale_up_lags_sim_s']} s"
          f"   agree (<= {CONTROL['interval_s']:g}s): {r['lag_agrees']}")  # fmt: skip
    print(f"SLO attainment live {r['slo_live']:.2%}, sim {r['slo_sim']:.2%}"
          f"   agree (<= 2 points): {r['slo_agrees']}")  # fmt: skip
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(r, indent=2))
    return 1 if a.strict and not r["agrees"] else 0


if __name__ == "__main__":
    sys.exit(main())

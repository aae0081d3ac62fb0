"""Serving overhead: our Ray Serve endpoint against vLLM's own OpenAI server, same run.

Both serve the same tiny model with the same engine settings; N concurrent clients stream
greedy chat completions (identical prompts, so both sides generate identical tokens).
Fair by construction:
- one common niceness for every process of both sides and the load generator: the bench
  renices itself to --nice, everything it starts inherits it, and Ray's workers, which Ray
  would renice to 15 (its `worker_niceness` config), get RAY_worker_niceness=0 (no increment);
  the niceness actually seen on every process is checked and reported;
- the peer gets its best --stream-interval at each concurrency: it is measured with every
  value of --peer-stream-intervals, full rounds each, and per concurrency the value with the
  highest mean tokens/s is its row (one noisy search round picked a bad value before);
- each server runs alone during its own rounds (started, measured, stopped), so neither's
  idle threads touch the other's numbers;
- concurrency 1, 8 and 32, --rounds rounds each, reported as mean ± std over rounds, with the
  ratio per round (ours / peer) and its spread; the least favourable concurrency leads.

    .venv/bin/python bench/serve_overhead.py [--concurrency 1,8,32] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from benchstats import load_note, spread
from r1platform.contracts.net import free_port
from r1platform.serving.tuning import Ingress

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "tiny-r1"
ENGINE = {"max_model_len": 256, "dtype": "float32", "max_num_seqs": 64, "seed": 0}
TARGETS = {"ttft_p50_ms": ("<=", 1.10), "tokens_per_s": (">=", 0.95)}
METRICS = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "tokens_per_s")
PER_CLIENT = 16
INGRESSES: tuple[Ingress, ...] = ("proxy", "haproxy")


@dataclass
class Sample:
    ttft: float
    itl: list[float]
    tokens: int


@dataclass
class Side:
    name: str
    base: str
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    tokens: int = 0


async def one_request(
    client: httpx.AsyncClient, base: str, question: str, max_tokens: int
) -> Sample:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first, last = None, None
    gaps: list[float] = []
    tokens = 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices") or ():
                d = c.get("delta") or {}
                if d.get("content") or d.get("reasoning_content") or d.get("reasoning"):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
    assert first is not None, "no token streamed"
    return Sample(first - t0, gaps, tokens)


async def run_load(side: Side, questions: list[str], concurrency: int, max_tokens: int) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in questions:
        queue.put_nowait(q)
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                q = queue.get_nowait()
                s = await one_request(client, side.base, q, max_tokens)
                side.samples.append(s)
                side.tokens += s.tokens

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        side.wall += time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def summarize(side: Side) -> dict[str, float]:
    ttfts = [s.ttft for s in side.samples]
    itls = [g for s in side.samples for g in s.itl]
    return {
        "ttft_p50_ms": 1000 * pct(ttfts, 50),
        "ttft_p99_ms": 1000 * pct(ttfts, 99),
        "itl_p50_ms": 1000 * (statistics.median(itls) if itls else 0.0),
        "tokens_per_s": side.tokens / side.wall,
        "requests": len(side.samples),
    }


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


# ---------------------------------------------------------------------------- niceness


def set_common_niceness(nice: int) -> int:
    """Renice this process (the load generator) to `nice`; all it starts inherits it."""
    current = os.nice(0)
    if nice < current:
        raise SystemExit(
            f"--nice {nice}: this process already runs at {current} (lowering needs root)"
        )
    os.nice(nice - current)
    # Ray renices its workers by `worker_niceness` (15 by default) on top of the raylet's.
    os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray's own spelling)
    return os.nice(0)


def niceness_seen(root_pids: list[int]) -> dict[str, int]:
    """name(pid) -> niceness for each process under `root_pids` (Ray, vLLM, this one)."""
    import psutil

    seen: dict[str, int] = {}
    for pid in root_pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                seen[f"{p.name()}({p.pid})"] = p.nice()
        except psutil.Error:
            continue
    return seen


def ray_root_pids() -> list[int]:
    """Ray's raylet and GCS (parents of every worker) started by this process."""
    import psutil

    return [c.pid for c in psutil.Process().children() if c.name() in ("raylet", "gcs_server")]


# ---------------------------------------------------------------------------- servers


def start_raw_vllm(model_dir: Path, port: int, stream_interval: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", MODEL_ID,
        "--reasoning-parser", "deepseek_r1",
        "--max-model-len", str(ENGINE["max_model_len"]), "--dtype", ENGINE["dtype"],
        "--max-num-seqs", str(ENGINE["max_num_seqs"]), "--seed", str(ENGINE["seed"]),
        "--enforce-eager", "--gpu-memory-utilization", "0.2",
        "--stream-interval", str(stream_interval),
        "--host", "127.0.0.1", "--port", str(port), "--disable-log-stats",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    # No `nice` wrapper: the peer inherits the common niceness, exactly like ours.
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_raw(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_ours(port: int, stream_interval: str, ingress: Ingress) -> None:
    """Ours as `r1p up` runs it: Serve's knobs and the ingress mode in every Ray process's
    environment before Ray starts (serving/tuning.py)."""
    import ray
    from r1platform.config import load_settings
    from r1platform.serving import tuning
    from r1platform.serving.app import build_app
    from ray import serve

    tuning.apply(ingress)

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    interval = stream_interval if stream_interval == "auto" else int(stream_interval)
    settings = load_settings(
        models={MODEL_ID: {**ENGINE, "stream_interval": interval}}, serve={"ingress": ingress}
    )
    serve.run(build_app(settings), name="bench", route_prefix="/")


def stop_ours() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


# ---------------------------------------------------------------------------- measuring


def round_size(requests: int, concurrency: int) -> int:
    """Requests per round: at least `requests`, and PER_CLIENT per client, so that a round at
    high concurrency lasts seconds rather than the start-up and drain of one wave."""
    return max(requests, PER_CLIENT * concurrency)


def measure(
    base: str,
    questions: list[str],
    concurrencies: list[int],
    rounds: int,
    max_tokens: int,
    requests: int,
) -> dict[int, list[dict[str, float]]]:
    """Warm up, then `rounds` rounds at each concurrency: one summary per round."""
    asyncio.run(run_load(Side("warm-up", base), questions[:16], max(concurrencies), max_tokens))
    out: dict[int, list[dict[str, float]]] = {}
    for c in concurrencies:
        out[c] = []
        for _ in range(rounds):
            side = Side(str(c), base)
            asyncio.run(run_load(side, questions[: round_size(requests, c)], c, max_tokens))
            out[c].append(summarize(side))
    return out


def mean_tps(rounds: list[dict[str, float]]) -> float:
    return statistics.fmean(r["tokens_per_s"] for r in rounds)


def best_per_concurrency(
    per_interval: dict[int, dict[int, list[dict[str, float]]]],
) -> tuple[dict[int, list[dict[str, float]]], dict[str, int]]:
    """The peer's rounds at each concurrency from its interval with the most tokens/s there,
    and which interval that was."""
    concurrencies = next(iter(per_interval.values()))
    best = {c: max(per_interval, key=lambda i: mean_tps(per_interval[i][c])) for c in concurrencies}
    return {c: per_interval[i][c] for c, i in best.items()}, {str(c): i for c, i in best.items()}


def score(per_c: dict[int, list[dict[str, float]]]) -> float:
    """One number per stream interval: geometric mean over concurrencies of tokens/s."""
    rates = [statistics.fmean(r["tokens_per_s"] for r in rounds) for rounds in per_c.values()]
    return math.exp(statistics.fmean(math.log(x) for x in rates))


def run_peer(model_dir: Path, interval: int, *a: Any) -> tuple[dict, dict[str, int]]:
    port = free_port("127.0.0.1")
    proc = start_raw_vllm(model_dir, port, interval)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", 300, proc)
        nice = niceness_seen([proc.pid])
        return measure(f"http://127.0.0.1:{port}", *a), nice
    finally:
        stop_raw(proc)


def run_ours(stream_interval: str, ingress: Ingress, *a: Any) -> tuple[dict, dict[str, int]]:
    port = free_port("127.0.0.1")
    try:
        start_ours(port, stream_interval, ingress)
        wait_ready(f"http://127.0.0.1:{port}/health", 300)
        nice = niceness_seen(ray_root_pids())
        return measure(f"http://127.0.0.1:{port}", *a), nice
    finally:
        stop_ours()


def compare(
    ours: dict[int, list[dict[str, float]]], peer: dict[int, list[dict[str, float]]]
) -> dict[str, Any]:
    """Per concurrency: each side's mean ± std over rounds and the per-round ratio ours/peer;
    `worst`: the least favourable concurrency for us on each target metric."""
    by_c: dict[str, Any] = {}
    for c in ours:
        row: dict[str, Any] = {}
        for m in METRICS:
            o, p = [r[m] for r in ours[c]], [r[m] for r in peer[c]]
            ratios = [a / b for a, b in zip(o, p, strict=True) if b]
            row[m] = {
                "ours": spread(o).as_dict(),
                "peer": spread(p).as_dict(),
                "ratio": statistics.fmean(o) / statistics.fmean(p) if statistics.fmean(p) else None,
                "ratio_rounds": spread(ratios).as_dict() if ratios else None,
            }
        by_c[str(c)] = row
    ttft = {c: r["ttft_p50_ms"]["ratio"] for c, r in by_c.items() if r["ttft_p50_ms"]["ratio"]}
    tps = {c: r["tokens_per_s"]["ratio"] for c, r in by_c.items() if r["tokens_per_s"]["ratio"]}
    worst = {
        "ttft_p50_ratio": max(ttft.values()) if ttft else None,
        "ttft_p50_concurrency": max(ttft, key=ttft.get) if ttft else None,
        "tokens_per_s_ratio": min(tps.values()) if tps else None,
        "tokens_per_s_concurrency": min(tps, key=tps.get) if tps else None,
    }
    return {"by_concurrency": by_c, "worst": worst}


def met(metric: str, value: float | None) -> str:
    op, bound = TARGETS[metric]
    if value is None:
        return "not measured"
    return "met" if (value <= bound if op == "<=" else value >= bound) else "NOT met"


def report(result: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    for ingress, cmp in result["ingress"].items():
        w = cmp["worst"]
        console.print(
            f"ours with serve.ingress={ingress}, least favourable: TTFT p50 ratio "
            f"{w['ttft_p50_ratio']} at concurrency {w['ttft_p50_concurrency']} "
            f"({met('ttft_p50_ms', w['ttft_p50_ratio'])}, target <= 1.10); tokens/s ratio "
            f"{w['tokens_per_s_ratio']} at concurrency {w['tokens_per_s_concurrency']} "
            f"({met('tokens_per_s', w['tokens_per_s_ratio'])}, target >= 0.95) ({result['load']})"
        )
        what = f"serve.ingress={ingress}, nice {result['nice']}"
        report_tables(console, cmp, what, result["peer_stream_interval"])


def report_tables(console: Any, cmp: dict[str, Any], what: str, peer_si: dict[str, int]) -> None:
    from rich.table import Table

    order = sorted(
        cmp["by_concurrency"],
        key=lambda c: -(cmp["by_concurrency"][c]["tokens_per_s"]["ratio"] or 0),
    )
    for c in reversed(order):
        row = cmp["by_concurrency"][c]
        t = Table("metric", "ours (Ray Serve)", "vLLM api_server", "ours/peer", "per-round ratio",
                  "target", title=f"concurrency {c}, {what}, peer --stream-interval {peer_si[c]}")  # fmt: skip
        for m in METRICS:
            d = row[m]
            rr = d["ratio_rounds"]
            t.add_row(
                m,
                f"{d['ours']['mean']:.2f} ± {d['ours']['std']:.2f}",
                f"{d['peer']['mean']:.2f} ± {d['peer']['std']:.2f}",
                "n/a" if d["ratio"] is None else f"{d['ratio']:.3f}",
                "n/a" if rr is None else f"{rr['mean']:.3f} ± {rr['std']:.3f}",
                " ".join(map(str, TARGETS[m])) if m in TARGETS else "",
            )
        console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=64,
                    help=f"per side per round, at least {PER_CLIENT} per client")  # fmt: skip
    ap.add_argument("--ingress", default=",".join(INGRESSES),
                    help="our serve.ingress modes measured; the first one holds the targets")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--stream-interval", default="auto", help="ours: tokens per chunk, or auto")
    ap.add_argument("--peer-stream-intervals", default="1,2,4,8,16",
                    help="the peer's --stream-interval values; its best per concurrency is its row")  # fmt: skip
    ap.add_argument("--nice", type=int, default=None, help="common niceness (default: current)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.tasks import arithmetic

    nice = set_common_niceness(os.nice(0) if args.nice is None else args.nice)
    model_dir = ensure_tiny_model()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    ingresses = [cast(Ingress, i) for i in args.ingress.split(",")]
    n_questions = max(round_size(args.requests, c) for c in concurrencies)
    questions = [r["question"] for r in arithmetic.build_split("test", n_questions, 0)]
    load = (questions, concurrencies, args.rounds, args.max_tokens, args.requests)
    per_interval: dict[int, dict[int, list[dict[str, float]]]] = {}
    for interval in [int(x) for x in args.peer_stream_intervals.split(",")]:
        per_interval[interval], peer_nice = run_peer(model_dir, interval, *load)
        print(f"peer --stream-interval {interval}: {score(per_interval[interval]):,.0f} tokens/s "
              f"(geometric mean over concurrencies; {load_note()})", flush=True)  # fmt: skip
    peer, best = best_per_concurrency(per_interval)
    by_ingress, our_nice = {}, {}
    for ingress in ingresses:
        ours, our_nice[ingress] = run_ours(args.stream_interval, ingress, *load)
        by_ingress[ingress] = compare(ours, peer)
    seen = [*peer_nice.values(), *(v for n in our_nice.values() for v in n.values())]
    result = {
        **by_ingress[ingresses[0]],
        "ours_ingress": ingresses[0],
        "ingress": by_ingress,
        "nice": nice,
        "niceness_seen": {"peer": peer_nice, "ours": our_nice, "generator": os.nice(0)},
        "niceness_uniform": all(v == nice for v in seen),
        "peer_stream_interval": best,
        "peer_tokens_per_s_by_interval": {
            str(i): {str(c): mean_tps(r) for c, r in by_c.items()}
            for i, by_c in per_interval.items()
        },
        "settings": {
            "requests": {str(c): round_size(args.requests, c) for c in concurrencies},
            "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "our_stream_interval": args.stream_interval,
        },
        "load": load_note(),
    }
    if not result["niceness_uniform"]:
        print(f"WARNING: not every process ran at nice {nice}: {result['niceness_seen']}")
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

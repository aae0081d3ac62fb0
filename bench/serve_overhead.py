"""Serving overhead: our Ray Serve endpoint against vLLM's own OpenAI server, same run.

Both serve the same tiny model with the same engine settings. N concurrent clients stream
greedy chat completions (identical prompts, so both sides generate identical tokens), in
interleaved rounds so machine noise hits both alike. Reported per side: TTFT p50/p99,
inter-token latency p50, output tokens/s; then the ratios ours/raw.

    .venv/bin/python bench/serve_overhead.py --concurrency 8 --requests 64 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from r1platform.contracts.net import free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "tiny-r1"
RAY_WORKER_NICENESS = 15  # Ray's default for worker processes
ENGINE = {"max_model_len": 256, "dtype": "float32", "max_num_seqs": 64, "seed": 0}


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


def start_raw_vllm(model_dir: Path, port: int, nice: int = RAY_WORKER_NICENESS) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", MODEL_ID,
        "--reasoning-parser", "deepseek_r1",
        "--max-model-len", str(ENGINE["max_model_len"]), "--dtype", ENGINE["dtype"],
        "--max-num-seqs", str(ENGINE["max_num_seqs"]), "--seed", str(ENGINE["seed"]),
        "--enforce-eager", "--gpu-memory-utilization", "0.2",
        "--host", "127.0.0.1", "--port", str(port), "--disable-log-stats",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    # The flag used to be accepted and dropped: the peer always ran at the generator's niceness.
    return subprocess.Popen(
        ["nice", "-n", str(nice), *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_ours(port: int, stream_interval: str) -> None:
    import ray
    from r1platform.config import load_settings
    from r1platform.serving.app import build_app
    from ray import serve

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    interval = stream_interval if stream_interval == "auto" else int(stream_interval)
    settings = load_settings(models={MODEL_ID: {**ENGINE, "stream_interval": interval}})
    serve.run(build_app(settings), name="bench", route_prefix="/")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=64, help="per side per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--stream-interval", default="auto", help="ours: tokens per chunk, or auto")
    ap.add_argument(
        "--peer-nice",
        type=int,
        default=RAY_WORKER_NICENESS,
        help="niceness of the vLLM peer (default: Ray's worker niceness, like ours)",
    )
    args = ap.parse_args()

    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.tasks import arithmetic

    model_dir = ensure_tiny_model()
    questions = [r["question"] for r in arithmetic.build_split("test", args.requests, 0)]
    raw_port, our_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    raw = start_raw_vllm(model_dir, raw_port, args.peer_nice)
    try:
        start_ours(our_port, args.stream_interval)
        wait_ready(f"http://127.0.0.1:{raw_port}/health", 300, raw)
        wait_ready(f"http://127.0.0.1:{our_port}/health", 300)
        ours = Side("ours (Ray Serve)", f"http://127.0.0.1:{our_port}")
        peer = Side("vLLM api_server", f"http://127.0.0.1:{raw_port}")
        for side in (ours, peer):  # warm-up, not measured
            asyncio.run(
                run_load(
                    Side(side.name, side.base), questions[:16], args.concurrency, args.max_tokens
                )
            )
        for r in range(args.rounds):
            order = (ours, peer) if r % 2 == 0 else (peer, ours)
            for side in order:
                asyncio.run(run_load(side, questions, args.concurrency, args.max_tokens))
        report(summarize(ours), summarize(peer), args)
    finally:
        os.killpg(raw.pid, signal.SIGTERM)
        raw.wait(timeout=30)
    return 0


def report(o: dict[str, float], p: dict[str, float], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "metric",
        "ours (Ray Serve)",
        "vLLM api_server",
        "ours/raw",
        "target",
        title=f"serving overhead, concurrency {args.concurrency}, "
        f"{args.rounds}x{args.requests} requests per side, max_tokens {args.max_tokens}",
    )
    targets = {"ttft_p50_ms": "<= 1.10", "tokens_per_s": ">= 0.95"}
    for k in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "tokens_per_s"):
        ratio = o[k] / p[k] if p[k] else float("nan")
        t.add_row(k, f"{o[k]:.2f}", f"{p[k]:.2f}", f"{ratio:.3f}", targets.get(k, ""))
    Console().print(t)
    print(json.dumps({"ours": o, "raw": p, "ratios": {k: o[k] / p[k] for k in o if p[k]}}))


if __name__ == "__main__":
    sys.exit(main())

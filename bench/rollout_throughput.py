"""Rollout throughput: the hybrid (in-process) engine's generate against bare vllm.LLM.generate.

The same LLM instance, model, prompts (one GRPO step's batch: prompts_per_step x group_size)
and sampling settings on both sides; the sides alternate for --rounds rounds after a warm-up,
so drift hits both alike. Target: hybrid >= 0.80x bare tokens/s.

The hybrid side is `r1platform.training.engines.local_engine(path).generate`, exactly the call
a hybrid GRPO step makes. If that hook is missing, the bench says so and measures bare only.

    .venv/bin/python bench/rollout_throughput.py [--size tiny] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from benchstats import load_note, spread

TARGET = 0.80


def prompts_batch(n_prompts: int, seed: int) -> list[list[int]]:
    """One step's prompts, tokenised exactly as the job does (training.batching.prompt_ids)."""
    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.training.batching import prompt_ids
    from r1platform.training.datasets import load_prompts
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ensure_tiny_model())
    rows = load_prompts("arithmetic", "train", seed=seed).rows[:n_prompts]
    return [prompt_ids(tok, r["prompt"]) for r in rows]


def bare_generate(
    llm: Any, prompts: list[list[int]], n: int, max_tokens: int, seeds: list[int]
) -> int:
    """vllm.LLM.generate with nothing around it; returns generated tokens. Per-prompt seeds and
    log-probs as a GRPO step asks for them, so both sides sample the very same tokens. Without
    per-step detokenization, the peer's fastest setting: it only counts tokens, while the
    hybrid side still decodes every completion's text once for the rewards."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = [
        SamplingParams(
            n=n, temperature=1.0, max_tokens=max_tokens, seed=s, logprobs=0, detokenize=False
        )
        for s in seeds
    ]
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return sum(len(c.token_ids) for o in outs for c in o.outputs)


def hybrid_hook() -> Any:
    """The training side's hybrid engine factory, or None where it does not exist (yet)."""
    try:
        from r1platform.training.engines import local_engine
    except ImportError:
        return None
    return local_engine


def timed(fn, *a: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = fn(*a)
    return time.perf_counter() - t0, tokens


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", help="model size preset")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per batch (job default)")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    from r1platform.models.tiny import ensure_tiny_model

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    path = str(ensure_tiny_model(preset=args.size))
    prompts = prompts_batch(args.prompts, seed=0)
    factory = hybrid_hook()
    result: dict[str, Any] = {"size": args.size, "batch": [args.prompts, args.group_size]}
    if factory is None:
        print("hybrid hook r1platform.training.engines.local_engine not found: bare only")
        from vllm import LLM

        llm, engine = LLM(model=path, max_model_len=256, dtype="float32", seed=0), None
    else:
        # The job's default: the whole step's completions in one decode wave.
        engine = factory(path, max_model_len=256, max_num_seqs=args.prompts * args.group_size)
        llm = engine.llm

    def seeds(r: int) -> list[int]:
        return [1000 * r + i for i in range(len(prompts))]

    def hybrid(r: int) -> int:
        groups = engine.generate(
            prompts, n=args.group_size, temperature=1.0, max_tokens=args.max_tokens,
            seeds=seeds(r),
        )  # fmt: skip
        return sum(len(s.token_ids) for g in groups for s in g)

    def bare(r: int) -> int:
        return bare_generate(llm, prompts, args.group_size, args.max_tokens, seeds(r))

    bare(99)  # warm-up: the first call compiles and allocates
    if engine is not None:
        hybrid(99)
    rates: dict[str, list[float]] = {"bare": [], "hybrid": []}
    for r in range(args.rounds):
        order = ("bare", "hybrid") if r % 2 == 0 else ("hybrid", "bare")
        for side in order:
            if side == "hybrid" and engine is None:
                continue
            secs, tokens = timed(bare if side == "bare" else hybrid, r)
            rates[side].append(tokens / secs)
            print(f"round {r} {side}: {tokens / secs:,.0f} tokens/s ({load_note()})", flush=True)
    b, h = spread(rates["bare"]), spread(rates["hybrid"])
    result.update(
        bare_tokens_per_s=b.as_dict() if b else None,
        hybrid_tokens_per_s=h.as_dict() if h else None,
        ratio=h.mean / b.mean if b and h else None,
        load=load_note(),
    )
    if result["ratio"] is None:
        print(f"target hybrid >= {TARGET}x bare: not measured")
    else:
        met = "met" if result["ratio"] >= TARGET else "NOT met"
        print(f"hybrid/bare = {result['ratio']:.3f} (target >= {TARGET}): {met} ({load_note()})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The rollout engine skips vLLM's per-step detokenization and decodes each completion once:
the texts the rewards score must be exactly the ones vLLM's own detokenizer gives."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_rollout_texts_match_vllms_detokenizer():
    from r1platform.models.tiny import ensure_tiny_model
    from r1platform.training.batching import prompt_ids
    from r1platform.training.engines import local_engine
    from r1platform.training.rollout import completion_texts
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    path = str(ensure_tiny_model())
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [
        prompt_ids(tok, [{"role": "user", "content": f"What is {a} + {b}?"}])
        for a, b in ((3, 4), (12, 30), (7, 95), (250, 1))
    ]
    engine = local_engine(path, max_model_len=256, max_num_seqs=32)
    seeds = [11, 12, 13, 14]
    ours = engine.generate(prompts, n=4, temperature=1.0, max_tokens=48, seeds=seeds)
    params = [
        SamplingParams(n=4, temperature=1.0, max_tokens=48, logprobs=0, seed=s) for s in seeds
    ]
    theirs = engine.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    pairs = [
        (a, b)
        for g, out in zip(ours, theirs, strict=True)
        for a, b in zip(g, out.outputs, strict=True)
    ]
    assert len(pairs) == 16
    # The same seeds sample the same tokens, with and without detokenization.
    assert all(a.token_ids == list(b.token_ids) for a, b in pairs)
    assert [a.text for a, _ in pairs] == [b.text for _, b in pairs]
    assert any(a.text for a, _ in pairs), "the tiny model answers something"
    assert all(
        a.logprobs == [d[t].logprob for d, t in zip(b.logprobs, b.token_ids, strict=True)]
        for a, b in pairs
    )
    # Special tokens (end of turn) are dropped from the text, as vLLM drops them.
    end = tok.convert_tokens_to_ids("<|end|>")
    assert completion_texts(tok, [[end]]) == [""]

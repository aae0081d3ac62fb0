"""Model sizing against published figures."""

from __future__ import annotations

import json

import pytest
from r1platform.pools import fit
from r1platform.pools.catalog import load_catalog

CAT = load_catalog()


def test_r1_671b_sizes_match_published_figures():
    r1 = fit.model_spec("deepseek-r1")
    # DeepSeek-V3 technical report (arXiv 2412.19437), abstract: 671B total, 37B activated.
    assert r1.params == pytest.approx(671e9, rel=0.005)
    assert r1.active_params == pytest.approx(37e9, rel=0.03)
    # FP8 weights: ~1 byte per parameter (+ bf16 embeddings/lm_head) ~ 671 GB.
    assert r1.weight_bytes == pytest.approx(671e9, rel=0.01)
    # MLA caches (kv_lora_rank 512 + qk_rope_head_dim 64) x 61 layers x 2 bytes = 70,272 B/token.
    assert r1.kv_bytes_per_token == (512 + 64) * 61 * 2


def test_r1_fits_8xh200_but_not_8xh100():
    r1 = fit.model_spec("deepseek-r1")
    kv = 32768 * 4
    # 8 x 141 GB = 1,128 GB holds 671 GB of weights plus KV; 8 x 80 GB = 640 GB cannot hold the
    # weights at all (SGLang/vLLM deployment guides: one 8xH200 node, or two 8xH100 nodes).
    h200 = fit.smallest_fit(r1, CAT["H200"], 8, 1, kv)
    assert h200 is not None and (h200.tp, h200.pp) == (8, 1)
    assert fit.smallest_fit(r1, CAT["H100"], 8, 1, kv) is None
    h100 = fit.smallest_fit(r1, CAT["H100"], 8, 2, kv)
    assert h100 is not None and (h100.tp, h100.pp) == (8, 2)
    # The MLA latent is replicated on every TP rank, split only by pipeline stage.
    assert h100.kv_bytes_per_token_per_gpu == pytest.approx(70272 / 2)


@pytest.mark.parametrize(
    "model, params, kv_bytes",
    [
        # HF model cards: Qwen2.5-Math-1.5B 1.54B+emb -> 1.78B; Qwen2.5-7B 7.62B; Qwen2.5-14B
        # 14.7B; Qwen2.5-32B 32.5B (model card: 32.5B); Llama-3.1-8B 8.03B; Llama-3.3-70B 70.6B.
        # KV = 2 (K,V) x kv_heads x head_dim x layers x 2 bytes.
        ("r1-distill-qwen-1.5b", 1.78e9, 2 * 2 * 128 * 28 * 2),
        ("r1-distill-qwen-7b", 7.62e9, 2 * 4 * 128 * 28 * 2),
        ("r1-distill-qwen-14b", 14.77e9, 2 * 8 * 128 * 48 * 2),
        ("r1-distill-qwen-32b", 32.76e9, 2 * 8 * 128 * 64 * 2),
        ("r1-distill-llama-8b", 8.03e9, 2 * 8 * 128 * 32 * 2),
        ("r1-distill-llama-70b", 70.6e9, 327680),  # 320 KiB/token, widely quoted for Llama-70B
    ],
)
def test_distill_family(model, params, kv_bytes):
    s = fit.model_spec(model)
    assert s.params == pytest.approx(params, rel=0.01)
    assert s.kv_bytes_per_token == kv_bytes
    assert s.weight_bytes == pytest.approx(2 * s.params, rel=0.001)  # bf16


def test_smallest_tp_per_gpu_type():
    q7 = fit.model_spec("r1-distill-qwen-7b")  # 15.2 GB bf16
    # L4 (24 GB): 21.6 - 1 GB usable leaves ~5.4 GB -> 94k tokens of KV: one GPU is enough.
    assert fit.smallest_fit(q7, CAT["L4"], 8, 1, 8192 * 8).tp == 1
    # T4 (16 GB): 13.4 GB usable < 15.2 GB of weights -> TP 2.
    assert fit.smallest_fit(q7, CAT["T4"], 8, 1, 8192 * 8).tp == 2
    l70 = fit.model_spec("r1-distill-llama-70b")  # 141 GB bf16
    assert fit.smallest_fit(l70, CAT["H200"], 8, 1, 8192 * 8).tp == 2  # 2 x 126 GB usable
    assert fit.smallest_fit(l70, CAT["H100"], 8, 1, 8192 * 8).tp == 4  # 2 x 71 GB is too little
    # Nodes of 4 GPUs cannot host TP 8: 70B on 4 x L4 (4 x 20.6 GB) needs pipeline stages.
    f = fit.smallest_fit(l70, CAT["L4"], 4, 4, 4096)
    assert f is not None and f.tp == 4 and f.pp == 2
    assert fit.smallest_fit(l70, CAT["L4"], 4, 1, 4096) is None


def test_kv_shards_only_up_to_kv_heads():
    q15 = fit.model_spec("r1-distill-qwen-1.5b")  # 2 KV heads: TP 4 replicates them
    assert fit.kv_per_gpu(q15, 2, 1) == fit.kv_per_gpu(q15, 4, 1) == q15.kv_bytes_per_token / 2


def test_decode_is_bandwidth_bound_and_estimate_respects_slo():
    q7 = fit.model_spec("r1-distill-qwen-7b")
    f = fit.smallest_fit(q7, CAT["H100"], 8, 1, 8192 * 8)
    # Batch 1: one step reads all 15.2 GB at 60% of 3.35 TB/s -> ~7.6 ms (plus KV, tiny here).
    step = fit.decode_step_s(q7, CAT["H100"], f, 1, 1000)
    assert step == pytest.approx(q7.weight_bytes / (3350e9 * fit.BW_EFFICIENCY), rel=0.02)
    slo = fit.Slo(ttft_p99_s=1.0, tpot_p99_s=0.05)
    t = fit.estimate(q7, CAT["H100"], f, 500, 1000, slo)
    assert t is not None and t.tpot_s <= 0.05
    # Prefill of 500 tokens: 2 x 7.07e9 x 500 / (989e12 x 0.5) = 14.3 ms.
    assert t.prefill_s == pytest.approx(2 * q7.active_params * 500 / (989e12 * 0.5))
    # Same model and SLO on an L4 (300 GB/s): far fewer requests/s per replica.
    fl4 = fit.smallest_fit(q7, CAT["L4"], 1, 1, 8192 * 8)
    t4 = fit.estimate(q7, CAT["L4"], fl4, 500, 1000, fit.Slo(1.0, 0.2))
    assert t4 is not None and t4.capacity_rps < t.capacity_rps / 3
    # A TPOT below one batch-1 step on an L4 (~84 ms) is unreachable.
    assert fit.estimate(q7, CAT["L4"], fl4, 500, 1000, fit.Slo(1.0, 0.05)) is None
    # A measured profile replaces the estimate.
    p = fit.estimate(q7, CAT["H100"], f, 500, 1000, slo, profile_rps=3.0)
    assert p.capacity_rps == 3.0 and p.source == "profile"


def test_moe_reads_fewer_expert_bytes_at_small_batch():
    r1 = fit.model_spec("deepseek-r1")
    one = fit._weights_read(r1, 1)
    # One token touches 8 of 256 experts per layer: ~37B active -> read ~ dense part + 8/256.
    assert one == pytest.approx(r1.weight_bytes - r1.routed_expert_bytes * (1 - 8 / 256))
    assert fit._weights_read(r1, 512) == pytest.approx(r1.weight_bytes, rel=0.001)


def test_local_config_json(tmp_path):
    cfg = dict(fit.BUILTIN_CONFIGS["r1-distill-qwen-7b"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    s = fit.model_spec(str(tmp_path))
    assert s.params == fit.model_spec("r1-distill-qwen-7b").params
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{nope")
    with pytest.raises(ValueError, match="not JSON"):
        fit.model_spec(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="unknown model 'gpt-9'"):
        fit.model_spec("gpt-9")


def test_require_fit_names_model_and_largest_pool():
    r1 = fit.model_spec("deepseek-r1")
    with pytest.raises(fit.FitError, match=r"'deepseek-r1' fits on no pool.*'l4'"):
        fit.require_fit(r1, [("l4", CAT["L4"], 1, 8)], 4096)

"""The built-in table of the R1 family for model sizing (pools.fit): each entry is the model's
published config.json, abridged to the fields sizing needs, plus the names it is known by."""

from __future__ import annotations

from typing import Any

# Published config.json of each model (huggingface.co/<repo>/blob/main/config.json), abridged to
# the fields sizing needs.
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    # deepseek-ai/DeepSeek-R1 (same architecture as DeepSeek-V3): 671B total, 37B active,
    # FP8 block-quantised weights, MLA with kv_lora_rank 512 + qk_rope_head_dim 64.
    "deepseek-r1": {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "vocab_size": 129280,
        "tie_word_embeddings": False,
        "max_position_embeddings": 163840,
        "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    },
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (Qwen2.5-Math-1.5B base)
    "r1-distill-qwen-1.5b": {
        "model_type": "qwen2",
        "hidden_size": 1536,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "intermediate_size": 8960,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    },
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (Qwen2.5-Math-7B base)
    "r1-distill-qwen-7b": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    },
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-14B (Qwen2.5-14B base)
    "r1-distill-qwen-14b": {
        "model_type": "qwen2",
        "hidden_size": 5120,
        "num_hidden_layers": 48,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "intermediate_size": 13824,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    },
    # deepseek-ai/DeepSeek-R1-Distill-Qwen-32B (Qwen2.5-32B base)
    "r1-distill-qwen-32b": {
        "model_type": "qwen2",
        "hidden_size": 5120,
        "num_hidden_layers": 64,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "intermediate_size": 27648,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    },
    # deepseek-ai/DeepSeek-R1-Distill-Llama-8B (Llama-3.1-8B base)
    "r1-distill-llama-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    },
    # deepseek-ai/DeepSeek-R1-Distill-Llama-70B (Llama-3.3-70B-Instruct base)
    "r1-distill-llama-70b": {
        "model_type": "llama",
        "hidden_size": 8192,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    },
    # The platform's tiny model as r1platform.models.tiny builds it (Qwen2, char vocab ~100).
    "tiny-r1": {
        "model_type": "qwen2",
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "intermediate_size": 512,
        "vocab_size": 128,
        "tie_word_embeddings": True,
        "max_position_embeddings": 512,
        "torch_dtype": "float32",
    },
}
# The Hugging Face repo of each built-in (what vLLM and Ray Serve LLM users write).
HF_IDS: dict[str, str] = {
    "deepseek-r1": "deepseek-ai/DeepSeek-R1",
    "r1-distill-qwen-1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "r1-distill-qwen-7b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "r1-distill-qwen-14b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "r1-distill-qwen-32b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "r1-distill-llama-8b": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "r1-distill-llama-70b": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
}
# DeepSeek-V3 has R1's architecture and FP8 checkpoint layout: same sizing, its own repo.
V3_HF_ID = "deepseek-ai/DeepSeek-V3"
SHORT_NAMES = {
    "deepseek-v3": "deepseek-r1",
    "r1": "deepseek-r1",
    "r1-671b": "deepseek-r1",
    "tiny": "tiny-r1",
}
# Every accepted spelling, lower-cased -> built-in key: short names, HF ids, HF ids without the
# org (`DeepSeek-R1-Distill-Qwen-7B`).
ALIASES: dict[str, str] = {
    **SHORT_NAMES,
    V3_HF_ID.lower(): "deepseek-r1",
    V3_HF_ID.lower().split("/")[1]: "deepseek-r1",
    **{hf.lower(): key for key, hf in HF_IDS.items()},
    **{hf.lower().split("/")[1]: key for key, hf in HF_IDS.items()},
}

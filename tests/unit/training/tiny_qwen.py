"""The smallest Qwen2 the weight-sync tests push to engines (one layer, 16 wide): its names and
shapes are what vLLM's Qwen2 loader maps, at no cost to build."""

from __future__ import annotations

from transformers import Qwen2Config, Qwen2ForCausalLM


def tiny_qwen() -> Qwen2ForCausalLM:
    cfg = Qwen2Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
    )  # fmt: skip
    return Qwen2ForCausalLM(cfg)

"""Character-level tokenizer with R1 special tokens, saved as an ordinary HF fast tokenizer."""

from __future__ import annotations

import string

from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "<|end|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
# Reasoning tags are added tokens but NOT special: vLLM skips special tokens when detokenizing,
# and the tags must survive into the text for the reasoning parser and the rewards.
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
CHARS = [*string.printable[:95], "\n"]

# Ends the generation prompt with <think>, as DeepSeek-R1's template does.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    specials = [PAD, UNK, EOS, *ROLE_TOKENS]
    vocab = {tok: i for i, tok in enumerate([*specials, *REASONING_TOKENS, *CHARS])}
    # BPE with no merges and no pre-tokenizer is exactly one token per character.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        bos_token=None,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok

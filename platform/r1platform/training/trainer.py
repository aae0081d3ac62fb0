"""The GRPO step loop inside a Ray Train TorchTrainer (DDP: gloo on CPU, NCCL on GPU).

Per step, on every worker: its share of prompts → the rollout engines (G samples each, with
the sampling log-probs) → rewards → group advantages → loss → optimizer step(s); then rank 0
pushes the new weights to every engine (version tag = optimizer-update count), evaluates when
due, writes metrics and, every `save_every` steps, a checkpoint that is itself a servable HF
directory plus `trainer_state.pt` (step, optimizer, RNG, data position).

Ray Train persists a checkpoint before registering it, and restores its registry from storage
when a run with the same name and storage path starts again; so a checkpoint is complete or
absent, `--resume` is a relaunch with the same name, and `FailureConfig(max_failures)` restarts
workers from the last registered checkpoint.

The data position is global (one cursor over every train row, the same on every rank; rank r
uses its slice of each step's prompts), so a checkpoint resumes exactly with any worker count:
that is what lets the elastic loop (training/elastic.py) shrink and grow a running job. Rank 0
polls the job's control actor once per step for such a request.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1platform.contracts.resources import pool_key
from r1platform.training import elastic, grpo, rewards
from r1platform.training.elastic import RESIZE_KEY
from r1platform.training.rollout import Sample, WeightSync, generate_groups
from r1platform.training.settings import GRPOSettings

TRACER = "r1platform.training"
STATE_FILE = "trainer_state.pt"
MANIFEST = "r1p_checkpoint.json"


class TrainingAborted(RuntimeError):
    """Too many consecutive non-finite steps; the message says what and where to resume."""


# ---------------------------------------------------------------------------- data position


@dataclass
class DataCursor:
    """A deterministic walk over `n` rows: a fresh permutation per epoch from (seed, epoch).

    Its state is two integers, so a resumed run draws exactly the prompts the uninterrupted
    run would have drawn next.
    """

    n: int
    seed: int
    epoch: int = 0
    pos: int = 0

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        perm = self._perm()
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                perm = self._perm()
            take = min(k - len(out), self.n - self.pos)
            out.extend(perm[self.pos : self.pos + take])
            self.pos += take
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}


# ---------------------------------------------------------------------------- tensors


def prompt_ids(tokenizer: Any, prompt: Any) -> list[int]:
    """Chat messages go through the model's template (which pre-fills `<think>`); a plain
    string prompt is used verbatim, as TRL does."""
    text = (
        prompt
        if isinstance(prompt, str)
        else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass
class Batch:
    input_ids: torch.Tensor  # [N, L] prompt + completion, right-padded
    attention_mask: torch.Tensor  # [N, L]
    positions: torch.Tensor  # [N, T] index of the logit that predicts completion token t
    completion_ids: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T]
    old_logp: torch.Tensor  # [N, T] vLLM's sampling log-probs

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def build_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sample], pad_id: int
) -> Batch:
    """`prompts[i]` is the prompt of `completions[i]` (one entry per sample)."""
    n = len(completions)
    lengths = [len(p) + len(c.token_ids) for p, c in zip(prompts, completions, strict=True)]
    width = max(lengths)
    t_max = max(1, max(len(c.token_ids) for c in completions))
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    positions = torch.zeros((n, t_max), dtype=torch.long)
    comp = torch.full((n, t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t_max))
    old = torch.zeros((n, t_max))
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        seq = list(p) + list(c.token_ids)
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        t = len(c.token_ids)
        if t:
            positions[i, :t] = torch.arange(len(p) - 1, len(p) - 1 + t)
            comp[i, :t] = torch.tensor(c.token_ids)
            mask[i, :t] = 1
            old[i, :t] = torch.tensor(c.logprobs[:t] if c.logprobs else [0.0] * t)
    return Batch(input_ids, attention, positions, comp, mask, old)


def completion_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Logits [N, T, V] at the positions that predict each completion token."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    rows = torch.arange(logits.shape[0]).unsqueeze(1)
    return logits[rows, batch.positions]


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    directory: Path, model: torch.nn.Module, tokenizer: Any, state: dict[str, Any]
) -> Path:
    """A standard HF model dir (config.json, model.safetensors, tokenizer files) plus the
    trainer state and a manifest listing every file with its size, so a reader can tell a
    complete copy from a torn one."""
    directory.mkdir(parents=True, exist_ok=True)
    inner = getattr(model, "module", model)
    inner.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    torch.save(state, directory / STATE_FILE)
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"step": state["step"], "files": files}))
    return directory


def verify_checkpoint(directory: Path) -> bool:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return False
    files = json.loads(manifest.read_text())["files"]
    return all(
        (directory / name).is_file() and (directory / name).stat().st_size == size
        for name, size in files.items()
    )


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


# ---------------------------------------------------------------------------- metrics sinks


class MetricsLog:
    """OUTPUT_DIR/metrics.jsonl, one object per step. On (re)start it drops lines past the
    step being resumed from, so a restarted run leaves one consistent history."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", -1) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        tmp.replace(path)
        self.steps = {json.loads(k)["step"] for k in kept}

    def write(self, record: dict[str, Any]) -> None:
        if record["step"] in self.steps:
            return
        self.steps.add(record["step"])
        with self.path.open("a") as fh:
            fh.write(json.dumps(_jsonable(record)) + "\n")


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, float):
            out[k] = round(v, 6)
        else:
            out[k] = v
    return out


PROGRESS_KEYS = (
    ("reward", "reward_mean", "{:.3f}"),
    ("acc", "accuracy", "{:.3f}"),
    ("eval", "eval_accuracy", "{:.3f}"),
    ("kl", "kl", "{:.4f}"),
    ("ent", "entropy", "{:.3f}"),
    ("len", "response_length_mean", "{:.1f}"),
    ("sync", "weight_sync_s", "{:.3f}s"),
    ("step", "step_s", "{:.2f}s"),
)


def progress_line(record: dict[str, Any], max_steps: int) -> str:
    parts = [f"[bold]grpo[/bold] step {record['step']}/{max_steps}"]
    for label, key, fmt in PROGRESS_KEYS:
        v = record.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            parts.append(f"{label}={fmt.format(v)}")
    if record.get("skipped"):
        parts.append("[red]skipped (non-finite loss)[/red]")
    return " ".join(parts)


def _console() -> Any:
    from rich.console import Console

    # Jobs stream stdout through Ray's log pipe: no terminal, so keep it one plain line.
    return Console(width=240, soft_wrap=True, highlight=False)


# ---------------------------------------------------------------------------- per-step math


def group_stats(total: Sequence[float], group_size: int) -> float:
    """Fraction of groups whose rewards all tie (no learning signal)."""
    t = torch.tensor(total, dtype=torch.float32).view(-1, group_size)
    return float(((t.max(1).values - t.min(1).values) == 0).float().mean())


def evaluate(
    handles: Sequence[Any],
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    funcs: Sequence[rewards.RewardFunc],
    max_new_tokens: int,
) -> dict[str, float]:
    """Greedy decoding on the held-out rows; `eval_accuracy` is the accuracy reward's mean."""
    prompts = [prompt_ids(tokenizer, r["prompt"]) for r in rows]
    groups = generate_groups(
        handles, prompts, n=1, temperature=0.0, max_tokens=max_new_tokens, logprobs=False
    )
    texts = [g[0].text for g in groups]
    _, per_func = rewards.score(texts, list(rows), funcs)
    stats = rewards.reward_stats(per_func)
    out = {f"eval_{k.split('/')[1]}": stats[k] for k in stats if k.endswith("/mean")}
    acc_fn = rewards.RewardFunc("accuracy", rewards.accuracy_reward)
    acc = rewards.score(texts, list(rows), [acc_fn])[1]["accuracy"]
    vals = [v for v in acc if not math.isnan(v)]
    out["eval_accuracy"] = sum(vals) / len(vals) if vals else math.nan
    return out


# ---------------------------------------------------------------------------- the worker loop


def _world() -> tuple[int, int]:
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def _allgather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _load_rows(shard: Any) -> list[dict[str, Any]]:
    # Ray Data may deliver blocks in any order; `_idx` restores one order for exact resume.
    # Rows travel as JSON so nested prompts (message lists) come back as plain Python.
    rows = sorted(shard.iter_rows(), key=lambda r: r["_idx"])
    return [{**json.loads(r["_row"]), "_idx": int(r["_idx"])} for r in rows]


def train_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1platform.telemetry import span

    s = GRPOSettings(**config["settings"])
    handles = config["engines"]
    eval_rows: list[dict[str, Any]] = config["eval_rows"]
    out_dir = Path(config["output_dir"])
    rank, world = _world()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    funcs = rewards.load_reward_funcs(s.reward_specs())

    ckpt = ray.train.get_checkpoint()
    state: dict[str, Any] | None = None
    load_from = config["model_path"]
    ckpt_dir_ctx = ckpt.as_directory() if ckpt else None
    if ckpt_dir_ctx is not None:
        local = ckpt_dir_ctx.__enter__()
        state = torch.load(Path(local) / STATE_FILE, weights_only=False)
        load_from = local
    tokenizer = AutoTokenizer.from_pretrained(load_from)
    model = AutoModelForCausalLM.from_pretrained(load_from, dtype=torch.float32)
    ref_model = None
    if s.beta > 0:
        ref_model = AutoModelForCausalLM.from_pretrained(config["model_path"], dtype=torch.float32)
        ref_model.requires_grad_(False).eval()
    model = ray.train.torch.prepare_model(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    if ckpt_dir_ctx is not None:
        ckpt_dir_ctx.__exit__(None, None, None)

    rows = _load_rows(ray.train.get_dataset_shard("train"))  # every rank: all rows
    cursor = DataCursor(len(rows), s.seed)
    step, updates, bad_streak = 0, 0, 0
    if state is not None:
        step, updates = state["step"], state["updates"]
        bad_streak = state.get("bad_streak", 0)
        if state.get("data_layout") != "global" and len(state["data"]) != 1:
            raise TrainingAborted(
                "checkpoint has per-worker data positions (written before elastic training); "
                "resume it with the version that wrote it"
            )
        cursor.epoch, cursor.pos = state["data"][0]["epoch"], state["data"][0]["pos"]
        set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    else:
        torch.manual_seed(s.seed + rank)
        random.seed(s.seed + rank)

    # Where each rank runs, for operators (and the worker-kill test): rank -> pid.
    pids = _allgather(os.getpid(), world)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "workers.json").write_text(json.dumps(dict(enumerate(pids))))
    console = _console() if rank == 0 else None
    log = MetricsLog(out_dir / "metrics.jsonl", step) if rank == 0 else None
    sync = WeightSync(handles, config["sync_backend"], model) if rank == 0 else None
    per_rank = s.prompts_per_step // world
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t_start = time.perf_counter()
    control = _Control(config.get("control"), world, s) if rank == 0 else None

    def draw() -> list[int]:
        """This rank's slice of the next prompts_per_step rows (same walk on every rank)."""
        idx = cursor.take(s.prompts_per_step)
        return idx[rank * per_rank : (rank + 1) * per_rank]

    def push(version: int) -> float:
        secs = sync.push(str(version)) if sync is not None else 0.0
        _barrier(world)
        return secs

    def emit(
        record: dict[str, Any], checkpoint_dir: Path | None = None, extra: dict | None = None
    ) -> None:
        from ray.train import Checkpoint

        if log is not None:
            log.write(record)
            console.print(progress_line(record, s.max_steps))
            with span(TRACER, "grpo.step", **{k: v for k, v in record.items() if _otel_ok(v)}):
                pass
        ck = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        name = f"step_{record['step']:06d}" if ck else None
        ray.train.report({**_jsonable(record), **(extra or {})}, checkpoint=ck,
                         checkpoint_dir_name=name)  # fmt: skip

    def checkpoint(at_step: int) -> Path | None:
        all_rng = _allgather(rng_state(), world)
        if rank != 0:
            return None
        tmp = Path(tempfile.mkdtemp(prefix="r1p-ckpt-"))
        st = {
            "step": at_step,
            "updates": updates,
            "bad_streak": bad_streak,
            "optimizer": opt.state_dict(),
            "data": [cursor.state()],
            "data_layout": "global",
            "rng": all_rng,
            "settings": s.model_dump(),
        }
        return save_checkpoint(tmp, model, tokenizer, st)

    # Engines may hold older weights (fresh start after a crash, or a resume): push first.
    first_sync = push(updates)
    if step == 0:
        record: dict[str, Any] = {
            "step": 0, "weight_sync_s": first_sync, "workers": world, "prompts_seen": 0
        }  # fmt: skip
        if rank == 0:
            record.update(evaluate(handles, tokenizer, eval_rows, funcs, s.max_new_tokens))
        emit(record)
    elif rank == 0:
        console.print(f"grpo resumed at step {step} (weights version {updates})")

    while step < s.max_steps:
        t0 = time.perf_counter()
        step += 1
        # --- rollouts
        idx = draw()
        batch_rows = [rows[i] for i in idx]
        seeds = [hash((s.seed, step, r["_idx"])) % (2**31) for r in batch_rows]
        prompts = [prompt_ids(tokenizer, r["prompt"]) for r in batch_rows]
        t_roll = time.perf_counter()
        groups = generate_groups(
            handles,
            prompts,
            n=s.group_size,
            temperature=s.temperature,
            max_tokens=s.max_new_tokens,
            seeds=seeds,
        )
        samples = [c for g in groups for c in g]
        flat_rows = [r for r in batch_rows for _ in range(s.group_size)]
        flat_prompts = [p for p in prompts for _ in range(s.group_size)]
        total, per_func = rewards.score([c.text for c in samples], flat_rows, funcs)
        refills = 0
        if s.dynamic_sampling:
            keep = grpo.filter_tied_groups(torch.tensor(total), s.group_size).tolist()
            # Collective: every rank draws each round so the shared cursor stays in step.
            while refills < s.max_refill_rounds and not _all_ranks_true(all(keep), world):
                refills += 1
                extra_idx = draw()
                if all(keep):
                    continue
                extra_rows = [rows[i] for i in extra_idx]
                extra_prompts = [prompt_ids(tokenizer, r["prompt"]) for r in extra_rows]
                extra_seeds = [
                    hash((s.seed, step, refills, r["_idx"])) % (2**31) for r in extra_rows
                ]
                extra = generate_groups(
                    handles,
                    extra_prompts,
                    n=s.group_size,
                    temperature=s.temperature,
                    max_tokens=s.max_new_tokens,
                    seeds=extra_seeds,
                )
                e_samples = [c for g in extra for c in g]
                e_rows = [r for r in extra_rows for _ in range(s.group_size)]
                e_total, e_per = rewards.score([c.text for c in e_samples], e_rows, funcs)
                e_keep = grpo.filter_tied_groups(torch.tensor(e_total), s.group_size).tolist()
                groups, batch_rows, prompts, total, per_func, keep = _refill(
                    s.group_size,
                    groups,
                    batch_rows,
                    prompts,
                    total,
                    per_func,
                    keep,
                    extra,
                    extra_rows,
                    extra_prompts,
                    e_total,
                    e_per,
                    e_keep,
                )
            samples = [c for g in groups for c in g]
            flat_rows = [r for r in batch_rows for _ in range(s.group_size)]
            flat_prompts = [p for p in prompts for _ in range(s.group_size)]
        rollout_s = time.perf_counter() - t_roll
        gen_tokens = sum(len(c.token_ids) for c in samples)

        # --- advantages and loss
        t_train = time.perf_counter()
        adv = grpo.group_advantages(
            torch.tensor(total, dtype=torch.float32), s.group_size, scale=s.scale_rewards
        )
        batch = build_batch(flat_prompts, samples, pad)
        ref_logp = None
        if ref_model is not None:
            with torch.no_grad():
                ref_logp = grpo.token_logprobs(
                    completion_logits(ref_model, batch), batch.completion_ids, s.temperature
                )
        skipped = False
        loss_metrics: dict[str, float] = {}
        logprob_diff = math.nan
        for it in range(s.num_iterations):
            logits = completion_logits(model, batch)
            logp = grpo.token_logprobs(logits, batch.completion_ids, s.temperature)
            if it == 0:
                # Trainer vs engine log-probs of the same tokens under the same weights: the
                # weight-sync health check (0 up to float noise).
                logprob_diff = float(
                    grpo.masked_mean((logp.detach() - batch.old_logp).abs(), batch.mask)
                )
            loss, lm = grpo.grpo_loss(
                logp,
                batch.old_logp,
                ref_logp,
                adv,
                batch.mask,
                clip_low=s.clip_low,
                clip_high=s.clip_high,
                beta=s.beta,
                agg=s.loss_agg,
            )
            if step in s.inject_nan_steps:
                loss = loss * float("nan")
            with torch.no_grad():
                ent = grpo.masked_mean(grpo.entropy_from_logits(logits), batch.mask)
            opt.zero_grad(set_to_none=True)
            finite = _all_ranks_true(grpo.is_finite_loss(loss), world)
            if not finite:
                skipped = True
                break
            loss.backward()
            norm = grpo.clip_grad_norm(model.parameters(), s.max_grad_norm)
            if not _all_ranks_true(math.isfinite(norm), world):
                opt.zero_grad(set_to_none=True)
                skipped = True
                break
            opt.step()
            updates += 1
            loss_metrics = {k: float(v) for k, v in lm.items()}
            loss_metrics.update(loss=float(loss.detach()), entropy=float(ent), grad_norm=norm)
        opt.zero_grad(set_to_none=True)
        train_s = time.perf_counter() - t_train

        # --- weight push (only when the weights changed)
        sync_s = push(updates) if not skipped else 0.0

        # --- metrics (gathered from every rank's samples)
        local = {
            "total": total,
            "per_func": per_func,
            "lengths": [len(c.token_ids) for c in samples],
            "tokens": batch.num_tokens,
            "gen_tokens": gen_tokens,
            "loss": loss_metrics,
            "logprob_diff": logprob_diff,
        }
        parts = _allgather(local, world)
        bad_streak = bad_streak + 1 if skipped else 0
        record = {
            "step": step,
            "skipped": skipped,
            "weights_version": updates,
            "workers": world,
            "prompts_seen": cursor.epoch * cursor.n + cursor.pos,
        }
        if rank == 0:
            record.update(_aggregate(parts, s.group_size, rollout_s, train_s, sync_s, refills))
        due_eval = step % s.eval_every == 0 or step >= s.max_steps
        out_of_time = s.time_limit_s is not None and time.perf_counter() - t_start > s.time_limit_s
        if out_of_time:
            due_eval = True
        if due_eval and rank == 0 and not skipped:
            record.update(evaluate(handles, tokenizer, eval_rows, funcs, s.max_new_tokens))
        record["step_s"] = time.perf_counter() - t0
        if bad_streak >= s.max_bad_steps:
            if rank == 0:
                console.print(
                    f"[red]grpo aborted: {bad_streak} consecutive steps with a non-finite "
                    f"loss (last at step {step}); the last good checkpoint is kept[/red]"
                )
                log.write(record)
            raise TrainingAborted(
                f"{bad_streak} consecutive steps had a non-finite loss (last at step {step}); "
                "aborting, the last good checkpoint is kept"
            )
        final = step >= s.max_steps or out_of_time
        # Step boundary: a pending resize ends this fit after a checkpoint of this step.
        resize = None if final else _broadcast(control.poll() if control else None, world)
        due_ckpt = (step % s.save_every == 0 or final) and not skipped
        ck_dir = checkpoint(step) if due_ckpt or resize else None
        emit(record, ck_dir, {RESIZE_KEY: resize} if resize else None)
        if final or resize:
            if resize and rank == 0:
                console.print(f"grpo: checkpointed step {step}; releasing for a resize")
            break


class _Control:
    """Rank 0's view of the job's control actor: reports what it holds when the workers run,
    and turns a pending request into a Resize (JSON) at a step boundary."""

    def __init__(self, cfg: dict[str, Any] | None, world: int, s: GRPOSettings) -> None:
        import ray

        self.actor = None
        self.world, self.s = world, s
        if not cfg:
            return
        self.engines, self.pool = int(cfg["engines"]), cfg.get("pool")
        try:
            self.actor = ray.get_actor(cfg["name"], namespace=elastic.NAMESPACE)
            held = elastic.job_gpus(world, self.engines)
            ray.get(self.actor.set_held.remote(held, self.pool, "running"), timeout=30)
        except Exception as err:  # elastic control must never stop training
            self._lost(err)

    def _lost(self, err: BaseException) -> None:
        print(f"grpo: control actor unavailable ({type(err).__name__}); not elastic now")
        self.actor = None

    def poll(self) -> str | None:
        if self.actor is None:
            return None
        import ray

        try:
            raw = ray.get(self.actor.take_request.remote(), timeout=30)
        except Exception as err:  # the same: train on without it
            self._lost(err)
            return None
        if not raw:
            return None
        rz = elastic.decide(
            elastic.Request.from_dict(raw),
            workers=self.world,
            pool=self.pool,
            engines=self.engines,
            prompts_per_step=self.s.prompts_per_step,
        )
        return rz.to_json() if rz else None


def _broadcast(obj: Any, world: int) -> Any:
    """Rank 0's value on every rank."""
    return _allgather(obj, world)[0]


def _otel_ok(v: Any) -> bool:
    return isinstance(v, bool | int | str) or (isinstance(v, float) and math.isfinite(v))


def _all_ranks_true(flag: bool, world: int) -> bool:
    if world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def _refill(
    g: int,
    groups: list[list[Sample]],
    rows: list[dict[str, Any]],
    prompts: list[list[int]],
    total: list[float],
    per_func: dict[str, list[float]],
    keep: list[bool],
    e_groups: list[list[Sample]],
    e_rows: list[dict[str, Any]],
    e_prompts: list[list[int]],
    e_total: list[float],
    e_per: dict[str, list[float]],
    e_keep: list[bool],
) -> tuple[Any, ...]:
    """Replace tied groups with informative ones from a fresh draw, keeping the batch size;
    groups that cannot be replaced stay (they add zero gradient)."""
    donors = [j for j, k in enumerate(e_keep) if k]
    for i, k in enumerate(keep):
        if k or not donors:
            continue
        j = donors.pop(0)
        groups[i], rows[i], prompts[i] = e_groups[j], e_rows[j], e_prompts[j]
        total[i * g : (i + 1) * g] = e_total[j * g : (j + 1) * g]
        for name in per_func:
            per_func[name][i * g : (i + 1) * g] = e_per[name][j * g : (j + 1) * g]
        keep[i] = True
    return groups, rows, prompts, total, per_func, keep


def _aggregate(
    parts: list[dict[str, Any]],
    group_size: int,
    rollout_s: float,
    train_s: float,
    sync_s: float,
    refills: int,
) -> dict[str, Any]:
    total = [x for p in parts for x in p["total"]]
    lengths = [x for p in parts for x in p["lengths"]]
    per_func: dict[str, list[float]] = {}
    for p in parts:
        for k, v in p["per_func"].items():
            per_func.setdefault(k, []).extend(v)
    t = torch.tensor(total)
    rec: dict[str, Any] = {
        "reward_mean": float(t.mean()),
        "reward_std": float(t.std(unbiased=False)),
        "frac_reward_zero_std": group_stats(total, group_size),
        "response_length_mean": sum(lengths) / len(lengths),
        "response_length_max": max(lengths),
        "rollout_tokens_per_s": sum(p["gen_tokens"] for p in parts) / max(rollout_s, 1e-9),
        "train_tokens_per_s": sum(p["tokens"] for p in parts) / max(train_s, 1e-9),
        "rollout_s": rollout_s,
        "train_s": train_s,
        "weight_sync_s": sync_s,
        "refill_rounds": refills,
    }
    for k, v in rewards.reward_stats(per_func).items():
        rec[k] = v
    acc = per_func.get("accuracy")
    if acc is not None:
        vals = [v for v in acc if not math.isnan(v)]
        rec["accuracy"] = sum(vals) / len(vals) if vals else math.nan
    diffs = [p["logprob_diff"] for p in parts if math.isfinite(p["logprob_diff"])]
    if diffs:
        rec["logprob_diff"] = sum(diffs) / len(diffs)
    losses = [p["loss"] for p in parts if p["loss"]]
    for key in ("loss", "kl", "clip_frac", "entropy", "ratio_mean", "grad_norm"):
        vals = [lm[key] for lm in losses if key in lm]
        if vals:
            rec[key] = sum(vals) / len(vals)
    return rec


# ---------------------------------------------------------------------------- the trainer


def build_trainer(
    settings: GRPOSettings,
    *,
    engines: Sequence[Any],
    model_path: str,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    output_dir: str,
    storage_path: str,
    use_gpu: bool,
    sync_backend: str,
    control: dict[str, Any] | None = None,
    loop: Callable[[dict[str, Any]], None] = train_loop,
) -> Any:
    """`control`: {"name", "engines", "pool"} of the job's elastic control actor, or None."""
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = settings
    resources: dict[str, float] = {"CPU": s.worker_cpus}
    accelerator_type = s.accelerator_type
    if s.train_pool:
        # One GPU per worker; on the simulated fleet the pool unit stands for it. The pool
        # pins the GPU type, so a grow onto another pool is not held back by accelerator_type.
        resources[pool_key(s.train_pool)] = 0.001 if use_gpu else 1.0
        accelerator_type = None
    elif s.rollout_pool and not use_gpu:
        resources[pool_key(s.rollout_pool)] = 0.001
    scaling = ScalingConfig(
        num_workers=s.num_workers,
        use_gpu=use_gpu,
        resources_per_worker=resources,
        accelerator_type=accelerator_type,
    )
    run = RunConfig(
        name=s.run_name,
        storage_path=storage_path,
        failure_config=FailureConfig(max_failures=s.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=s.keep_checkpoints),
    )
    rows = [{"_idx": i, "_row": json.dumps(r)} for i, r in enumerate(train_rows)]
    return TorchTrainer(
        loop,
        train_loop_config={
            "settings": s.model_dump(),
            "engines": list(engines),
            "model_path": model_path,
            "eval_rows": eval_rows,
            "output_dir": output_dir,
            "sync_backend": sync_backend,
            "control": control,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=run,
        datasets={"train": ray.data.from_items(rows)},
        # Not split: every rank walks the same global cursor (see the module docstring).
        dataset_config=DataConfig(datasets_to_split=[]),
    )

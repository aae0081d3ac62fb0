"""The GRPO step loop inside a Ray Train TorchTrainer (DDP: gloo on CPU, NCCL on GPU).

Per step, on every worker: its share of prompts → the rollout engines (G samples each, with
the sampling log-probs) → rewards → group advantages → loss → optimizer step(s); then rank 0
pushes the new weights to every engine (version tag = optimizer-update count), evaluates when
due, writes metrics and, every `save_every` steps, a checkpoint that is itself a servable HF
directory plus `trainer_state.pt` (step, optimizer, RNG, data position).

The pieces live beside this module: cursor (data position), sampling (rollout and dynamic
sampling), update (the policy update), batching, checkpoints, metrics, distributed
(collectives), evaluation, elastic (resize requests) and prom (Prometheus series). Rank 0 polls
the job's control actor once per step; a resize ends the fit after a checkpoint of that step.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from r1platform.contracts.resources import pool_key
from r1platform.training import checkpoints, engines, fsdp, rewards, sampling
from r1platform.training import distributed as dist
from r1platform.training.batching import prompt_ids
from r1platform.training.checkpoints import TrainingAborted
from r1platform.training.console import note, report_step
from r1platform.training.cursor import DataCursor
from r1platform.training.elastic import RESIZE_KEY, ControlClient
from r1platform.training.evaluation import evaluate
from r1platform.training.metrics import MetricsLog, aggregate, jsonable, otel_ok
from r1platform.training.rollout import EngineConfig
from r1platform.training.settings import GRPOSettings
from r1platform.training.steptime import Reporter, StepTimer
from r1platform.training.update import UpdateResult, policy_update

TRACER = "r1platform.training"
__all__ = ["TrainingAborted", "build_trainer", "train_loop"]


def train_loop(config: dict[str, Any]) -> None:
    s = GRPOSettings(**config["settings"])
    eval_rows = config["eval_rows"]
    w = setup_worker(config, s)
    rank, world = w.rank, w.world
    funcs = rewards.load_reward_funcs(s.reward_specs())
    engine = make_engine(config, s, w)  # every rank at once: vLLM joins the ranks' group
    pids = dist.allgather(os.getpid(), world)  # collective: before rank 0 goes its own way
    lead = Lead(config, s, w, pids) if rank == 0 else None  # rank 0's outputs
    t_start = time.perf_counter()  # time_limit_s counts from here, the first push included

    def draw() -> list[int]:
        return w.cursor.take_slice(s.prompts_per_step, rank, world)

    def eval_now() -> dict[str, float]:
        return evaluate(engine, w.tokenizer, eval_rows, funcs, s.max_new_tokens)

    # Engines may hold older weights (fresh start after a crash, or a resume): push first.
    first_sync = push_weights(engine, w.weights, w.updates, world)
    if w.step == 0:
        record = {"step": 0, "weight_sync_s": first_sync, **w.weights.record(), "workers": world,
                  "prompts_seen": 0}  # fmt: skip
        emit(lead, {**record, **eval_now()} if lead else record)
    elif lead:
        note(f"grpo resumed at step {w.step} (weights version {w.updates})")

    report_s = 0.0  # the previous step's reporting, carried into this step's timing
    while w.step < s.max_steps:
        t0 = time.perf_counter()
        w.step += 1
        timer = StepTimer(report_s)
        # --- rollout (with dynamic-sampling refills)
        rb = sampling.rollout(engine, w.encode, w.rows, draw, funcs, s, step=w.step,
                              world=world, timer=timer)  # fmt: skip
        rollout_s = time.perf_counter() - t0
        # --- update (a hybrid engine on a GPU sleeps through it)
        t_train = time.perf_counter()
        with timer.phase("sync"):
            engine.release()
        up = policy_update(w.model, w.ref_model, w.opt, rb, s, pad_id=w.pad_id,
                           poison=w.step in s.inject_nan_steps, world=world,
                           timer=timer)  # fmt: skip
        w.updates += up.optimizer_steps
        times = {"rollout_s": rollout_s, "train_s": time.perf_counter() - t_train}
        # --- weight sync (only when the weights changed)
        with timer.phase("sync"):
            synced = not up.skipped
            times["sync_s"] = push_weights(engine, w.weights, w.updates, world) if synced else 0.0
        # --- log
        w.bad_streak = w.bad_streak + 1 if up.skipped else 0
        with timer.phase("metrics"):
            record = step_record(w, rb, up, times, s.group_size, lead is not None)
            record.update(w.weights.record() if synced else {})  # FSDP: the gather part
        out_of_time = s.time_limit_s is not None and time.perf_counter() - t_start > s.time_limit_s
        due_eval = w.step % s.eval_every == 0 or w.step >= s.max_steps or out_of_time
        record.update(timer.record(time.perf_counter() - t0))  # the steady part: no eval
        if due_eval and lead and not up.skipped:
            t_eval = time.perf_counter()
            record.update(eval_now())
            record["timing/eval_s"] = time.perf_counter() - t_eval
        # With the previous step's reporting, which ran between the two steps: the sum over
        # steps is the wall time, so a bench's s/step cannot leave the reporting out.
        record["step_s"] = time.perf_counter() - t0 + report_s
        if w.bad_streak >= s.max_bad_steps:
            abort(lead, record, w.bad_streak)
        # --- checkpoint / resize (a pending resize ends this fit after a checkpoint)
        final = w.step >= s.max_steps or out_of_time
        resize = None if final else dist.broadcast(lead.control.poll() if lead else None, world)
        due_ckpt = (w.step % s.save_every == 0 or final) and not up.skipped
        ck_dir = save(w, s) if due_ckpt or resize else None
        t_report = time.perf_counter()
        # Ray Train hears only of checkpoint and final steps: its report waits for a one-slot
        # queue its controller drains every 2 s, 0.8 s of the tiny model's 2 s step. Ranks
        # decide alike: one that skips leaves the rest in Ray Train's barrier (ck_dir: rank 0).
        emit(lead, record, ck_dir, {RESIZE_KEY: resize} if resize else None,
             to_train=due_ckpt or bool(resize) or final)  # fmt: skip
        report_s = time.perf_counter() - t_report
        if final or resize:
            if lead:
                lead.reporter.flush()  # metrics.jsonl complete before the fit returns
            if resize and lead:
                note(f"grpo: checkpointed step {w.step}; releasing for a resize")
            break


# ---------------------------------------------------------------------------- worker state


@dataclass
class Worker:
    """What one worker trains: model, optimizer, data, and the counters a checkpoint keeps."""

    rank: int
    world: int
    model: torch.nn.Module
    ref_model: torch.nn.Module | None
    opt: torch.optim.Optimizer
    tokenizer: Any
    rows: list[dict[str, Any]]
    cursor: DataCursor
    step: int = 0
    updates: int = 0  # optimizer steps so far: the weights version the engines serve
    bad_streak: int = 0  # consecutive skipped (non-finite) steps
    prompt_tokens: dict[int, list[int]] = field(default_factory=dict)  # by row `_idx`
    weights: Any = None  # fsdp.SyncWeights: what the engines load (full tensors under FSDP)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else 0

    def encode(self, row: dict[str, Any]) -> list[int]:
        """The row's prompt token ids, tokenised once per run (epochs revisit rows)."""
        ids = self.prompt_tokens.get(row["_idx"])
        if ids is None:
            ids = self.prompt_tokens[row["_idx"]] = prompt_ids(self.tokenizer, row["prompt"])
        return ids


def make_engine(config: dict[str, Any], s: GRPOSettings, w: Worker) -> engines.EngineHandle:
    """Hybrid: this worker's own in-process engine; disaggregated: the job's engine actors."""
    cfg: EngineConfig | None = config.get("local_engine")
    if cfg is None:
        return engines.RemoteEngines(
            config["engines"], config["sync_backend"], w.weights, sender=w.rank == 0
        )
    return engines.LocalEngine(cfg, w.weights, gpu=torch.cuda.is_available(),
                               sleep_level=s.sleep_level, kv_cache_gib=s.kv_cache_gib)  # fmt: skip


def setup_worker(config: dict[str, Any], s: GRPOSettings) -> Worker:
    """Load the model (from the restored checkpoint when Ray Train hands one) and the data."""
    import ray.train
    import ray.train.torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rank, world = dist.world()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    ckpt = ray.train.get_checkpoint()
    state: dict[str, Any] | None = None
    with ckpt.as_directory() if ckpt else _nothing(config["model_path"]) as load_from:
        if ckpt:
            state = checkpoints.load_state(Path(load_from))
        tokenizer = AutoTokenizer.from_pretrained(load_from)
        model = AutoModelForCausalLM.from_pretrained(load_from, dtype=torch.float32)
        ref_model = None
        if s.beta > 0:
            ref_model = AutoModelForCausalLM.from_pretrained(
                config["model_path"], dtype=torch.float32
            )
            ref_model.requires_grad_(False).eval()
        mode = fsdp.worker_mode(s.parallel_strategy, s.precision)  # DDP fp32 or FSDP (bf16)
        model = fsdp.prepare(model, mode)
        ref_model = fsdp.prepare_reference(ref_model, mode)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        if state is not None:
            fsdp.load_optimizer_state(model, opt, state["optimizer"])

    rows = _load_rows(ray.train.get_dataset_shard("train"), progress=s.verbose)
    w = Worker(rank, world, model, ref_model, opt, tokenizer, rows, DataCursor(len(rows), s.seed))
    w.weights = fsdp.SyncWeights(model, mode)
    if state is not None:
        w.step, w.updates = state["step"], state["updates"]
        w.bad_streak = state.get("bad_streak", 0)
        checkpoints.restore_position(state, w.cursor, rank)
    else:
        torch.manual_seed(s.seed + rank)
        random.seed(s.seed + rank)
    return w


class _nothing:
    """`with` over a plain path (no checkpoint to materialise)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        return None


def _load_rows(shard: Any, *, progress: bool) -> list[dict[str, Any]]:
    import ray.data

    # A non-TTY progress bar prints one line per refresh: only with --verbose.
    ray.data.DataContext.get_current().enable_progress_bars = progress
    # Ray Data may deliver blocks in any order; `_idx` restores one order for exact resume.
    # Rows travel as JSON so nested prompts (message lists) come back as plain Python.
    rows = sorted(shard.iter_rows(), key=lambda r: r["_idx"])
    return [{**json.loads(r["_row"]), "_idx": int(r["_idx"])} for r in rows]


# ---------------------------------------------------------------------------- rank 0's outputs


class Lead:
    """Rank 0's outputs: metrics.jsonl, the console, Prometheus (written by a background
    reporter, off the step's critical path) and the elastic control client. Other ranks hold
    None instead."""

    def __init__(self, config: dict[str, Any], s: GRPOSettings, w: Worker, pids: list[int]) -> None:
        from r1platform.training.prom import GRPOMetrics

        out_dir = Path(config["output_dir"])
        # Where each rank runs, for operators (and the worker-kill test): rank -> pid.
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "workers.json").write_text(json.dumps(dict(enumerate(pids))))
        if config["engines"]:  # and each engine actor (the engine-kill test): index -> pid
            import ray

            engine_pids = ray.get([h.pid.remote() for h in config["engines"]], timeout=600)
            (out_dir / "engines.json").write_text(json.dumps(dict(enumerate(engine_pids))))
        self.log = MetricsLog(out_dir / "metrics.jsonl", w.step)
        self.reporter = Reporter()
        self.control = ControlClient(
            config.get("control"), world=w.world, prompts_per_step=s.prompts_per_step
        )
        self.prom = GRPOMetrics(s.run_name)


def push_weights(
    engine: engines.EngineHandle, weights: fsdp.SyncWeights, version: int, world: int
) -> float:
    """The weights to the engines (seconds taken, the FSDP gather included): hybrid, each rank
    loads its own engine; disaggregated, rank 0 pushes to every engine while the others wait."""
    gather_s = weights.gather(everywhere=engine.syncs_on_every_rank)  # a collective under FSDP
    secs = gather_s + engine.sync(str(version))
    if not engine.syncs_on_every_rank:
        dist.barrier(world)
    return secs


def step_record(
    w: Worker,
    rb: sampling.RolloutBatch,
    up: UpdateResult,
    times: dict[str, float],
    group_size: int,
    is_lead: bool,
) -> dict[str, Any]:
    """The step's metrics.jsonl object; the measured part is gathered from every rank."""
    local = {
        "total": rb.total,
        "per_func": rb.per_func,
        "lengths": [len(c.token_ids) for c in rb.samples],
        "tokens": up.batch.num_tokens,
        "gen_tokens": rb.gen_tokens,
        "loss": up.metrics,
        "logprob_diff": up.logprob_diff,
    }
    parts = dist.allgather(local, w.world)  # collective
    record: dict[str, Any] = {
        "step": w.step,
        "skipped": up.skipped,
        "weights_version": w.updates,
        "workers": w.world,
        "prompts_seen": w.cursor.seen,
    }
    if is_lead:
        record.update(aggregate(parts, group_size, times["rollout_s"], times["train_s"],
                                times["sync_s"], rb.refill_rounds))  # fmt: skip
    return record


def emit(
    lead: Lead | None,
    record: dict[str, Any],
    checkpoint_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
    to_train: bool = True,
) -> None:
    """Write the record (rank 0) and, with `to_train`, report it to Ray Train with the
    checkpoint (all ranks, so the same steps on every rank)."""
    import ray.train
    from ray.train import Checkpoint

    from r1platform.telemetry import span

    if lead is not None:

        def write(log: MetricsLog = lead.log, prom: Any = lead.prom) -> None:
            log.write(record)
            report_step(record)
            prom.observe_step(record)
            with span(TRACER, "grpo.step", **{k: v for k, v in record.items() if otel_ok(v)}):
                pass

        lead.reporter.submit(write)
        if checkpoint_dir is not None:
            # The checkpoint's step is on disk before Ray Train registers the checkpoint: a
            # crash right after it must not resume past a step missing from metrics.jsonl.
            lead.reporter.flush()
    if not to_train:
        return
    ck = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    name = f"step_{record['step']:06d}" if ck else None
    # The temp dir exists only to be uploaded: kept, each checkpoint piled up on the node.
    ray.train.report({**jsonable(record), **(extra or {})}, checkpoint=ck, checkpoint_dir_name=name,
                     delete_local_checkpoint_after_upload=ck is not None)  # fmt: skip


def save(w: Worker, s: GRPOSettings) -> Path | None:
    """Checkpoint this step (collective: every rank's RNG state); rank 0 writes it."""
    rngs = dist.allgather(checkpoints.rng_state(), w.world)
    model, opt = fsdp.checkpoint_views(w.model, w.opt)  # FSDP: gathered (every rank joins)
    if w.rank != 0:
        return None
    state = checkpoints.trainer_state(
        step=w.step, updates=w.updates, bad_streak=w.bad_streak, optimizer=opt,
        cursor=w.cursor, rngs=rngs, settings=s.model_dump(),
    )  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="r1p-ckpt-"))
    return checkpoints.save_checkpoint(tmp, model, w.tokenizer, state)


def abort(lead: Lead | None, record: dict[str, Any], bad_streak: int) -> None:
    """Too many non-finite steps in a row: stop for good (every rank raises)."""
    step = record["step"]
    if lead is not None:
        lead.reporter.flush()
        note(
            f"[red]grpo aborted: {bad_streak} consecutive steps with a non-finite loss "
            f"(last at step {step}); the last good checkpoint is kept[/red]"
        )
        lead.log.write(record)
    raise TrainingAborted(
        f"{bad_streak} consecutive steps had a non-finite loss (last at step {step}); "
        "aborting, the last good checkpoint is kept"
    )


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
    local_engine: EngineConfig | None = None,
    loop: Callable[[dict[str, Any]], None] = train_loop,
) -> Any:
    """`control`: {"name", "engines", "pool"} of the job's elastic control actor, or None.
    `local_engine`: hybrid mode, each worker starts this engine in-process (then `engines`
    is empty)."""
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = settings
    # Hybrid: the engine and the trainer take turns in one process, so no extra CPUs.
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
            "local_engine": local_engine,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=run,
        datasets={"train": ray.data.from_items(rows)},
        # Not split: every rank walks the same global cursor (see the module docstring).
        dataset_config=DataConfig(datasets_to_split=[]),
    )

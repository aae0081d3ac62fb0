"""GRPO job settings: pydantic-settings with CLI flags, a YAML `--config` and `R1P_GRPO_*` env.

Precedence, highest first: CLI flags, environment (`R1P_GRPO_LR=...`), the YAML file, defaults.
`parse_settings(argv)` is the one entry point; every problem becomes a `GRPOSettingsError`
whose message is one line naming the field, so the job can print it and exit non-zero.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from r1platform.config import layered_sources
from r1platform.training.fsdp import Precision, Strategy, resolve_mode

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
PolicyLoss = Literal["grpo", "gspo"]  # names registered in training/grpo.py
SyncBackend = Literal["auto", "cpu", "nccl"]
DEFAULT_WEIGHTS = {"accuracy": 1.0, "format": 0.1, "tag_count": 0.1}

# The YAML file named by --config; a context variable because pydantic-settings builds its
# sources inside a classmethod that cannot receive per-call arguments.
_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("yaml", default=None)


class GRPOSettingsError(ValueError):
    """A settings problem phrased as the one line a user should see."""


class GRPOSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="R1P_GRPO_",
        extra="forbid",
        cli_implicit_flags=True,
        cli_exit_on_error=False,
        cli_avoid_json=True,
        cli_enforce_required=False,
    )

    # What to train on.
    model: str | None = Field(None, description="HF model dir; default: the tiny model")
    dataset: str = Field("arithmetic", description="built-in name or jsonl/parquet/HF-dir path")
    rewards: list[str] = Field(
        default_factory=lambda: ["accuracy", "format"],
        description="builtin names or module:function import paths",
    )
    reward_weights: list[float] | None = Field(
        None, description="one per reward; default: accuracy 1, format/tag_count 0.1, others 1"
    )
    eval_size: int = Field(64, ge=1, description="held-out prompts for greedy eval")

    # Algorithm.
    group_size: int = Field(8, ge=2, description="completions per prompt (G)")
    prompts_per_step: int = Field(16, ge=1, description="prompts per optimizer step (B)")
    # Tuned on the tiny model: 5e-4 and up collapses the reasoning trace within ~10 steps.
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    beta: float = Field(0.0, ge=0, description="k3 KL coefficient; 0 loads no reference")
    clip_low: float = Field(0.2, ge=0, lt=1)
    clip_high: float = Field(0.28, ge=0)
    loss_agg: LossAgg = "token-mean"
    policy_loss: PolicyLoss = Field(
        "grpo", description="grpo: token-level ratio; gspo: sequence-level ratio (GSPO)"
    )
    scale_rewards: bool = Field(True, description="divide advantages by group std")
    num_iterations: int = Field(1, ge=1, description="optimizer updates per rollout batch")
    dynamic_sampling: bool = Field(False, description="drop tied groups and refill (DAPO)")
    max_refill_rounds: int = Field(2, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    max_model_len: int = Field(256, ge=16)

    # Schedule.
    max_steps: int = Field(40, ge=1)
    time_limit_s: float | None = Field(None, gt=0, description="stop after this much training")
    eval_every: int = Field(10, ge=1)
    save_every: int = Field(20, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
    max_bad_steps: int = Field(3, ge=1, description="consecutive NaN/inf steps before abort")

    # Where results go.
    output_dir: str | None = Field(None, description="local dir; default under the cache")
    checkpoint_uri: str | None = Field(
        None, description="local path or s3://-style URI; default OUTPUT_DIR/checkpoints"
    )
    run_name: str = "grpo"
    resume: bool = Field(False, description="continue from the latest checkpoint")

    # Placement.
    num_workers: int = Field(1, ge=1)
    num_rollout_engines: int = Field(1, ge=1)
    accelerator_type: str | None = Field(None, description="GPU type, e.g. H100 or L4")
    rollout_pool: str | None = Field(None, description="pin rollout engines to a named pool")
    train_pool: str | None = Field(
        None,
        description="pool the train workers run on, one GPU (simulated: one pool:P unit) each; "
        "the pool controller may move it (elastic grow)",
    )
    colocate: bool | None = Field(
        None,
        description="hybrid mode: the vLLM engine runs inside each train worker, sharing its "
        "CPU or GPU (GPU: vLLM sleep mode during the update); default: on when the cluster "
        "has no GPUs and no rollout_pool is set, else disaggregated engine actors",
    )
    sleep_level: Literal[1, 2] = Field(
        2, description="hybrid on GPU: vLLM sleep level during the update (2 frees the weights)"
    )
    rollout_compile: bool = Field(
        True,
        description="compile the rollout engine (vLLM's default: torch.compile on CPU, CUDA "
        "graphs on GPU): seconds more at engine start, faster decode every step; "
        "--no-rollout_compile (eager) for short runs",
    )
    worker_cpus: float = Field(0.5, ge=0)
    engine_cpus: float = Field(0.25, ge=0)
    use_gpu: bool | None = Field(None, description="default: when the cluster has GPUs")
    max_failures: int = Field(2, ge=0)
    max_num_seqs: int | None = Field(
        None,
        ge=1,
        description="sequences an engine decodes at once; default: the whole step "
        "(prompts_per_step x group_size), so no completion waits for a second decode wave",
    )
    kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    weight_sync_backend: SyncBackend = "auto"
    parallel_strategy: Strategy = Field(
        "auto",
        description="auto: FSDP (torch fully_shard) on GPUs and AMX CPUs, fp32 DDP on other CPUs",
    )
    precision: Precision = Field(
        "auto",
        description="auto: bf16 compute over fp32 sharded weights under FSDP on GPUs with bf16 "
        "and on AMX CPUs, else fp32 (the mode the planner sizes the job for)",
    )
    ray_address: str | None = Field(None, description="default: RAY_ADDRESS or a local Ray")

    # Console.
    verbose: bool = Field(
        False, description="framework logs (vLLM, Ray) on the console too, not only in job.log"
    )

    # Testing aid: multiply the loss by NaN at these steps to exercise the skip/abort path.
    inject_nan_steps: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> GRPOSettings:
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} values for "
                f"{len(self.rewards)} rewards"
            )
        # The conflicts no hardware resolves (ddp + bf16); the device's are checked on the worker.
        resolve_mode(self.parallel_strategy, self.precision, on_gpu=True, bf16_ok=True)
        if self.colocate and self.rollout_pool:
            raise ValueError(
                "colocate runs the engine inside the train workers; rollout_pool places "
                "separate engines: set one of them"
            )
        if self.prompts_per_step % self.num_workers:
            raise ValueError(
                f"prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                f"num_workers ({self.num_workers})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return layered_sources(settings_cls, init_settings, env_settings, _yaml_file.get())

    def colocated(self, mode: str) -> bool:
        """Hybrid or not on a cluster of this placement mode (contracts.placement_mode)."""
        if self.colocate is not None:
            return self.colocate
        return mode != "gpu" and self.rollout_pool is None

    def engine_max_num_seqs(self) -> int:
        """Decode slots per rollout engine. One wave for the whole step: at 64 slots the 128
        completions of the default step decode in two waves, and the rollout took 1.4x as
        long on the tiny model (bench/rollout_throughput.py, 0.75 s vs 0.53 s)."""
        return self.max_num_seqs or self.prompts_per_step * self.group_size

    def reward_specs(self) -> list[dict[str, Any]]:
        # Format is a shaping term: weighted like accuracy it wins, and the policy learns to
        # drop the reasoning trace to close the tags sooner (seen at weight 0.25 and 1).
        weights = self.reward_weights or [DEFAULT_WEIGHTS.get(r, 1.0) for r in self.rewards]
        return [{"spec": s, "weight": w} for s, w in zip(self.rewards, weights, strict=True)]


def _split_config_flag(argv: list[str]) -> tuple[Path | None, list[str]]:
    """Take `--config FILE` / `--config=FILE` out of argv (the YAML is a source, not a field)."""
    rest: list[str] = []
    config: Path | None = None
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            value = next(it, None)
            if value is None:
                raise GRPOSettingsError("--config: expected a YAML file path")
            config = Path(value)
        elif arg.startswith("--config="):
            config = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return config, rest


def describe(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "settings"
    value = first.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    return f"invalid setting {field}: {first['msg']}{shown}"


def parse_settings(argv: list[str] | None = None, **overrides: Any) -> GRPOSettings:
    """Settings from CLI args (None: no CLI), env, an optional YAML `--config`, then overrides
    given as keyword arguments (tests use those)."""
    config, rest = _split_config_flag(list(argv or []))
    if config is not None and not config.is_file():
        raise GRPOSettingsError(f"--config: file not found: {config}")
    token = _yaml_file.set(config)
    try:
        if argv is None:
            return GRPOSettings(**overrides)
        return GRPOSettings(_cli_parse_args=rest, **overrides)
    except ValidationError as err:
        raise GRPOSettingsError(describe(err)) from None
    except SettingsError as err:
        # argparse-level problems (unknown flag, missing value): keep the first line only.
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else "invalid arguments"
        raise GRPOSettingsError(msg) from None
    finally:
        _yaml_file.reset(token)

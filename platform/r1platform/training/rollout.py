"""Rollout engines (vLLM `LLM` inside Ray actors) and trainer → engine weight sync.

Weight sync follows vLLM 0.32's RL route on both device kinds: the trainer drives
`init_weight_transfer_engine` / `start_weight_update` / `update_weights` /
`finish_weight_update(version)` through a `VLLMWeightSyncClient` (vLLM's
`RayVLLMWeightSyncClient` over our actors), and inside the engine a `WeightTransferEngine`
feeds the tensors to `model.load_weights` under vLLM's layerwise reload.

- GPU: vLLM's own "nccl" backend (`NCCLTrainerWeightTransferEngine`), one transfer group per
  engine with the trainer as rank 0.
- CPU: our "r1p_cpu" backend (training/cpu_weight_transfer.py): the tensors ride the Ray
  object store (put once, read by every engine).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from r1platform.contracts.net import free_port
from r1platform.contracts.placement_mode import PlacementMode, detect_mode
from r1platform.contracts.resources import accelerator_key, pool_key
from r1platform.training.cpu_weight_transfer import CPU_BACKEND, register_cpu_backend
from r1platform.training.fsdp import Precision, Strategy, worker_mode

__all__ = ["CPU_BACKEND", "PlacementMode", "detect_mode", "free_port", "register_cpu_backend"]


# ---------------------------------------------------------------------------- placement


def engine_actor_options(
    *,
    mode: PlacementMode,
    num_cpus: float,
    accelerator_type: str | None,
    pool: str | None,
    kv_cache_gib: int,
) -> dict[str, Any]:
    """Ray actor options for one rollout engine.

    Real GPU nodes: one GPU plus Ray's accelerator-type marker. Simulated fleet (virtual nodes
    that declare `accelerator_type:<X>` / `pool:<P>` units, see pools.fleet.node_resources):
    one such unit, so the same placement logic is exercised on CPU.
    """
    resources: dict[str, float] = {}
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    opts: dict[str, Any] = {"num_cpus": num_cpus}
    if mode == "gpu":
        opts["num_gpus"] = 1
        if accelerator_type:
            opts["accelerator_type"] = accelerator_type
        if pool:
            resources[pool_key(pool)] = 0.001
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        if pool:
            resources[pool_key(pool)] = 1.0
        elif accelerator_type:
            resources[accelerator_key(accelerator_type)] = 1.0
    if resources:
        opts["resources"] = resources
    opts["runtime_env"] = {"env_vars": env}
    # A lost engine comes back by itself (base weights, version "0"); its next rollout call
    # refuses to serve the wrong version, the step fails, and Ray Train resumes the job from
    # its last checkpoint, whose first act is a weight push. In-flight calls are not retried.
    opts["max_restarts"] = ENGINE_RESTARTS
    return opts


def sync_backend(requested: str, mode: PlacementMode) -> str:
    if requested == "auto":
        return "nccl" if mode == "gpu" else CPU_BACKEND
    return "nccl" if requested == "nccl" else CPU_BACKEND


# ---------------------------------------------------------------------------- the engine actor

ENGINE_RESTARTS = 3


class StaleEngine(RuntimeError):
    """The engine serves other weights than the trainer expects (it was restarted)."""


@dataclass
class Sample:
    """One completion: token ids and the log-prob vLLM sampled each with."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str | None


@dataclass
class EngineConfig:
    model: str
    max_model_len: int = 256
    max_num_seqs: int = 64
    seed: int = 0
    backend: str = CPU_BACKEND
    gpu_memory_utilization: float = 0.3
    accelerator_type: str | None = None  # the GPU type whose engine profile applies
    # The trainer's memory mode settings: on CPU the engine samples in the dtype the trainer
    # computes in (bf16 on AMX CPUs by default, training.fsdp.resolve_mode).
    parallel_strategy: Strategy = "auto"
    precision: Precision = "auto"
    # vLLM's default (torch.compile on CPU, CUDA graphs on GPU), as every RL stack runs its
    # rollouts: on this CPU 10% (tiny) to 25% (small) faster decode for 6-20 s more at start.
    compile: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def rollout_engine_args(
    model: str,
    accelerator_type: str | None,
    strategy: Strategy = "auto",
    precision: Precision = "auto",
    compile: bool = True,
) -> dict[str, Any]:
    """dtype and enforce_eager of a rollout engine. enforce_eager is `not compile`, not
    serving's: an engine that decodes every step of a long job repays its compile (or CUDA
    graph capture) many times over. The dtype is that of serving's engine profile for this
    model on this process's GPU (serving.engine_args.profile_args: float32 on CPU), with
    quantization off: the engine reloads the trainer's 16-bit weights every step, and FP8
    sampling would drift from the policy the trainer scores. On CPU the dtype is the trainer's
    compute dtype instead (`strategy` / `precision` as the job sets them): bf16 where the
    trainer runs bf16, which on AMX halves the small model's rollout (1.27 s against 2.55 s
    for one step's 128 completions)."""
    import torch

    from r1platform.config import ModelSettings
    from r1platform.serving.engine_args import local_gpu_type, profile_args

    gpu = None
    if torch.cuda.is_available():
        gpu = local_gpu_type(ModelSettings(accelerator_type=accelerator_type))
    settings = ModelSettings(path=model, quantization="none")
    dtype = profile_args(settings, gpu)["dtype"]
    if gpu is None and worker_mode(strategy, precision).precision == "bf16":
        dtype = "bfloat16"  # the trainer's own rule on this CPU (its workers run here too)
    return {"dtype": dtype, "enforce_eager": not compile}


def completion_texts(tokenizer: Any, token_ids: Sequence[Sequence[int]]) -> list[str]:
    """The texts vLLM's own detokenizer gives (special tokens skipped, no clean-up of spaces),
    decoded in one batch call."""
    return list(
        tokenizer.batch_decode(
            [list(t) for t in token_ids],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
    )


class RolloutEngine:
    """A vLLM `LLM` in a Ray actor. Its weight-sync methods mirror `vllm.LLM`'s RL mixin, so
    vLLM's `RayVLLMWeightSyncClient` drives it unchanged."""

    def __init__(self, cfg: EngineConfig) -> None:
        if cfg.backend == CPU_BACKEND:
            register_cpu_backend()
        from vllm import LLM
        from vllm.config import WeightTransferConfig

        self.cfg = cfg
        self.llm = LLM(
            model=cfg.model,
            **rollout_engine_args(
                cfg.model,
                cfg.accelerator_type,
                cfg.parallel_strategy,
                cfg.precision,
                cfg.compile,
            ),
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            seed=cfg.seed,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            weight_transfer_config=WeightTransferConfig(backend=cfg.backend),
            # Log-probs of the distribution actually sampled from (after temperature), which
            # is what the trainer recomputes and what the importance ratio compares against.
            logprobs_mode="processed_logprobs",
            **cfg.extra,
        )
        self.version = "0"

    @classmethod
    def wrap(cls, cfg: EngineConfig, llm: Any) -> RolloutEngine:
        """An engine around an `LLM` that already exists (or a stand-in with its methods)."""
        engine = cls.__new__(cls)
        engine.cfg, engine.llm, engine.version = cfg, llm, "0"
        return engine

    def ready(self) -> str:
        return self.version

    def pid(self) -> int:
        """The engine's process (operators, and the fault tests that kill it)."""
        return os.getpid()

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seeds: Sequence[int] | None = None,
        logprobs: bool = True,
        version: str | None = None,
    ) -> list[list[Sample]]:
        from vllm import SamplingParams

        if version is not None and version != self.version:
            raise StaleEngine(
                f"rollout engine serves weights version {self.version}, the trainer expects "
                f"{version} (the engine was restarted)"
            )

        params = [
            SamplingParams(
                n=n,
                temperature=temperature,
                max_tokens=max_tokens,
                logprobs=0 if logprobs else None,
                seed=None if seeds is None else int(seeds[i]),
                # vLLM would detokenize every sequence, and every sampled log-prob's token,
                # at every engine step; the rewards need each text once, at the end.
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False
        )
        flat = [c for out in outs for c in out.outputs]
        texts = iter(
            completion_texts(self.llm.get_tokenizer(), [c.token_ids for c in flat]) if flat else []
        )
        result: list[list[Sample]] = []
        for out in outs:
            group = []
            for c in out.outputs:
                lps = (
                    [d[t].logprob for d, t in zip(c.logprobs, c.token_ids, strict=True)]
                    if logprobs and c.logprobs is not None
                    else []
                )
                group.append(Sample(list(c.token_ids), lps, next(texts), c.finish_reason))
            result.append(group)
        return result

    # -- vLLM RL control plane (names and shapes as in vllm.entrypoints.rl.offline) --

    def init_weight_transfer_engine(self, request: Any) -> None:
        self.llm.init_weight_transfer_engine(request)

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, request: Any) -> None:
        info = request.update_info if hasattr(request, "update_info") else request["update_info"]
        if isinstance(info, dict) and "tensors_ref" in info:
            import ray

            info = {"names": info["names"], "tensors": ray.get(info["tensors_ref"])}
        self.llm.update_weights({"update_info": info})

    def finish_weight_update(self) -> None:
        self.llm.finish_weight_update()
        # Cached prompt KV was computed by the old weights; reusing it would mix versions.
        self.llm.reset_prefix_cache()

    def update_weight_version(self, version: str) -> None:
        self.llm.update_weight_version(version)
        self.version = version

    def get_weight_version(self) -> str:
        return self.llm.get_weight_version()

    def shutdown_weight_transfer_engine(self) -> None:
        self.llm.shutdown_weight_transfer_engine()


def start_engines(
    count: int, cfg: EngineConfig, options: dict[str, Any], *, timeout_s: float = 600
) -> list[Any]:
    """Start `count` engine actors and wait until each has loaded its model."""
    import ray

    actor_cls = ray.remote(RolloutEngine)
    handles = [actor_cls.options(**options).remote(cfg) for _ in range(count)]
    ray.get([h.ready.remote() for h in handles], timeout=timeout_s)
    return handles


def generate_groups(
    handles: Sequence[Any],
    prompts: Sequence[Sequence[int]],
    *,
    n: int,
    temperature: float,
    max_tokens: int,
    seeds: Sequence[int] | None = None,
    logprobs: bool = True,
    version: str | None = None,
) -> list[list[Sample]]:
    """Spread prompts over the engines in contiguous slices; results keep prompt order.
    `version`: the weights each engine must serve (StaleEngine otherwise)."""
    import ray

    if not prompts:
        return []
    k = min(len(handles), len(prompts))
    bounds = [round(i * len(prompts) / k) for i in range(k + 1)]
    refs = [
        handles[i].generate.remote(
            prompts[bounds[i] : bounds[i + 1]],
            n=n,
            temperature=temperature,
            max_tokens=max_tokens,
            seeds=None if seeds is None else list(seeds[bounds[i] : bounds[i + 1]]),
            logprobs=logprobs,
            version=version,
        )
        for i in range(k)
    ]
    return [group for part in ray.get(refs) for group in part]


# ---------------------------------------------------------------------------- trainer side


class _NamedParams:
    """A vLLM `WeightSource` over an HF module, named as the checkpoint names it (DDP's
    `module.` prefix removed), re-iterable each round."""

    def __init__(self, model: torch.nn.Module) -> None:
        from vllm.distributed.weight_transfer.base import ParamMeta

        self._model = getattr(model, "module", model)
        self._meta = ParamMeta

    def metadata(self) -> list[Any]:
        return [self._meta(n, p.dtype, tuple(p.shape)) for n, p in self._model.named_parameters()]

    def __iter__(self) -> Any:
        for name, p in self._model.named_parameters():
            yield name, p.detach()


def weight_source(model: torch.nn.Module) -> Any:
    from vllm.distributed.weight_transfer.base import WeightSource

    class Source(_NamedParams, WeightSource):
        pass

    return Source(model)


def nccl_init_infos(
    num_engines: int, *, master_address: str, tp_size: int = 1, ports: Sequence[int] | None = None
) -> list[Any]:
    """One NCCL transfer group per engine, trainer sender at rank 0 and the engine's TP ranks
    after it: each vLLM engine numbers its workers from rank_offset=1, so engines cannot share
    one group."""
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    ports = list(ports) if ports is not None else [free_port() for _ in range(num_engines)]
    return [
        NCCLTrainerInitInfo(
            master_address=master_address, master_port=ports[i], world_size=1 + tp_size, rank=0
        )
        for i in range(num_engines)
    ]


class WeightSync:
    """Trainer → engines, same interface on every backend: `push(model, version) -> seconds`.

    Only the sender (trainer rank 0) calls it. Every push ends with `finish_weight_update`
    and a version tag on every engine, so a rollout can be attributed to a model version.
    """

    def __init__(self, handles: Sequence[Any], backend: str, model: torch.nn.Module) -> None:
        from vllm.distributed.weight_transfer import (
            RayVLLMWeightSyncClient,
            WeightTransferTrainerFactory,
        )

        self.handles = list(handles)
        self.backend = backend
        self.source = weight_source(model)
        if backend == CPU_BACKEND:
            register_cpu_backend()
            client = RayVLLMWeightSyncClient(self.handles)
            init = WeightTransferTrainerFactory._registry[CPU_BACKEND]().init_info(rank=0)
            self.engines = [
                WeightTransferTrainerFactory.trainer_init(init, client=client, source=self.source)
            ]
        else:
            address = os.environ.get("R1P_MASTER_ADDR") or socket.gethostbyname(
                socket.gethostname()
            )
            infos = nccl_init_infos(len(self.handles), master_address=address)
            self.engines = [
                WeightTransferTrainerFactory.trainer_init(
                    info, client=RayVLLMWeightSyncClient(h), source=self.source
                )
                for info, h in zip(infos, self.handles, strict=True)
            ]

    def push(self, version: str) -> float:
        import ray

        t0 = time.perf_counter()
        for engine in self.engines:
            engine.send_weights()  # start → update → finish, as vLLM's trainer engines do
        ray.get([h.update_weight_version.remote(version) for h in self.handles])
        return time.perf_counter() - t0


def engine_versions(handles: Sequence[Any]) -> list[str]:
    import ray

    return ray.get([h.get_weight_version.remote() for h in handles])


def samples_to_dict(s: Sample) -> dict[str, Any]:
    return asdict(s)

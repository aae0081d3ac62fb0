"""How a model's vLLM engine is built: where its weights are and the AsyncEngineArgs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from r1platform.config import ModelSettings

ExecutorBackend = Literal["ray", "mp"]


@dataclass(frozen=True)
class Distribution:
    """How one replica's ranks run: vLLM's executor, and for the multiprocessing executor
    across nodes, which node this process is and where the ranks meet (vLLM's `nnodes`,
    `node_rank`, `master_addr`, `master_port`)."""

    backend: ExecutorBackend | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0


def executor_backend(world_size: int, ray_device_key: str) -> ExecutorBackend | None:
    """vLLM's Ray executor on platforms that name a Ray device (CUDA: "GPU"); the CPU platform
    leaves `ray_device_key` empty and vLLM's Ray executors refuse it, so there the
    multiprocessing executor runs the ranks. One rank needs neither."""
    if world_size == 1:
        return None
    return "ray" if ray_device_key else "mp"


def distribution_args(settings: ModelSettings, dist: Distribution) -> dict[str, Any]:
    args: dict[str, Any] = {
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
        "distributed_executor_backend": dist.backend,
    }
    if dist.nnodes > 1:
        args.update(
            nnodes=dist.nnodes,
            node_rank=dist.node_rank,
            master_addr=dist.master_addr,
            master_port=dist.master_port,
        )
    return args


def local_distribution(settings: ModelSettings) -> Distribution:
    """All ranks started from this process, with the executor this platform has."""
    from vllm.platforms import current_platform

    world = settings.tensor_parallel_size * settings.pipeline_parallel_size
    return Distribution(executor_backend(world, current_platform.ray_device_key))


def resolve_model_path(settings: ModelSettings) -> Path:
    if settings.path is None:
        from r1platform.models.tiny import ensure_tiny_model

        return ensure_tiny_model()
    path = Path(settings.path).expanduser()
    from r1platform.pools.fit import hf_id

    if hf_id(settings.path) == settings.path and not path.is_dir():
        return path  # an R1-family HF id (settings canonicalised it): vLLM fetches it from the Hub
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model path {path} is not a HF model directory (no config.json)")
    return path


def structured_outputs_config(settings: ModelSettings) -> dict[str, Any]:
    """response_format's grammar engine. xgrammar runs on CPU and reads any HF tokenizer,
    the char-level tiny one included. Compact JSON (no free whitespace) because with
    whitespace allowed a small model can pad between tokens until max_tokens. With a reasoning
    parser the grammar starts after the think section, so reasoning stays free text."""
    return {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
        "reasoning_parser": settings.reasoning_parser or "",
    }


def profile_args(settings: ModelSettings, gpu_type: str | None) -> dict[str, Any]:
    """dtype, quantization and kv_cache_dtype for the engine. On a GPU (`gpu_type` is the
    catalog name of the GPU it runs on) they come from the engine profile of that GPU and the
    model, explicit settings checked against it; on CPU (None) the settings as given, float32
    by default: the CPU engine has no FP8 kernels to pick and the tiny model is float32."""
    if gpu_type is not None:
        return settings.engine_profile(gpu_type).engine_args()
    quant = None if settings.quantization in (None, "none") else settings.quantization
    return {
        "dtype": settings.dtype or "float32",
        "quantization": quant,
        "kv_cache_dtype": settings.kv_cache_dtype or "auto",
    }


def local_gpu_type(settings: ModelSettings) -> str | None:
    """The GPU type this replica runs on: None without CUDA (CPU, simulated fleet); else the
    model's accelerator_type, or the type Ray detects on this node. A GPU with no known type is
    an error: picking a profile for an unknown GPU would be a guess."""
    import torch

    if not torch.cuda.is_available():
        return None
    if settings.accelerator_type:
        return settings.accelerator_type
    from ray._private.accelerators import NvidiaGPUAcceleratorManager

    detected = NvidiaGPUAcceleratorManager.get_current_node_accelerator_type()
    if not detected:
        raise RuntimeError("cannot tell this node's GPU type; set the model's accelerator_type")
    return detected


def engine_args(
    model_id: str, settings: ModelSettings, path: Path, dist: Distribution | None = None
) -> Any:
    """The one builder for CPU and GPU engines; `dist` says how the ranks run (default: all
    from this process with the platform's executor)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    dist = dist or local_distribution(settings)

    extra = dict(settings.engine_extra)
    if dist.backend == "mp" and settings.pipeline_parallel_size > 1:
        from vllm.platforms import current_platform

        if current_platform.is_cpu():  # cpu_pipeline says why
            from r1platform.serving.cpu_pipeline import WORKER_CLS

            extra.setdefault("worker_cls", WORKER_CLS)
    # engine_extra may tune structured outputs; its keys win over the platform's.
    structured = {
        **structured_outputs_config(settings),
        **(extra.pop("structured_outputs_config", None) or {}),
    }
    return AsyncEngineArgs(
        model=str(path),
        served_model_name=[model_id],
        max_model_len=settings.max_model_len,
        # On GPUs the Ray executor uses the Serve replica's placement group (vLLM picks up the
        # group of the actor that creates the engine).
        **distribution_args(settings, dist),
        **profile_args(settings, local_gpu_type(settings)),
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=settings.enforce_eager,
        seed=settings.seed,
        disable_log_stats=True,
        structured_outputs_config=structured,
        # Checked against AsyncEngineArgs' fields, and disjoint from the ones set above.
        **extra,
    )

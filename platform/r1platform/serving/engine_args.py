"""How a model's vLLM engine is built: where its weights are and the AsyncEngineArgs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1platform.config import ModelSettings


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


def engine_args(model_id: str, settings: ModelSettings, path: Path) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    extra = dict(settings.engine_extra)
    # engine_extra may tune structured outputs; its keys win over the platform's.
    structured = {
        **structured_outputs_config(settings),
        **(extra.pop("structured_outputs_config", None) or {}),
    }
    return AsyncEngineArgs(
        model=str(path),
        served_model_name=[model_id],
        max_model_len=settings.max_model_len,
        tensor_parallel_size=settings.tensor_parallel_size,
        # TP across GPUs inside a Serve replica uses the replica's placement group via Ray.
        distributed_executor_backend="ray" if settings.tensor_parallel_size > 1 else None,
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

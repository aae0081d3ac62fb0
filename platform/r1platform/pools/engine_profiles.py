"""Engine profiles: the dtype, quantization and KV-cache dtype a model's vLLM engine runs with
on one GPU type, keyed by the GPU's CUDA compute capability (catalog.yaml `compute_capability`).

`CAPABILITY_RULES` is the one table. Its facts are vLLM 0.32's own checks:
- bf16 needs compute capability >= 8.0 (`CudaPlatform.check_if_supports_dtype` raises
  "Bfloat16 is only supported on GPUs with compute capability of at least 8.0"), so Volta and
  Turing run fp16;
- FP8 checkpoints need >= 7.5 (`Fp8Config.get_min_capability()` returns 75);
- native W8A8 FP8 GEMMs need >= 8.9 (`CudaPlatform.supports_fp8()` is
  `has_device_capability(89)`); from 7.5 to 8.9 vLLM runs FP8 weights through the weight-only
  Marlin kernel (`MarlinFP8ScaledMMLinearKernel`, "for GPUs that lack FP8 hardware support",
  gated by `is_fp8_marlin_supported()` = `has_device_capability(75)`).

So DeepSeek-R1's FP8 checkpoint runs on A100, A10G, T4 and L4 (Marlin below 8.9) and is refused
on V100. Defaults where the user sets nothing: FP8 on Hopper and Ada (online FP8 for a 16-bit
checkpoint), BF16 on Ampere, FP16 on Volta/Turing. An explicit choice the GPU cannot run is
refused, never swapped for another.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import GpuType
from .errors import PoolsConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = ("fp8", "none")  # "none": keep a 16-bit checkpoint 16-bit on Hopper/Ada
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")


class EngineProfileError(PoolsConfigError):
    """A model / GPU / dtype combination that vLLM cannot run."""


@dataclass(frozen=True)
class CapabilityRule:
    min_cc: float  # this row applies from this compute capability up to the next row's
    generation: str
    bf16: bool
    fp8_weights: bool  # vLLM can load FP8 weights (>= 7.5)
    fp8_native: bool  # W8A8 FP8 tensor cores (>= 8.9); else weight-only Marlin
    default_dtype: str
    default_fp8: bool  # quantize a 16-bit checkpoint to FP8 by default


# Highest first: the first row whose min_cc the GPU reaches applies.
CAPABILITY_RULES: tuple[CapabilityRule, ...] = (
    CapabilityRule(9.0, "Hopper", True, True, True, "bfloat16", True),
    CapabilityRule(8.9, "Ada", True, True, True, "bfloat16", True),
    CapabilityRule(8.0, "Ampere", True, True, False, "bfloat16", False),
    CapabilityRule(7.5, "Turing", False, True, False, "float16", False),
    CapabilityRule(7.0, "Volta", False, False, False, "float16", False),
)


def rule_for(gpu: GpuType) -> CapabilityRule:
    cc = gpu.compute_capability
    if cc is None:
        raise EngineProfileError(
            f"GPU type {gpu.name!r} has no compute_capability; set gpu_types.{gpu.name}."
            "compute_capability in the pools file so its engine profile can be chosen"
        )
    for rule in CAPABILITY_RULES:
        if cc >= rule.min_cc - 1e-9:
            return rule
    raise EngineProfileError(
        f"GPU type {gpu.name!r} (compute capability {cc:g}) is older than any GPU vLLM 0.32 "
        f"supports (>= {CAPABILITY_RULES[-1].min_cc:g})"
    )


@dataclass(frozen=True)
class EngineProfile:
    gpu: str
    generation: str
    dtype: str  # activations / unquantized weights
    quantization: str | None  # "fp8" or None
    kv_cache_dtype: str
    fp8_kernel: str | None  # "w8a8" (native) or "marlin" (weight-only) when quantized

    def engine_args(self) -> dict[str, str | None]:
        """The AsyncEngineArgs fields this profile sets."""
        return {
            "dtype": self.dtype,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_cache_dtype,
        }


def resolve_profile(
    model: str,
    checkpoint_quant: str,
    gpu: GpuType,
    *,
    dtype: str | None = None,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
) -> EngineProfile:
    """The profile `model` (whose checkpoint is quantized as `checkpoint_quant`, "" for 16-bit)
    runs with on `gpu`; explicit `dtype`/`quantization`/`kv_cache_dtype` are checked, not
    replaced. Raises EngineProfileError naming the GPU, its capability and the reason."""
    rule = rule_for(gpu)
    where = f"{gpu.name} (compute capability {gpu.compute_capability:g}, {rule.generation})"
    fp8_ckpt = "fp8" in checkpoint_quant.lower()
    if dtype is not None and dtype not in DTYPES:
        raise EngineProfileError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise EngineProfileError(
            f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}"
        )
    if kv_cache_dtype is not None and kv_cache_dtype not in KV_CACHE_DTYPES:
        raise EngineProfileError(
            f"kv_cache_dtype {kv_cache_dtype!r} is not one of {', '.join(KV_CACHE_DTYPES)}"
        )
    if dtype == "bfloat16" and not rule.bf16:
        raise EngineProfileError(
            f"model {model!r} on {where}: bfloat16 needs compute capability >= 8.0; "
            "use dtype float16"
        )
    act = rule.default_dtype if dtype in (None, "auto") else dtype
    if fp8_ckpt and quantization == "none":
        raise EngineProfileError(
            f"model {model!r}: its checkpoint is FP8 and vLLM loads it only as FP8; "
            "leave quantization unset or use a 16-bit checkpoint"
        )
    if fp8_ckpt and quantization is None:
        quantization = "fp8"  # the checkpoint's weights are FP8: vLLM loads them as such
    elif quantization is None and rule.default_fp8:
        quantization = "fp8"
    if quantization == "fp8" and not rule.fp8_weights:
        what = "its FP8 checkpoint" if fp8_ckpt else "FP8 weights"
        raise EngineProfileError(
            f"model {model!r} cannot run {what} on {where}: vLLM 0.32's FP8 kernels need compute "
            "capability >= 7.5 (weight-only Marlin below 8.9); use a 16-bit checkpoint of "
            "the model or a newer GPU"
        )
    if quantization == "fp8" and act == "float32":
        raise EngineProfileError(
            f"model {model!r} on {where}: FP8 weights run with bfloat16 or float16 activations, "
            "not float32"
        )
    kv = kv_cache_dtype or "auto"
    if kv != "auto" and not rule.fp8_native:
        raise EngineProfileError(
            f"model {model!r} on {where}: kv_cache_dtype {kv} needs native FP8 (compute "
            "capability >= 8.9) on this platform; use kv_cache_dtype auto"
        )
    if quantization == "none":
        quantization = None
    kernel = None
    if quantization == "fp8":
        kernel = "w8a8" if rule.fp8_native else "marlin"
    return EngineProfile(gpu.name, rule.generation, act, quantization, kv, kernel)


def profile_of_model(
    model: str,
    gpu: GpuType,
    *,
    dtype: str | None = None,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
) -> EngineProfile:
    """resolve_profile for a model named as workloads and settings name it (short name, HF id
    or local dir)."""
    from .fit import model_spec

    spec = model_spec(model)
    return resolve_profile(
        model,
        spec.quantization,
        gpu,
        dtype=dtype,
        quantization=quantization,
        kv_cache_dtype=kv_cache_dtype,
    )

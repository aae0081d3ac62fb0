"""Engine profiles: every catalog GPU x the three R1 sizes, and the refusals (no silent
fallback). The expected rows are vLLM 0.32's own capability checks (see engine_profiles)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
from r1platform.config import ModelSettings
from r1platform.pools.catalog import load_catalog
from r1platform.pools.engine_profiles import (
    CAPABILITY_RULES,
    EngineProfileError,
    resolve_profile,
    rule_for,
)
from r1platform.pools.fit import model_spec
from r1platform.serving.engine_args import profile_args

CAT = load_catalog()
MODELS = ("deepseek-r1", "r1-distill-qwen-7b", "r1-distill-llama-70b")
# Located without importing it (the import pulls in torch and takes seconds).
VLLM = Path(next(iter(importlib.util.find_spec("vllm").submodule_search_locations)))

# What each generation runs, written from the statement of vLLM's rules:
# (dtype, fp8 kernel for the FP8 R1 checkpoint, default quantization for a 16-bit checkpoint)
EXPECTED = {
    "Hopper": ("bfloat16", "w8a8", "fp8"),
    "Ada": ("bfloat16", "w8a8", "fp8"),
    "Ampere": ("bfloat16", "marlin", None),
    "Turing": ("float16", "marlin", None),
    "Volta": ("float16", None, None),  # None kernel: R1's FP8 checkpoint is refused
}
GENERATION = {
    "H200": "Hopper",
    "H100": "Hopper",
    "H800": "Hopper",
    "H20": "Hopper",
    "L40S": "Ada",
    "L4": "Ada",
    "A100-80G": "Ampere",
    "A100-40G": "Ampere",
    "A10G": "Ampere",
    "T4": "Turing",
    "V100-32G": "Volta",
    "V100-16G": "Volta",
}


def test_every_catalog_gpu_has_a_capability_and_a_generation():
    assert sorted(GENERATION) == CAT.names()
    for gpu in CAT.types():
        assert rule_for(gpu).generation == GENERATION[gpu.name], gpu.name


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("gpu", sorted(GENERATION))
def test_default_profile_per_gpu_and_model(gpu, model):
    dtype, r1_kernel, distill_quant = EXPECTED[GENERATION[gpu]]
    spec = model_spec(model)
    if spec.quantization == "fp8" and r1_kernel is None:
        with pytest.raises(EngineProfileError, match=r"FP8 checkpoint.*>= 7\.5") as e:
            resolve_profile(model, spec.quantization, CAT[gpu])
        assert gpu in str(e.value) and "7" in str(e.value)
        return
    p = resolve_profile(model, spec.quantization, CAT[gpu])
    assert p.dtype == dtype
    assert p.kv_cache_dtype == "auto"
    if spec.quantization == "fp8":
        assert (p.quantization, p.fp8_kernel) == ("fp8", r1_kernel)
    else:
        assert p.quantization == distill_quant
        assert p.fp8_kernel == (r1_kernel if distill_quant else None)


@pytest.mark.parametrize("gpu", ["V100-32G", "T4"])
def test_bf16_is_refused_below_ampere(gpu):
    with pytest.raises(EngineProfileError, match=r"bfloat16 needs compute capability >= 8\.0"):
        resolve_profile("r1-distill-qwen-7b", "", CAT[gpu], dtype="bfloat16")


@pytest.mark.parametrize(
    ("gpu", "kwargs", "match"),
    [
        ("V100-32G", {"quantization": "fp8"}, "FP8 weights"),
        ("A100-80G", {"kv_cache_dtype": "fp8"}, "kv_cache_dtype fp8 needs native FP8"),
        ("H100", {"dtype": "float32"}, "not float32"),
    ],
)
def test_explicit_choices_the_gpu_cannot_run_are_refused(gpu, kwargs, match):
    with pytest.raises(EngineProfileError, match=match):
        resolve_profile("r1-distill-qwen-7b", "", CAT[gpu], **kwargs)


def test_explicit_choices_that_run_are_kept():
    p = resolve_profile("r1-distill-qwen-7b", "", CAT["A100-80G"], quantization="fp8")
    assert (p.quantization, p.fp8_kernel, p.dtype) == ("fp8", "marlin", "bfloat16")
    p = resolve_profile("r1-distill-qwen-7b", "", CAT["H100"], quantization="none")
    assert p.quantization is None
    with pytest.raises(EngineProfileError, match="checkpoint is FP8"):
        resolve_profile("deepseek-r1", "fp8", CAT["H100"], quantization="none")


def test_a_user_gpu_without_capability_is_refused_not_guessed():
    cat = CAT.with_overrides(
        {
            "X1": {
                "memory_gb": 10,
                "hbm_bandwidth_gbs": 100,
                "bf16_tflops": 10,
                "nvlink": False,
                "nvlink_gbs": 0,
                "cost_per_gpu_hour": 1,
            }
        }
    )
    with pytest.raises(EngineProfileError, match="no compute_capability"):
        resolve_profile("r1-distill-qwen-7b", "", cat["X1"])


def _int_return(path: Path, func: str) -> int:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == func:
            ret = next(n for n in ast.walk(node) if isinstance(n, ast.Return))
            return ast.literal_eval(ret.value)
    raise AssertionError(f"{func} not found in {path}")


def test_table_matches_vllm_source():
    """The thresholds are read from the installed vLLM, not restated from memory."""
    fp8_min = _int_return(VLLM / "model_executor/layers/quantization/fp8.py", "get_min_capability")
    marlin = (VLLM / "model_executor/layers/quantization/utils/marlin_utils_fp8.py").read_text()
    cuda = (VLLM / "platforms/cuda.py").read_text()
    assert fp8_min == 75
    assert (
        "def is_fp8_marlin_supported():\n    return current_platform.has_device_capability(75)"
        in (marlin)
    )
    assert "def supports_fp8(cls) -> bool:\n        return cls.has_device_capability(89)" in cuda
    assert "if not cls.has_device_capability(80):" in cuda  # bf16 check
    by_gen = {r.generation: r for r in CAPABILITY_RULES}
    for r in CAPABILITY_RULES:
        assert r.fp8_weights == (r.min_cc * 10 >= fp8_min)
        assert r.fp8_native == (r.min_cc * 10 >= 89)
        assert r.bf16 == (r.min_cc * 10 >= 80)
    assert by_gen["Volta"].fp8_weights is False


def test_settings_refuse_r1_on_v100_and_engine_args_apply_the_profile():
    with pytest.raises(ValueError, match="cannot run its FP8 checkpoint on V100-32G"):
        ModelSettings(path="deepseek-ai/DeepSeek-R1", accelerator_type="V100-32G")
    ms = ModelSettings(path="deepseek-ai/DeepSeek-R1", accelerator_type="H100")
    assert profile_args(ms, "H100") == {
        "dtype": "bfloat16",
        "quantization": "fp8",
        "kv_cache_dtype": "auto",
    }
    ms = ModelSettings(path="DEEPSEEK-AI/deepseek-r1-distill-qwen-7b", accelerator_type="V100-32G")
    assert ms.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert profile_args(ms, "V100-32G")["dtype"] == "float16"


def test_cpu_keeps_the_cpu_dtype_even_on_a_simulated_gpu_pool():
    ms = ModelSettings(accelerator_type="L4")  # the tiny model on a simulated L4 pool
    assert profile_args(ms, None) == {
        "dtype": "float32",
        "quantization": None,
        "kv_cache_dtype": "auto",
    }

"""Model sizing: weight bytes, KV bytes per token, the smallest TP x PP that fits a GPU type,
and a first-principles throughput estimate (decode bounded by HBM bandwidth, prefill by compute).

Everything here is pure arithmetic on a `ModelSpec`, which comes from a local HF config.json or
from the built-in table of the R1 family (each entry is the published config.json, abridged).
Measured profiles (bench output) override the estimate.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import GpuType
from .errors import FitError, PoolsConfigError
from .model_configs import ALIASES, BUILTIN_CONFIGS, HF_IDS, SHORT_NAMES, V3_HF_ID

TP_CHOICES = (1, 2, 4, 8)
# vLLM's --gpu-memory-utilization default, and what its profiler keeps back for activations,
# CUDA graphs and the NCCL workspace (observed ~1 GB for 7-70B models).
MEM_UTIL = 0.90
RUNTIME_OVERHEAD_BYTES = 1.0e9
# Achieved fraction of peak: decode reaches ~60% of HBM bandwidth and prefill ~50% MFU in vLLM
# on Hopper/Ampere (vLLM and SGLang published benchmark reports sit in 50-70% / 40-60%).
BW_EFFICIENCY = 0.60
FLOPS_EFFICIENCY = 0.50
# Plan replicas to this utilisation so queueing keeps p99 TTFT inside the SLO.
TARGET_UTILISATION = 0.85
# p99 decode step is slower than the mean because prefill chunks interleave with decode.
TPOT_P99_FACTOR = 1.25
PCIE_GBS = 25.0  # effective PCIe 4.0 x16 all-reduce bandwidth between GPUs without NVLink

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: float  # total parameters
    active_params: float  # parameters touched per token (MoE: shared + top-k experts)
    weight_bytes: float
    kv_bytes_per_token: float  # all layers, one replica, bf16 cache
    kv_heads: int | None  # None: MLA latent cache, replicated on every TP rank
    attention_heads: int
    layers: int
    hidden: int
    max_context: int
    experts: int = 0
    experts_per_token: int = 0
    routed_expert_bytes: float = 0.0
    quantization: str = ""  # the checkpoint's quant_method ("fp8" for R1/V3), "" for 16-bit


def _dense_mlp(h: int, inter: int) -> int:
    return 3 * h * inter  # gate, up, down projections (SwiGLU)


def spec_from_hf_config(cfg: Mapping[str, Any], name: str = "model") -> ModelSpec:
    """ModelSpec from a HF config.json dict (Llama/Qwen2/Mistral-style GQA or DeepSeek MLA/MoE)."""
    try:
        return _spec(cfg, name)
    except KeyError as e:
        raise PoolsConfigError(f"model {name!r}: config.json lacks {e.args[0]!r}") from None


def _spec(cfg: Mapping[str, Any], name: str) -> ModelSpec:
    h, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    vocab = cfg["vocab_size"]
    dtype_bytes = _DTYPE_BYTES.get(str(cfg.get("torch_dtype", "bfloat16")).replace("torch.", ""), 2)
    quant = (cfg.get("quantization_config") or {}).get("quant_method", "")
    # FP8 checkpoints (DeepSeek's block FP8, compressed-tensors fp8) store linear layers in 1 byte;
    # embeddings, lm_head and norms stay 16-bit. Block scales (1 fp32 per 128x128) add 0.02%.
    linear_bytes = 1 if "fp8" in str(quant).lower() else dtype_bytes
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)

    if "kv_lora_rank" in cfg:  # DeepSeek MLA + MoE
        q_rank, kv_rank = cfg.get("q_lora_rank"), cfg["kv_lora_rank"]
        rope, nope, v_hd = cfg["qk_rope_head_dim"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
        q = h * q_rank + q_rank * heads * (nope + rope) if q_rank else h * heads * (nope + rope)
        attn = q + h * (kv_rank + rope) + kv_rank * heads * (nope + v_hd) + heads * v_hd * h
        n_dense = cfg.get("first_k_dense_replace", 0)
        n_moe = layers - n_dense
        expert = _dense_mlp(h, cfg["moe_intermediate_size"])
        experts, topk = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        shared = cfg.get("n_shared_experts", 0) * expert
        gate = h * experts
        routed = n_moe * experts * expert
        linear = (
            attn * layers
            + n_dense * _dense_mlp(h, cfg["intermediate_size"])
            + n_moe * (shared + gate)
            + routed
        )
        active_linear = linear - routed + n_moe * topk * expert
        # MLA caches the compressed latent plus the shared RoPE key: (kv_lora_rank +
        # qk_rope_head_dim) values per layer per token (DeepSeek-V2 paper, sec. 2.1).
        kv = (kv_rank + rope) * layers * 2
        kv_heads = None
        routed_bytes = routed * linear_bytes
    else:
        kv_heads = cfg.get("num_key_value_heads", heads)
        hd = cfg.get("head_dim") or h // heads
        bias = (heads + 2 * kv_heads) * hd if cfg.get("model_type") == "qwen2" else 0
        attn = h * heads * hd + 2 * h * kv_heads * hd + heads * hd * h + bias
        linear = layers * (attn + _dense_mlp(h, cfg["intermediate_size"]))
        active_linear = linear
        kv = 2 * kv_heads * hd * layers * 2  # K and V, bf16
        experts = topk = 0
        routed_bytes = 0.0
    norms = layers * 2 * h + h
    params = linear + embed + norms
    # The lm_head matmul runs per token; the embedding lookup does not.
    active = active_linear + vocab * h
    weight_bytes = linear * linear_bytes + (embed + norms) * max(dtype_bytes, 2)
    return ModelSpec(
        name=name,
        params=float(params),
        active_params=float(active),
        weight_bytes=float(weight_bytes),
        kv_bytes_per_token=float(kv),
        kv_heads=kv_heads,
        attention_heads=heads,
        layers=layers,
        hidden=h,
        max_context=int(cfg.get("max_position_embeddings", 4096)),
        experts=experts,
        experts_per_token=topk,
        routed_expert_bytes=float(routed_bytes),
        quantization=str(quant).lower(),
    )


def builtin_models() -> list[str]:
    return sorted(BUILTIN_CONFIGS)


def builtin_key(model: str) -> str | None:
    """The built-in key of a short name or HF id (any case), or None."""
    key = ALIASES.get(model.strip().lower(), model.strip().lower())
    return key if key in BUILTIN_CONFIGS else None


def hf_id(model: str) -> str | None:
    """The Hugging Face repo a built-in name stands for (None for the tiny model or a path)."""
    if ALIASES.get(model.strip().lower()) == "deepseek-r1" and "v3" in model.lower():
        return V3_HF_ID
    key = builtin_key(model)
    return HF_IDS.get(key) if key else None


def known_model_names() -> list[str]:
    """Every spelling messages offer: short names and HF ids as their repos spell them."""
    return sorted({*BUILTIN_CONFIGS, *SHORT_NAMES, *HF_IDS.values(), V3_HF_ID})


def unknown_model_error(model: str) -> PoolsConfigError:
    """`unknown model X`, with the close matches among short names and HF ids (difflib)."""
    names = known_model_names()
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(model.lower(), list(by_lower), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(by_lower[c] for c in close)}?" if close else ""
    return PoolsConfigError(
        f"unknown model {model!r}: not a built-in short name or HF id of the R1 family, and "
        f"no directory with a config.json at that path{hint} "
        f"(built-ins: {', '.join(builtin_models())})"
    )


def model_spec(model: str) -> ModelSpec:
    """A built-in short name or HF id (case-insensitive), a directory with config.json, or a
    path to a config.json."""
    key = builtin_key(model)
    if key is not None:
        return spec_from_hf_config(BUILTIN_CONFIGS[key], key)
    path = Path(model).expanduser()
    cfg_path = path / "config.json" if path.is_dir() else path
    if cfg_path.name.endswith(".json") and cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise PoolsConfigError(f"model {model!r}: config.json is not JSON: {e.msg}") from None
        return spec_from_hf_config(cfg, path.name if path.is_dir() else model)
    raise unknown_model_error(model)


@dataclass(frozen=True)
class Fit:
    gpu: str
    tp: int
    pp: int
    weight_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    kv_tokens: int  # KV tokens one replica can hold after weights

    @property
    def gpus(self) -> int:
        return self.tp * self.pp


def usable_bytes(gpu: GpuType) -> float:
    return gpu.memory_bytes * MEM_UTIL - RUNTIME_OVERHEAD_BYTES


def kv_per_gpu(spec: ModelSpec, tp: int, pp: int) -> float:
    """Per-GPU KV bytes per token: layers split by PP; heads split by TP only as far as there
    are KV heads (vLLM replicates heads beyond that); an MLA latent is replicated on every rank."""
    shard = 1 if spec.kv_heads is None else min(tp, spec.kv_heads)
    return spec.kv_bytes_per_token / pp / shard


def fit_on(spec: ModelSpec, tp: int, pp: int, gpu: GpuType, kv_tokens_needed: int) -> Fit | None:
    if spec.attention_heads % tp:
        return None  # vLLM requires heads divisible by TP
    free = usable_bytes(gpu) - spec.weight_bytes / (tp * pp)
    kv_gpu = kv_per_gpu(spec, tp, pp)
    if free <= 0 or free < kv_gpu * kv_tokens_needed:
        return None
    return Fit(gpu.name, tp, pp, spec.weight_bytes / (tp * pp), kv_gpu, int(free / kv_gpu))


def tp_choices(gpus_per_node: int, spec: ModelSpec | None = None) -> list[int]:
    """TP sizes that divide a node evenly (so replicas pack exactly) and the head count."""
    return [
        t
        for t in TP_CHOICES
        if t <= gpus_per_node
        and gpus_per_node % t == 0
        and (spec is None or spec.attention_heads % t == 0)
    ]


def smallest_fit(
    spec: ModelSpec, gpu: GpuType, gpus_per_node: int, max_nodes: int, kv_tokens_needed: int
) -> Fit | None:
    """Smallest TP (within a node) with PP=1; else a full-node TP and the fewest PP stages,
    one node each (PP crosses nodes, TP never does)."""
    tps = tp_choices(gpus_per_node, spec)
    for tp in tps:
        f = fit_on(spec, tp, 1, gpu, kv_tokens_needed)
        if f:
            return f
    if not tps or tps[-1] != gpus_per_node:
        return None
    for pp in range(2, max(max_nodes, 1) + 1):
        f = fit_on(spec, tps[-1], pp, gpu, kv_tokens_needed)
        if f:
            return f
    return None


def fits(
    spec: ModelSpec, gpu: GpuType, gpus_per_node: int, max_nodes: int, kv_tokens_needed: int
) -> list[Fit]:
    """Every valid (TP, PP) layout for one replica, smallest first: the planner weighs them."""
    out = []
    for tp in tp_choices(gpus_per_node, spec):
        f = fit_on(spec, tp, 1, gpu, kv_tokens_needed)
        if f:
            out.append(f)
    if not out:
        f = smallest_fit(spec, gpu, gpus_per_node, max_nodes, kv_tokens_needed)
        if f:
            out.append(f)
    return out


@dataclass(frozen=True)
class Slo:
    ttft_p99_s: float
    tpot_p99_s: float


@dataclass(frozen=True)
class Throughput:
    capacity_rps: float  # requests/s one replica sustains within the SLO (at target utilisation)
    batch: int  # concurrent sequences
    tpot_s: float  # modelled p99 time per output token at that batch
    prefill_s: float  # prefill latency of an average prompt
    source: str  # "estimate" or "profile"


def _weights_read(spec: ModelSpec, tokens: float) -> float:
    """Bytes of weights one decode step reads. MoE: every shared byte, plus the routed experts
    hit by at least one of `tokens` tokens: E * (1 - (1 - k/E)^tokens) of E experts."""
    if not spec.experts:
        return spec.weight_bytes
    hit = 1.0 - (1.0 - spec.experts_per_token / spec.experts) ** max(tokens, 1.0)
    return spec.weight_bytes - spec.routed_expert_bytes * (1.0 - hit)


def decode_step_s(spec: ModelSpec, gpu: GpuType, fit: Fit, batch: int, ctx: float) -> float:
    """Seconds per output token for a sequence when `batch` sequences decode together.

    PP runs pp micro-batches of batch/pp through pp stages, so a token waits for all stages
    while each stage only reads its 1/pp of weights: step = pp x stage time.
    """
    micro = max(batch / fit.pp, 1.0)
    bw = gpu.hbm_bandwidth_gbs * 1e9 * BW_EFFICIENCY
    mem = _weights_read(spec, micro) / fit.gpus + micro * ctx * fit.kv_bytes_per_token_per_gpu
    flops = gpu.bf16_tflops * 1e12 * FLOPS_EFFICIENCY
    compute = 2 * spec.active_params * micro / fit.gpus / flops
    comm = 0.0
    if fit.tp > 1:
        # Two all-reduces of the hidden state per layer (attention out, MLP out), ring algorithm.
        link = (gpu.nvlink_gbs / 2 if gpu.nvlink else PCIE_GBS) * 1e9
        vol = 2 * (fit.tp - 1) / fit.tp * micro * spec.hidden * 2
        comm = 2 * spec.layers / fit.pp * vol / link
    return fit.pp * (max(mem / bw, compute) + comm)


def prefill_s(spec: ModelSpec, gpu: GpuType, fit: Fit, tokens: float) -> float:
    """Latency of one prompt's prefill: compute bound, stages run one after another."""
    return 2 * spec.active_params * tokens / fit.tp / (gpu.bf16_tflops * 1e12 * FLOPS_EFFICIENCY)


def estimate(
    spec: ModelSpec,
    gpu: GpuType,
    fit: Fit,
    avg_input_tokens: float,
    avg_output_tokens: float,
    slo: Slo,
    profile_rps: float | None = None,
) -> Throughput | None:
    """Sustainable requests/s of one replica under the SLO, or None if the SLO is unreachable.

    A replica spends, per request, out x step/batch seconds of decode slot time plus the prefill
    (which occupies the whole replica for its compute share, chunked or not). The batch is the
    largest one whose p99 step stays within the TPOT SLO and whose KV fits.
    """
    seq = avg_input_tokens + avg_output_tokens
    ctx = avg_input_tokens + avg_output_tokens / 2
    pre = prefill_s(spec, gpu, fit, avg_input_tokens)
    # Half the TTFT budget goes to prefill; the rest is left for queueing at target utilisation.
    if pre > slo.ttft_p99_s / 2:
        return None
    if profile_rps is not None:
        return Throughput(profile_rps, 0, 0.0, pre, "profile")
    max_batch = min(int(fit.kv_tokens // max(seq, 1.0)), 1024)
    if max_batch < 1:
        return None

    def ok(b: int) -> bool:
        return decode_step_s(spec, gpu, fit, b, ctx) * TPOT_P99_FACTOR <= slo.tpot_p99_s

    if not ok(1):
        return None
    lo, hi = 1, max_batch  # step time grows with batch: the largest feasible batch by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    step = decode_step_s(spec, gpu, fit, lo, ctx)
    occupancy = pre / fit.pp  # pipelined prefill: each stage is busy for 1/pp of it
    per_request = avg_output_tokens * step / lo + occupancy
    rps = TARGET_UTILISATION / per_request
    return Throughput(rps, lo, step * TPOT_P99_FACTOR, pre, "estimate")


def require_fit(spec: ModelSpec, candidates: list[tuple[str, GpuType, int, int]], kv_tokens: int):
    """Raise FitError naming the model and the biggest pool when no candidate pool fits it."""
    for _name, gpu, gpn, nodes in candidates:
        if smallest_fit(spec, gpu, gpn, nodes, kv_tokens):
            return
    need = spec.weight_bytes + spec.kv_bytes_per_token * kv_tokens
    biggest = max(
        ((usable_bytes(g) * gpn * n, name) for name, g, gpn, n in candidates),
        default=(0.0, "none"),
    )
    raise FitError(
        f"model {spec.name!r} fits on no pool: needs ~{need / 1e9:,.0f} GB "
        f"(weights {spec.weight_bytes / 1e9:,.0f} GB + KV), largest pool {biggest[1]!r} "
        f"offers {biggest[0] / 1e9:,.0f} GB usable"
    )


def ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b - 1e-9)

"""Seeded synthetic fleets and workloads for benchmarks, the simulator and scale tests."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

from .catalog import Catalog, load_catalog
from .fit import builtin_models
from .fleet import Fleet, Pool
from .workloads import GpuRange, ServingWorkload, SizeClass, SloSpec, TrainingJob, Workloads

# Share of a mixed fleet per type, roughly what a large multi-generation cloud account holds.
MIX = {
    "H200": 0.10,
    "H100": 0.25,
    "A100-80G": 0.20,
    "A100-40G": 0.10,
    "L40S": 0.10,
    "A10G": 0.08,
    "L4": 0.10,
    "T4": 0.07,
}
NODE_GPUS = {"A10G": 4, "L4": 4, "T4": 4, "L40S": 4}
SERVING_MODELS = [m for m in builtin_models() if m != "tiny-r1"]
# Request-size buckets per dimension (quantile shares): most requests short, a long tail.
SIZE_BUCKETS = (0.6, 0.3, 0.1)


def lognormal_buckets(
    mean: float, sigma: float, shares: tuple[float, ...] = SIZE_BUCKETS
) -> list[tuple[float, float]]:
    """(share, conditional mean) of consecutive quantile buckets of a log-normal with the given
    mean and log-space sigma; the shares-weighted means add back up to `mean` exactly.

    E[X | a < Z < b] = e^(mu + s^2/2) (Phi(b - s) - Phi(a - s)) / (Phi(b) - Phi(a))."""
    n = NormalDist()
    if sigma <= 0:
        return [(1.0, mean)]
    total = sum(shares)
    out, lo = [], 0.0
    for sh in shares:
        hi = min(lo + sh / total, 1.0)
        a = n.inv_cdf(lo) if lo > 0 else -math.inf
        b = n.inv_cdf(hi) if hi < 1 - 1e-12 else math.inf

        def phi(z: float) -> float:
            return 0.0 if z == -math.inf else 1.0 if z == math.inf else n.cdf(z)

        out.append((sh / total, mean * (phi(b - sigma) - phi(a - sigma)) / (hi - lo)))
        lo = hi
    return out


def size_mix(
    avg_input: float,
    avg_output: float,
    sigma_input: float,
    sigma_output: float,
    shares: tuple[float, ...] = SIZE_BUCKETS,
) -> list[SizeClass]:
    """Request-size classes for a deployment: input and output lengths independent log-normals
    around the averages (LLM traces are heavy-tailed; the Azure LLM inference trace shows
    log-normal-like context and generated lengths with weak correlation between them)."""
    return [
        SizeClass(
            share=si * so,
            input_tokens=max(round(mi), 1),
            output_tokens=max(round(mo), 1),
        )
        for si, mi in lognormal_buckets(avg_input, sigma_input, shares)
        for so, mo in lognormal_buckets(avg_output, sigma_output, shares)
    ]


def fleet(
    n_gpus: int,
    *,
    mix: dict[str, float] | None = None,
    pools_per_type: int = 1,
    catalog: Catalog | None = None,
) -> Fleet:
    """A fleet of about n_gpus GPUs split by `mix`, node sizes as sold (8, or 4 for PCIe cards)."""
    catalog = catalog or load_catalog()
    pools = []
    for gpu, share in (mix or MIX).items():
        gpn = NODE_GPUS.get(gpu, 8)
        nodes = max(round(n_gpus * share / gpn / pools_per_type), 1)
        for k in range(pools_per_type):
            name = gpu.lower() + (f"-{k}" if pools_per_type > 1 else "")
            pools.append(Pool(name=name, gpu=gpu, nodes=nodes, gpus_per_node=gpn, max_nodes=nodes))
    return Fleet(pools=pools, catalog=catalog)


def workloads(
    n_deployments: int,
    *,
    seed: int,
    total_gpus: int,
    n_jobs: int = 0,
    load: float = 0.5,
    size_sigma: tuple[float, float] | None = None,
) -> Workloads:
    """n deployments over the R1 family with log-uniform rates, scaled so serving needs about
    `load` of the fleet at the cheapest placement (estimated at 1 GPU-dollar per rps).
    `size_sigma` = (input, output) log-space spread gives every deployment a request-size mix
    around its averages (None: every request at the averages)."""
    rng = random.Random(seed)
    serving = []
    for i in range(n_deployments):
        model = (
            SERVING_MODELS[i % len(SERVING_MODELS)]
            if i < len(SERVING_MODELS)
            else rng.choice(SERVING_MODELS)
        )
        big = model in ("deepseek-r1", "r1-distill-llama-70b", "r1-distill-qwen-32b")
        serving.append(
            ServingWorkload(
                name=f"d{i:03d}-{model}",
                model=model,
                request_rate=round(
                    10 ** rng.uniform(-0.5, 1.3)
                    * (0.3 if big else 1.0)
                    * total_gpus
                    / max(n_deployments, 1)
                    * load
                    / 4,
                    3,
                ),
                avg_input_tokens=rng.choice([200, 500, 1000, 2000]),
                avg_output_tokens=rng.choice([300, 800, 1500, 3000]),
                slo=SloSpec(
                    ttft_p99_s=rng.choice([1.0, 2.0, 5.0]),
                    tpot_p99_s=rng.choice([0.05, 0.08, 0.1, 0.15]),
                ),
            )
        )
        if size_sigma is not None:
            w = serving[-1]
            serving[-1] = w.model_copy(
                update={"size_mix": size_mix(w.avg_input_tokens, w.avg_output_tokens, *size_sigma)}
            )
    jobs = [
        TrainingJob(
            name=f"job{k:02d}",
            model=rng.choice(["r1-distill-qwen-7b", "r1-distill-qwen-1.5b", "r1-distill-llama-8b"]),
            gpus=GpuRange(min=8, max=rng.choice([64, 128, 256])),
            priority=rng.choice([1, 5, 10]),
        )
        for k in range(n_jobs)
    ]
    return Workloads(serving=serving, training=jobs)

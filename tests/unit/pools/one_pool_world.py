"""The small world the controller tests share: one 16-GPU H100 pool, one chat deployment and one
GRPO job that may borrow 2-16 GPUs, and a clock the test moves by hand."""

from __future__ import annotations

from r1platform.pools.catalog import load_catalog
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.workloads import GpuRange, ServingWorkload, SloSpec, TrainingJob, Workloads


def h100_fleet() -> Fleet:
    return Fleet(
        pools=[Pool(name="h100", gpu="H100", nodes=2, gpus_per_node=8)], catalog=load_catalog()
    )


def chat(rate: float = 1.0, tpot_p99_s: float = 0.03) -> ServingWorkload:
    """A chat deployment of the 7B distill: 500 tokens in, 800 out, a 2 s TTFT p99."""
    return ServingWorkload(
        name="chat",
        model="r1-distill-qwen-7b",
        request_rate=rate,
        avg_input_tokens=500,
        avg_output_tokens=800,
        slo=SloSpec(ttft_p99_s=2.0, tpot_p99_s=tpot_p99_s),
    )


def chat_and_grpo(rate: float = 1.0, priority: int | None = None) -> Workloads:
    job = {"priority": priority} if priority is not None else {}
    return Workloads(
        serving=[chat(rate)],
        training=[
            TrainingJob(
                name="grpo", model="r1-distill-qwen-7b", gpus=GpuRange(min=2, max=16), **job
            )
        ],
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

"""The planner's training memory model reads the mode the trainer will run (training.fsdp's
own rule on each pool's GPU), and a planned job always gets enough GPUs to fit in it."""

from __future__ import annotations

import pytest
from r1platform.pools import fit as fitmod
from r1platform.pools import training_memory as tm
from r1platform.pools.catalog import load_catalog
from r1platform.pools.fleet import Fleet, Pool
from r1platform.pools.plan_model import PlanRequest
from r1platform.pools.planner import plan
from r1platform.pools.workloads import GpuRange, TrainingJob, Workloads
from r1platform.training.fsdp import TrainMode

CAT = load_catalog()
MODELS = ("r1-distill-qwen-1.5b", "r1-distill-qwen-7b", "r1-distill-llama-70b")


def _job(model="r1-distill-qwen-7b", lo=1, hi=64, **kw) -> TrainingJob:
    return TrainingJob(name="j", model=model, gpus=GpuRange(min=lo, max=hi), **kw)


@pytest.mark.parametrize("gpu", CAT.names())
def test_mode_is_the_trainers_rule_on_each_catalog_gpu(gpu):
    g = CAT[gpu]
    bf16 = g.compute_capability >= 8.0  # vLLM's and torch's bf16 line
    assert tm.job_mode(_job(), g) == TrainMode("fsdp", "bf16" if bf16 else "fp32")
    assert tm.job_mode(_job(parallel_strategy="ddp"), g) == TrainMode("ddp", "fp32")


def test_bytes_per_gpu_by_mode():
    spec = fitmod.model_spec("r1-distill-qwen-7b")
    p = spec.params
    ddp = tm.bytes_per_gpu(spec, TrainMode("ddp", "fp32"), 8, reference=False)
    assert ddp == p * 20  # fp32 weights, grads, DDP buckets, AdamW m and v: on every GPU
    assert tm.bytes_per_gpu(spec, TrainMode("ddp", "fp32"), 1, reference=False) == ddp
    assert tm.bytes_per_gpu(spec, TrainMode("ddp", "fp32"), 8, reference=True) == p * 24
    bf16 = [tm.bytes_per_gpu(spec, TrainMode("fsdp", "bf16"), n, reference=False) for n in (1, 8)]
    # Sharded 16 B/param, plus the gathered bf16 copy for the push and two unsharded blocks.
    assert bf16[1] == pytest.approx(p * 16 / 8 + p * 2 + 2 * p / spec.layers * 2 * 2)
    assert bf16[0] > bf16[1]
    fp32 = tm.bytes_per_gpu(spec, TrainMode("fsdp", "fp32"), 8, reference=False)
    assert fp32 > bf16[1]  # fp32 compute: a larger gathered copy and working set


@pytest.mark.parametrize("gpu", CAT.names())
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("strategy", ["auto", "ddp"])
def test_min_gpus_is_the_fewest_that_fit(gpu, model, strategy):
    job = _job(model, lo=1, hi=256, parallel_strategy=strategy)
    g = CAT[gpu]
    n = tm.min_gpus(job, g)
    spec, mode = fitmod.model_spec(model), tm.job_mode(job, g)
    usable = fitmod.usable_bytes(g)
    need = [tm.bytes_per_gpu(spec, mode, k, reference=False) for k in range(1, 257)]
    if n is None:
        assert min(need) > usable
    else:
        assert need[n - 1] <= usable and all(x > usable for x in need[: n - 1])


def test_ddp_7b_fits_no_catalog_gpu_and_fsdp_does():
    for g in CAT.types():
        assert tm.min_gpus(_job(parallel_strategy="ddp"), g) is None  # 7.6 B x 20 B > 141 GB
    assert tm.min_gpus(_job(), CAT["H100"]) == 3
    assert tm.min_gpus(_job(lo=4), CAT["H100"]) == 4  # never below the job's own minimum


def _planned(job: TrainingJob, pools: list[Pool]) -> dict[str, int]:
    p = plan(PlanRequest(Fleet(pools=pools, catalog=CAT), Workloads(training=[job])))
    return p.training_gpus()


def test_a_planned_job_always_fits_in_its_mode():
    h100 = Pool(name="h100", gpu="H100", nodes=1, gpus_per_node=8)
    # The old check kept a pool when the job's max fitted, then granted its min: 1 GPU.
    got = _planned(_job(lo=1, hi=8), [h100])
    assert got["j"] >= tm.min_gpus(_job(lo=1, hi=8), CAT["H100"])
    spec = fitmod.model_spec("r1-distill-qwen-7b")
    assert tm.bytes_per_gpu(
        spec, TrainMode("fsdp", "bf16"), got["j"], reference=False
    ) <= fitmod.usable_bytes(CAT["H100"])
    # Two GPUs are too few for the 7B job in any mode: it is not planned there at all.
    small = Pool(name="h100", gpu="H100", nodes=1, gpus_per_node=2)
    assert "j" not in _planned(_job(lo=1, hi=2), [small])
    # The same job pinned to DDP is planned nowhere; a 1.5B DDP job fits one GPU.
    assert "j" not in _planned(_job(lo=1, hi=8, parallel_strategy="ddp"), [h100])
    assert _planned(_job("r1-distill-qwen-1.5b", hi=1, parallel_strategy="ddp"), [h100]) == {"j": 1}

"""GRPO under FSDP2 (torch fully_shard) on two real Ray Train workers (gloo), against DDP.

The same seeded job runs twice, once per memory mode, on one local Ray with real vLLM CPU
engines (hybrid: one inside each worker). Identical weights and seeds draw identical first
rollouts, so the step-1 loss of the two modes must agree to float noise; later steps agree
within a looser tolerance (a one-ulp weight difference may flip a sampled token). The FSDP run must also leave the engines on the
trainer's weights (its all-gather is what they load) and write the same servable checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
STEPS = 2
JOB = dict(  # two workers, small quick steps: 4 prompts x G=4, 24 new tokens, no eval between
    num_workers=2, prompts_per_step=4, group_size=4, max_new_tokens=24, eval_size=8,
    eval_every=100, save_every=100, max_failures=0, max_steps=STEPS, seed=3,
    colocate=True,  # hybrid: every rank gathers the full weights for its own engine
    precision="fp32",  # FSDP against DDP in the same precision (auto is bf16 on AMX CPUs)
    rollout_compile=False,  # eager engines: 2-step jobs (the compiled default: test_grpo_job)
)  # fmt: skip


def _run(tmp: Path, **kw) -> tuple[dict, list[dict], float]:
    from r1platform.training.job import run
    from r1platform.training.settings import parse_settings

    t0 = time.perf_counter()
    res = run(parse_settings(None, output_dir=str(tmp), **{**JOB, **kw}))
    rows = [json.loads(x) for x in (tmp / "metrics.jsonl").read_text().splitlines()]
    return res, rows, time.perf_counter() - t0


def _weights(ck: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ck / "model.safetensors"))


def test_fsdp_two_workers_match_ddp(ray_local, tmp_path: Path):
    ddp_res, ddp, ddp_s = _run(tmp_path / "ddp", run_name="ddp", parallel_strategy="ddp")
    fsdp_res, fs, fsdp_s = _run(tmp_path / "fsdp", run_name="fsdp", parallel_strategy="fsdp")
    print(f"\nwall: ddp {ddp_s:.1f}s fsdp {fsdp_s:.1f}s")
    for a, b in zip(ddp[1:], fs[1:], strict=True):
        print(
            f"step {a['step']}: loss ddp {a['loss']:.6f} fsdp {b['loss']:.6f} | grad_norm "
            f"{a['grad_norm']:.5f} {b['grad_norm']:.5f} | sync ddp {a['weight_sync_s']:.3f}s "
            f"fsdp {b['weight_sync_s']:.3f}s (gather {b['weight_gather_s']:.4f}s)"
        )
    assert ddp_res["status"] == fsdp_res["status"] == "SUCCEEDED", (ddp_res, fsdp_res)
    assert [r["step"] for r in fs] == [r["step"] for r in ddp] == list(range(STEPS + 1))

    # Same first rollout -> the same loss and gradient up to the reduction order.
    first_d, first_f = ddp[1], fs[1]
    assert first_f["reward_mean"] == first_d["reward_mean"]
    assert first_f["loss"] == pytest.approx(first_d["loss"], rel=1e-4, abs=1e-6)
    assert first_f["grad_norm"] == pytest.approx(first_d["grad_norm"], rel=1e-3)
    for a, b in zip(ddp[2:], fs[2:], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05, abs=1e-3), a["step"]

    # The engines serve the gathered weights: their log-probs are the trainer's.
    assert all(r["logprob_diff"] < 1e-4 for r in fs[1:])
    # The gather is measured beside the sync (and is part of it); DDP has none.
    assert all(0 < r["weight_gather_s"] <= r["weight_sync_s"] for r in fs)
    assert not any("weight_gather_s" in r for r in ddp)

    # Both write the same servable HF checkpoint (tensor names, shapes, values up to noise).
    wd, wf = _weights(Path(ddp_res["checkpoint"])), _weights(Path(fsdp_res["checkpoint"]))
    assert wd.keys() == wf.keys()
    for name, t in wd.items():
        assert wf[name].shape == t.shape and wf[name].dtype == t.dtype, name
        assert (wf[name] - t).abs().max() < 1e-3, name

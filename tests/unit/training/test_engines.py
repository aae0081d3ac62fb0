"""The engine handles (training/engines.py) as far as no engine and no GPU allow.

The hybrid GPU path (vLLM sleep mode on the worker's GPU) cannot run on this CPU-only
machine: its call sequence is checked here, each call bound against the real `vllm.LLM`
method of vLLM 0.32, so a renamed method or argument fails this test. It has not run on a
GPU. The CPU path runs for real in tests/integration/test_grpo_job.py (hybrid variants).
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from r1platform.training import engines, rollout
from r1platform.training.settings import GRPOSettingsError, parse_settings
from r1platform.training.steptime import PHASES, Reporter, StepTimer, breakdown
from tiny_qwen import tiny_qwen
from vllm import LLM
from vllm.device_allocator import DEFERRABLE_TAGS
from vllm.engine.arg_utils import EngineArgs


@pytest.fixture(autouse=True)
def _restore_vllm_env(monkeypatch):
    # LocalEngine sets the env its in-process engine reads; give it back after each test.
    for key in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)


class RecordingLLM:
    """Stands in for `vllm.LLM`: records each call as (method, args, kwargs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return [] if name == "generate" else None

        return call

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def _local(gpu: bool) -> tuple[engines.LocalEngine, RecordingLLM, torch.nn.Module]:
    llm, model = RecordingLLM(), tiny_qwen()
    cfg = rollout.EngineConfig(model="unused")
    eng = engines.LocalEngine(cfg, model, gpu=gpu, sleep_level=2, llm=llm)
    llm.calls.clear()  # the constructor's transfer-engine init is checked elsewhere
    return eng, llm, model


def _bind_all_to_vllm(calls: list[tuple[str, tuple, dict]]) -> None:
    for name, args, kwargs in calls:
        method = getattr(LLM, name)  # AttributeError: vLLM has no such method
        inspect.signature(method).bind(object(), *args, **kwargs)  # TypeError: bad arguments


def test_gpu_hybrid_sleeps_for_the_update_and_wakes_weights_before_kv_cache():
    eng, llm, model = _local(gpu=True)
    eng.release()
    eng.sync("7")
    assert llm.names() == [
        "sleep",
        "wake_up",
        "start_weight_update",
        "update_weights",
        "finish_weight_update",
        "reset_prefix_cache",  # cached KV came from the old weights
        "wake_up",
        "update_weight_version",
    ]
    assert llm.calls[0][2] == {"level": 2}
    assert llm.calls[1][2] == {"tags": ["weights"]} and llm.calls[6][2] == {"tags": ["kv_cache"]}
    assert {"weights", "kv_cache"} <= set(DEFERRABLE_TAGS)  # the tags vLLM 0.32 knows
    info = llm.calls[3][1][0]["update_info"]
    # In-process: the trainer's own tensors, no copy and no serialisation.
    params = dict(model.named_parameters())
    assert info["names"] == list(params)
    assert all(
        t.data_ptr() == params[n].data_ptr()
        for n, t in zip(info["names"], info["tensors"], strict=True)
    )
    assert eng.engine.version == "7" and not eng.asleep
    _bind_all_to_vllm(llm.calls)
    # The engine is built with sleep mode on (an EngineArgs field of vLLM 0.32) and the
    # in-process hand-over backend.
    assert eng.engine.cfg.extra == {"enable_sleep_mode": True}
    assert "enable_sleep_mode" in {f.name for f in dataclasses.fields(EngineArgs)}
    assert eng.engine.cfg.backend == rollout.CPU_BACKEND


def test_gpu_hybrid_skipped_update_wakes_everything_before_the_next_rollout():
    eng, llm, _ = _local(gpu=True)
    eng.release()
    eng.generate([[1, 2]], n=2, temperature=1.0, max_tokens=4)
    assert llm.names() == ["sleep", "wake_up", "generate"]
    assert llm.calls[1][1:] == ((), {})  # all tags
    _bind_all_to_vllm(llm.calls)


def test_cpu_hybrid_never_sleeps():
    eng, llm, _ = _local(gpu=False)
    eng.release()
    eng.sync("1")
    assert "sleep" not in llm.names() and "wake_up" not in llm.names()
    _bind_all_to_vllm(llm.calls)


def test_restarted_engine_refuses_a_rollout_for_newer_weights():
    llm = RecordingLLM()
    eng = rollout.RolloutEngine.wrap(rollout.EngineConfig(model="unused"), llm)
    with pytest.raises(rollout.StaleEngine, match="version 0, the trainer expects 5"):
        eng.generate([[1]], n=1, temperature=1.0, max_tokens=2, version="5")
    assert llm.calls == []
    eng.generate([[1]], n=1, temperature=1.0, max_tokens=2, version="0")
    assert llm.names() == ["generate"]


def test_remote_engines_non_sender_records_the_expected_version():
    remote = engines.RemoteEngines([], "r1p_cpu", tiny_qwen(), sender=False)
    assert remote.version is None and remote.sync("4") == 0.0 and remote.version == "4"


def test_engine_actors_restart_and_do_not_retry_calls():
    opts = rollout.engine_actor_options(
        mode="simulated", num_cpus=0.25, accelerator_type=None, pool=None, kv_cache_gib=1
    )
    assert opts["max_restarts"] == rollout.ENGINE_RESTARTS > 0
    assert "max_task_retries" not in opts  # a retried call would run on the base weights


def test_hybrid_is_the_cpu_default_and_excludes_a_rollout_pool():
    s = parse_settings(None)
    assert s.colocated("simulated") and not s.colocated("gpu")
    assert not parse_settings(None, rollout_pool="h100").colocated("simulated")
    assert parse_settings(None, colocate=True).colocated("gpu")
    with pytest.raises(GRPOSettingsError, match="colocate"):
        parse_settings(None, colocate=True, rollout_pool="h100")


def test_step_timer_shares_and_the_breakdown():
    t = StepTimer(carried_report_s=1.0)
    t.spent.update(rollout=5.0, backward=3.0, sync=1.0)
    rec = t.record(step_s=10.0)  # 11 s with the carried report
    assert set(rec) == {f"timing/{p}_s" for p in PHASES} | {
        "timing/other_s",
        "timing/overhead_frac",
    }
    assert rec["timing/other_s"] == pytest.approx(1.0)
    assert rec["timing/overhead_frac"] == pytest.approx(3 / 11)
    rows = [{"step": 0}, {**rec, "step": 1}, {**rec, "step": 2, "eval_accuracy": 0.5}]
    shares = breakdown(rows)
    assert shares["rollout"] == pytest.approx(5 / 11) and sum(shares.values()) == pytest.approx(1)


def test_reporter_runs_in_order_and_surfaces_errors():
    seen: list[int] = []
    r = Reporter()
    for i in range(20):
        r.submit(lambda i=i: seen.append(i))
    r.flush()
    assert seen == list(range(20))

    def boom() -> None:
        raise OSError("disk full")

    r.submit(boom)
    with pytest.raises(OSError, match="disk full"):
        r.flush()

"""The trainer's memory mode (training/fsdp.py): what `auto` resolves to on each device, the
combinations refused with a clear line, the DDP side of weight sync, and the rollout engine's
dtype / enforce_eager taken from serving's engine profile."""

from __future__ import annotations

import pytest
import torch
from r1platform.training import fsdp, rollout
from r1platform.training.fsdp import TrainMode, TrainModeError, resolve_mode
from r1platform.training.settings import GRPOSettingsError, parse_settings


@pytest.mark.parametrize(
    ("strategy", "precision", "on_gpu", "bf16_ok", "want"),
    [
        ("auto", "auto", False, True, TrainMode("ddp", "fp32")),  # CPU: fp32 DDP
        ("auto", "auto", True, True, TrainMode("fsdp", "bf16")),  # Ampere and newer
        ("auto", "auto", True, False, TrainMode("fsdp", "fp32")),  # Volta / Turing: no bf16
        ("fsdp", "auto", False, True, TrainMode("fsdp", "fp32")),  # the CPU test path
        ("fsdp", "bf16", False, True, TrainMode("fsdp", "bf16")),
        ("auto", "bf16", False, True, TrainMode("fsdp", "bf16")),  # bf16 implies sharding
        ("ddp", "auto", True, True, TrainMode("ddp", "fp32")),
        ("ddp", "fp32", True, True, TrainMode("ddp", "fp32")),
    ],
)
def test_auto_resolves_per_device(strategy, precision, on_gpu, bf16_ok, want):
    assert resolve_mode(strategy, precision, on_gpu=on_gpu, bf16_ok=bf16_ok) == want


@pytest.mark.parametrize(
    ("strategy", "precision", "want"),
    [
        ("auto", "auto", TrainMode("fsdp", "bf16")),  # AMX: bf16 compute, hence sharding
        ("fsdp", "auto", TrainMode("fsdp", "bf16")),
        ("ddp", "auto", TrainMode("ddp", "fp32")),  # DDP keeps the model in fp32
        ("auto", "fp32", TrainMode("ddp", "fp32")),  # an explicit fp32 is kept
    ],
)
def test_auto_is_bf16_on_a_cpu_with_amx(strategy, precision, want):
    got = resolve_mode(strategy, precision, on_gpu=False, bf16_ok=True, cpu_bf16_fast=True)
    assert got == want
    # A GPU ignores the CPU's AMX: its own bf16 support decides.
    assert resolve_mode("auto", "auto", on_gpu=True, bf16_ok=False, cpu_bf16_fast=True) == (
        TrainMode("fsdp", "fp32")
    )


def test_worker_mode_reads_amx_from_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fsdp, "cpu_bf16_fast", lambda: True)
    assert fsdp.worker_mode("auto", "auto") == TrainMode("fsdp", "bf16")
    monkeypatch.setattr(fsdp, "cpu_bf16_fast", lambda: False)
    assert fsdp.worker_mode("auto", "auto") == TrainMode("ddp", "fp32")


@pytest.mark.parametrize(
    ("strategy", "precision", "bf16_ok", "needle"),
    [
        ("ddp", "bf16", True, "needs parallel_strategy fsdp"),
        ("fsdp", "bf16", False, "no bfloat16"),
        ("auto", "bf16", False, "no bfloat16"),
    ],
)
def test_impossible_combinations_are_refused(strategy, precision, bf16_ok, needle):
    with pytest.raises(TrainModeError, match=needle):
        resolve_mode(strategy, precision, on_gpu=True, bf16_ok=bf16_ok)


def test_settings_take_the_mode_and_refuse_ddp_bf16():
    s = parse_settings(["--parallel_strategy", "fsdp", "--precision", "bf16"])
    assert (s.parallel_strategy, s.precision) == ("fsdp", "bf16")
    assert (parse_settings(None).parallel_strategy, parse_settings(None).precision) == (
        "auto",
        "auto",
    )
    with pytest.raises(GRPOSettingsError, match="precision bf16 needs parallel_strategy fsdp"):
        parse_settings(["--parallel_strategy", "ddp", "--precision", "bf16"])
    with pytest.raises(GRPOSettingsError, match="parallel_strategy"):
        parse_settings(["--parallel_strategy", "zero3"])


def test_ddp_weights_are_the_live_parameters_and_record_no_gather():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    ddp_like = torch.nn.Module()
    ddp_like.module = model  # what DistributedDataParallel exposes
    w = fsdp.SyncWeights(ddp_like, TrainMode("ddp", "fp32"))
    assert not w.sharded
    assert w.gather(everywhere=False) == 0.0
    assert w.record() == {}
    got = dict(w.module.named_parameters())
    assert got.keys() == dict(model.named_parameters()).keys()
    assert all(got[n] is p for n, p in model.named_parameters())  # no copy under DDP
    # The rollout side reads it through the same WeightSource as before.
    src = rollout._NamedParams(w)
    assert [n for n, _ in src] == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_unsharded_checkpoint_views_are_the_objects_themselves():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    assert fsdp.checkpoint_views(model, opt) == (model, opt)


@pytest.mark.parametrize(
    ("amx", "strategy", "precision", "dtype"),
    [
        (False, "auto", "auto", "float32"),
        (True, "auto", "auto", "bfloat16"),  # the trainer's compute dtype on an AMX CPU
        (True, "auto", "fp32", "float32"),
        (True, "ddp", "auto", "float32"),
        (False, "fsdp", "bf16", "bfloat16"),  # an explicit bf16 trainer: the engine follows
    ],
)
def test_rollout_engine_on_cpu_compiles_in_the_trainers_dtype(
    monkeypatch, tmp_path, amx, strategy, precision, dtype
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fsdp, "cpu_bf16_fast", lambda: amx)
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    assert rollout.rollout_engine_args(str(tmp_path), None, strategy, precision) == {
        "dtype": dtype,
        "enforce_eager": False,  # vLLM's default: compiled, unlike serving's eager engines
    }
    eager = rollout.rollout_engine_args(str(tmp_path), None, strategy, precision, compile=False)
    assert eager == {"dtype": dtype, "enforce_eager": True}


@pytest.mark.parametrize(
    ("gpu", "dtype"),
    [("H100", "bfloat16"), ("A100-80G", "bfloat16"), ("L4", "bfloat16"), ("V100-32G", "float16")],
)
def test_rollout_engine_on_gpu_follows_the_serving_profile(monkeypatch, gpu, dtype):
    from r1platform.config import ModelSettings
    from r1platform.serving.engine_args import profile_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    args = rollout.rollout_engine_args(model, gpu)
    serving = ModelSettings(path=model, quantization="none")
    # Serving's own profile for this GPU, without FP8 (the rollout reloads 16-bit weights).
    # CUDA graphs on (enforce_eager False): a rollout engine decodes every step of the job.
    assert args == {"dtype": profile_args(serving, gpu)["dtype"], "enforce_eager": False}
    assert args["dtype"] == dtype

"""Rollout placement and the weight-sync plumbing, as far as no engine and no GPU allow.

The real engine round trip (engines serve the trainer's weights) is in
tests/integration/test_grpo_weight_sync.py.
"""

from __future__ import annotations

import torch
from r1platform.training import rollout
from tiny_qwen import tiny_qwen


def test_simulated_placement_uses_pool_or_accelerator_units():
    opts = rollout.engine_actor_options(
        mode="simulated", num_cpus=0.25, accelerator_type="L4", pool=None, kv_cache_gib=1
    )
    assert opts["resources"] == {"accelerator_type:L4": 1.0}
    assert "num_gpus" not in opts
    env = opts["runtime_env"]["env_vars"]
    # In-process engine core: the r1p_cpu backend registration must be visible to the worker.
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    pinned = rollout.engine_actor_options(
        mode="simulated", num_cpus=0.25, accelerator_type="L4", pool="l4-pool", kv_cache_gib=1
    )
    assert pinned["resources"] == {"pool:l4-pool": 1.0}


def test_gpu_placement_asks_for_a_gpu_of_the_type():
    opts = rollout.engine_actor_options(
        mode="gpu", num_cpus=1, accelerator_type="H100", pool="h100", kv_cache_gib=1
    )
    assert opts["num_gpus"] == 1 and opts["accelerator_type"] == "H100"
    assert opts["resources"] == {"pool:h100": 0.001}
    assert "VLLM_CPU_KVCACHE_SPACE" not in opts["runtime_env"]["env_vars"]


def test_backend_choice():
    assert rollout.sync_backend("auto", "gpu") == "nccl"
    assert rollout.sync_backend("auto", "simulated") == rollout.CPU_BACKEND
    assert rollout.detect_mode({"CPU": 2.0}) == "simulated"
    assert rollout.detect_mode({"CPU": 2.0, "GPU": 8.0}) == "gpu"


def test_weight_source_matches_module_and_strips_ddp_prefix():
    model = tiny_qwen()
    wrapped = torch.nn.Module()
    wrapped.module = model  # what DDP looks like to the source
    src = rollout.weight_source(wrapped)
    meta = src.metadata()
    names = [n for n, _ in model.named_parameters()]
    assert [m.name for m in meta] == names
    assert all(not n.startswith("module.") for n in names)
    pairs = list(src)
    assert [n for n, _ in pairs] == names
    # vLLM's per-group batching checks iteration order against metadata; it must agree.
    assert sum(len(n) for n, _ in src.iter_groups()) == len(names)


def test_nccl_plan_gives_each_engine_its_own_group():
    infos = rollout.nccl_init_infos(3, master_address="10.0.0.1", tp_size=2, ports=[1, 2, 3])
    assert [i.master_port for i in infos] == [1, 2, 3]
    assert all(i.world_size == 3 and i.rank == 0 and i.is_sender for i in infos)
    assert all(i.backend == "nccl" for i in infos)


def test_nccl_update_info_is_built_from_our_source():
    # The per-round payload vLLM's NCCL trainer sends is derived from metadata(); check that
    # our source yields exactly what the worker will size its receive buffers from.
    from dataclasses import asdict

    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferUpdateInfo

    src = rollout.weight_source(tiny_qwen())
    meta = src.metadata()
    info = NCCLWeightTransferUpdateInfo(
        names=[m.name for m in meta],
        dtype_names=[str(m.dtype).split(".")[-1] for m in meta],
        shapes=[list(m.shape) for m in meta],
    )
    assert set(asdict(info)["dtype_names"]) == {"float32"}
    assert [tuple(s) for s in info.shapes] == [tuple(t.shape) for _, t in src]


class _RecordingClient:
    """A VLLMWeightSyncClient that records the control-plane calls (no engine here)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def init_weight_transfer_engine(self, init_info):
        self.calls.append(("init", init_info))

    def start_weight_update(self):
        self.calls.append(("start", None))

    def update_weights(self, update_info):
        self.calls.append(("update", update_info))

    def finish_weight_update(self, weight_version=None):
        self.calls.append(("finish", weight_version))


def test_cpu_trainer_engine_drives_the_vllm_handshake(monkeypatch):
    import ray
    from vllm.distributed.weight_transfer import (
        VLLMWeightSyncClient,
        WeightTransferTrainerFactory,
    )

    rollout.register_cpu_backend()
    rollout.register_cpu_backend()  # idempotent
    puts: list[object] = []
    monkeypatch.setattr(ray, "put", lambda obj: puts.append(obj) or "ref")
    client = _RecordingClient()
    assert isinstance(client, VLLMWeightSyncClient)
    model = tiny_qwen()
    init = WeightTransferTrainerFactory._registry[rollout.CPU_BACKEND]().init_info(rank=0)
    engine = WeightTransferTrainerFactory.trainer_init(
        init, client=client, source=rollout.weight_source(model)
    )
    engine.send_weights()
    kinds = [k for k, _ in client.calls]
    assert kinds == ["init", "start", "update", "finish"]
    update = client.calls[2][1]
    assert update["tensors_ref"] == "ref"
    assert update["names"] == [n for n, _ in model.named_parameters()]
    assert len(puts) == 1  # one object-store copy for every engine


def test_non_sender_rank_never_touches_the_client():
    from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

    rollout.register_cpu_backend()
    client = _RecordingClient()
    init = WeightTransferTrainerFactory._registry[rollout.CPU_BACKEND]().init_info(rank=1)
    engine = WeightTransferTrainerFactory.trainer_init(
        init, client=client, source=rollout.weight_source(tiny_qwen())
    )
    engine.send_weights()
    assert client.calls == []


def test_cpu_worker_engine_loads_weights_through_load_weights():
    rollout.register_cpu_backend()
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    cls = WeightTransferEngineFactory._registry[rollout.CPU_BACKEND]()
    engine = cls.__new__(cls)
    loaded: list[tuple[str, torch.Tensor]] = []

    class _Model:
        def load_weights(self, weights):
            loaded.extend(weights)

    engine.model = _Model()
    t = torch.ones(2)
    engine.update_weights({"names": ["a"], "tensors": [t]})
    assert loaded == [("a", t)]

"""The "r1p_cpu" weight-transfer backend for vLLM 0.32 on CPU.

NCCL does not exist on CPU and vLLM's IPC backend needs CUDA IPC, so the tensors ride the Ray
object store (put once, read by every engine) and reach the worker through `collective_rpc`
in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, which also means the backend registration
below is visible to the worker). The engine side loads them under vLLM's layerwise reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

CPU_BACKEND = "r1p_cpu"
LAYERWISE_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
UNLOADED_WARNING = "%s: Failed to load weights"


@dataclass
class CPUWeightTransferInitInfo:
    """Nothing to rendezvous: the object store is the transport."""


@dataclass
class CPUWeightTransferUpdateInfo:
    names: list[str]
    tensors: list[torch.Tensor]


def _refresh_cpu_gemms(model: torch.nn.Module) -> int:
    """Re-pack CPU GEMMs that kept their weight (tied lm_head).

    vLLM's CPU linear methods pre-pack each weight once after loading. Layerwise reload
    re-processes the layers it reloads, but a tied `lm_head` is never loaded itself (it shares
    `embed_tokens.weight`), so its packed copy would keep serving the *old* embedding: the
    output log-probs then drift from the trainer's (seen here: 0.03 nats after one update).
    """
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    n = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        is_packed = hasattr(module, "cpu_linear") and weight is not None and weight.dim() == 2
        if is_packed and weight.numel():
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            n += 1
    return n


class ExpectedUnloaded(logging.Filter):
    """Drops vLLM's "<layer>: Failed to load weights" for layers that a trainer's state dict
    has no tensors for by design, so every sync does not log them again (one line per layer
    per step flooded the job log): rotary embeddings (their cos/sin cache is computed, not
    trained) and, when the embeddings are tied, the lm_head (it is `embed_tokens.weight`,
    which is loaded). Any other layer that loaded nothing is still reported."""

    def __init__(self, tied_embeddings: bool):
        super().__init__()
        self.tied_embeddings = tied_embeddings
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != UNLOADED_WARNING or not record.args:
            return True
        layer = str(record.args[0])
        expected = layer.endswith("RotaryEmbedding") or (
            self.tied_embeddings and layer == "ParallelLMHead"
        )
        self.dropped += expected
        return not expected


def finalize_quietly(finalize: Any, model: torch.nn.Module, model_config: Any) -> int:
    """`finalize(model, model_config)` with ExpectedUnloaded on vLLM's layerwise logger;
    returns how many expected warnings it dropped."""
    hf = getattr(model_config, "hf_config", None)
    quiet = ExpectedUnloaded(bool(getattr(hf, "tie_word_embeddings", False)))
    log = logging.getLogger(LAYERWISE_LOGGER)
    log.addFilter(quiet)
    try:
        finalize(model, model_config)
    finally:
        log.removeFilter(quiet)
    return quiet.dropped


def _cpu_engine_cls() -> type:
    from vllm.distributed.weight_transfer.base import WeightTransferEngine

    class CPUWeightTransferEngine(WeightTransferEngine):  # type: ignore[type-arg]
        init_info_cls = CPUWeightTransferInitInfo
        update_info_cls = CPUWeightTransferUpdateInfo
        supports_draft_weight_update = False

        def init_transfer_engine(self, init_info: Any) -> None:
            pass

        def start_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

            initialize_layerwise_reload(self.model)

        def update_weights(self, update_info: dict[str, Any]) -> None:
            # The base class ends with torch.accelerator.synchronize(); there is none on CPU.
            self.receive_weights(self.parse_update_info(update_info))

        def receive_weights(self, update_info: Any) -> None:
            self.model.load_weights(list(zip(update_info.names, update_info.tensors, strict=True)))

        def finish_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

            finalize_quietly(finalize_layerwise_reload, self.model, self.model_config)
            _refresh_cpu_gemms(self.model)

        def shutdown(self) -> None:
            pass

    return CPUWeightTransferEngine


def register_cpu_backend() -> None:
    """Idempotent: register the worker-side and trainer-side "r1p_cpu" engines with vLLM."""
    from vllm.distributed.weight_transfer.factory import (
        WeightTransferEngineFactory,
        WeightTransferTrainerFactory,
    )

    if CPU_BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(CPU_BACKEND, _cpu_engine_cls())
    if CPU_BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(CPU_BACKEND, _cpu_trainer_cls())


def _cpu_trainer_cls() -> type:
    from vllm.distributed.weight_transfer.base import TrainerInitInfo, TrainerWeightTransferEngine

    @dataclass
    class CPUTrainerInitInfo(TrainerInitInfo):
        backend: ClassVar[str] = CPU_BACKEND

    class CPUTrainerWeightTransferEngine(TrainerWeightTransferEngine):  # type: ignore[type-arg]
        init_info_cls = CPUTrainerInitInfo

        @classmethod
        def trainer_init(cls, init_info: Any, *, client: Any, source: Any = None) -> Any:
            engine = cls(client=client, source=source, is_sender=init_info.is_sender)
            if engine.is_sender:
                client.init_weight_transfer_engine({})
            return engine

        def send_weights(self) -> None:
            import ray

            pairs = [(n, t.detach().contiguous()) for n, t in self.source]
            if not self.is_sender:
                return
            # One object-store copy shared by every engine instead of one pickle per engine.
            ref = ray.put([t for _, t in pairs])
            self.client.start_weight_update()
            self.client.update_weights({"names": [n for n, _ in pairs], "tensors_ref": ref})
            self.client.finish_weight_update()

    CPUTrainerWeightTransferEngine.init_info = CPUTrainerInitInfo  # type: ignore[attr-defined]
    return CPUTrainerWeightTransferEngine

"""vLLM's CPU worker, fixed for later pipeline stages in eager mode (vLLM 0.32).

A stage after the first receives the previous stage's hidden states into buffers that the
model runner allocates in its warm-up forward pass (`gpu_model_runner._dummy_run`). The CPU
worker skips that pass when the model runs eagerly with an explicit KV cache size
(`cpu_worker.CPUWorker._should_warm_up_model`, and `cpu_model_runner.warming_up_model` returns
at once in CompilationMode.NONE), which is how the platform runs CPU engines
(`enforce_eager`, VLLM_CPU_KVCACHE_SPACE). The first request then fails on
`assert self.intermediate_tensors is not None`
(`gpu_model_runner.sync_and_gather_intermediate_tensors`) and the engine dies. This worker
allocates the buffers right after loading the model, exactly as the warm-up pass would.
Only CPU engines with pipeline stages use it (`engine_args`, by `worker_cls`).
"""

from __future__ import annotations

from typing import Any

from vllm.distributed import get_pp_group
from vllm.v1.worker.cpu_worker import CPUWorker

WORKER_CLS = "r1platform.serving.cpu_pipeline.PipelineCPUWorker"


class PipelineCPUWorker(CPUWorker):
    def load_model(self, *args: Any, **kwargs: Any) -> None:
        super().load_model(*args, **kwargs)
        runner = self.model_runner
        if not get_pp_group().is_first_rank and runner.intermediate_tensors is None:
            runner.intermediate_tensors = runner.model.make_empty_intermediate_tensors(
                batch_size=runner.max_num_tokens,
                dtype=runner.model_config.dtype,
                device=runner.device,
            )

"""Where a worker's rollouts run, behind one handle: the step loop never asks which.

- **hybrid** (`LocalEngine`, `--colocate`): vLLM's `LLM` lives in the Ray Train worker process
  itself, its engine core in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), one per rank. The
  weight sync hands the worker's own parameter tensors to `model.load_weights` through vLLM's
  weight-transfer API in the same process: no copy to another process, no serialisation.
  On a GPU it shares the worker's GPU through vLLM's sleep mode: `sleep(level)` before the
  update frees the KV cache (and the weights, at level 2), then `wake_up(tags=["weights"])`,
  the load, `wake_up(tags=["kv_cache"])`. That GPU sequence is unit-tested against vLLM 0.32's
  signatures only: it has not run on a GPU here.
- **disaggregated** (`RemoteEngines`): engines in their own Ray actors, possibly on another
  pool; rank 0 pushes the weights to all of them (rollout.WeightSync) and every rank spreads
  its prompts over them.

On a worker's CPU the two alternate (generate, then train), so in-process both get every core
and no step pays a cross-process hop; that is why hybrid is the CPU default (settings).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch

from r1platform.training.cpu_weight_transfer import CPU_BACKEND, register_cpu_backend
from r1platform.training.rollout import (
    EngineConfig,
    RolloutEngine,
    Sample,
    WeightSync,
    generate_groups,
    weight_source,
)

SleepLevel = int  # vLLM: 1 offloads weights to CPU, 2 discards them (we reload them anyway)


class EngineHandle(Protocol):
    """What the step loop needs from wherever rollouts run."""

    # True: every rank syncs its own engine; False: rank 0 pushes to shared engines.
    syncs_on_every_rank: bool

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seeds: Sequence[int] | None = None,
        logprobs: bool = True,
    ) -> list[list[Sample]]: ...

    def release(self) -> None:
        """The update is about to need the device: free what the engine holds on it."""

    def sync(self, version: str) -> float:
        """Load the trainer's current weights, tag them `version`; seconds taken."""
        ...


class RemoteEngines:
    """Engines in Ray actors. Only the sender (rank 0) holds a `WeightSync`; every rank
    records the version it expects, and an engine that serves another one (restarted after
    a crash, so back on the base weights) refuses the rollout instead of serving it."""

    syncs_on_every_rank = False

    def __init__(
        self, handles: Sequence[Any], backend: str, model: torch.nn.Module, *, sender: bool
    ) -> None:
        self.handles = list(handles)
        self._push = WeightSync(self.handles, backend, model) if sender else None
        self.version: str | None = None

    def generate(self, prompts: Sequence[Sequence[int]], **kw: Any) -> list[list[Sample]]:
        return generate_groups(self.handles, prompts, version=self.version, **kw)

    def release(self) -> None:
        return None  # the engines have devices of their own

    def sync(self, version: str) -> float:
        secs = self._push.push(version) if self._push is not None else 0.0
        self.version = version
        return secs


class LocalEngine:
    """vLLM in this process, loaded from `cfg.model`; `sync` loads the live `model`'s tensors.

    `gpu`: enable vLLM's sleep mode and sleep at `sleep_level` in `release()`."""

    syncs_on_every_rank = True

    def __init__(
        self,
        cfg: EngineConfig,
        model: torch.nn.Module,
        *,
        gpu: bool,
        sleep_level: SleepLevel = 2,
        kv_cache_gib: int = 1,
        llm: Any = None,
    ) -> None:
        # Read by vLLM when the engine starts: the engine core must be in this process (the
        # backend registration and the tensors are only visible here).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not gpu:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        register_cpu_backend()  # the in-process hand-over backend, on CPU and GPU alike
        extra = {**cfg.extra, "enable_sleep_mode": True} if gpu else cfg.extra
        cfg = replace(cfg, backend=CPU_BACKEND, extra=extra)
        # vLLM seeds torch's global RNG on start (cpu_worker/gpu_worker set_random_seed): keep
        # the trainer's stream as it was, so hybrid and disaggregated runs draw the same.
        rng = torch.get_rng_state()
        self.engine = RolloutEngine(cfg) if llm is None else RolloutEngine.wrap(cfg, llm)
        torch.set_rng_state(rng)
        self.engine.init_weight_transfer_engine({"init_info": {}})
        self.source = weight_source(model)
        self.gpu, self.sleep_level = gpu, sleep_level
        self.asleep = False

    @property
    def llm(self) -> Any:
        return self.engine.llm

    def generate(self, prompts: Sequence[Sequence[int]], **kw: Any) -> list[list[Sample]]:
        if self.asleep:  # an update was skipped (non-finite loss): the old weights serve
            self.llm.wake_up()
            self.asleep = False
        return self.engine.generate(prompts, **kw)

    def release(self) -> None:
        if self.gpu and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True

    def sync(self, version: str) -> float:
        t0 = time.perf_counter()
        if self.asleep:
            self.llm.wake_up(tags=["weights"])  # the weights' memory, before loading into it
        pairs = list(self.source)
        self.engine.start_weight_update()
        self.llm.update_weights(
            {"update_info": {"names": [n for n, _ in pairs], "tensors": [t for _, t in pairs]}}
        )
        self.engine.finish_weight_update()
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.engine.update_weight_version(version)
        return time.perf_counter() - t0


def local_engine(model_path: str, model: torch.nn.Module | None = None, **cfg: Any) -> LocalEngine:
    """The hybrid rollout engine outside a job, for benches: `local_engine(path).generate(...)`
    is exactly the call a hybrid step makes (compare it with `.llm.generate`)."""
    if model is None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    return LocalEngine(EngineConfig(model=model_path, **cfg), model, gpu=torch.cuda.is_available())

"""Which vLLM engine arguments a model's `engine_extra` may set, read from vLLM's own source.

The names are the fields of vLLM's `AsyncEngineArgs` dataclass (its `EngineArgs` fields plus
its own). They are read from `vllm/engine/arg_utils.py` with `ast` rather than by importing it:
the import pulls in torch and takes seconds, and settings are loaded by every CLI command and
by the chart tests. A unit test checks this list against the imported dataclass.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from functools import cache
from pathlib import Path

ENGINE_CLASSES = ("EngineArgs", "AsyncEngineArgs")

# Engine arguments the platform sets itself, and where a user sets them instead.
OWNED_ENGINE_ARGS: dict[str, str] = {
    "model": "use the model's `path` field",
    "served_model_name": "the served name is the model's id (its key under `models`)",
    "max_model_len": "use the model's `max_model_len` field",
    "tensor_parallel_size": "use the model's `tensor_parallel_size` field",
    "dtype": "use the model's `dtype` field",
    "quantization": "use the model's `quantization` field",
    "kv_cache_dtype": "use the model's `kv_cache_dtype` field",
    "gpu_memory_utilization": "use the model's `gpu_memory_utilization` field",
    "max_num_seqs": "use the model's `max_num_seqs` field",
    "enforce_eager": "use the model's `enforce_eager` field",
    "seed": "use the model's `seed` field",
    "reasoning_parser": "use the model's `reasoning_parser` field",
    "stream_interval": "use the model's `stream_interval` field",
    "distributed_executor_backend": "the platform picks it (Ray on GPUs, multiprocessing on CPU)",
    "nnodes": "the replica sets it from where its placement group put the pipeline stages",
    "node_rank": "the replica sets it from where its placement group put the pipeline stages",
    "master_addr": "the replica sets it from where its placement group put the pipeline stages",
    "master_port": "the replica sets it from where its placement group put the pipeline stages",
    "disable_log_stats": "the platform exports its own serving metrics",
    "pipeline_parallel_size": "use the model's `pipeline_parallel_size` field",
}


def _arg_utils_path() -> Path:
    spec = importlib.util.find_spec("vllm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("vLLM is not installed; engine_extra cannot be checked")
    return Path(next(iter(spec.submodule_search_locations))) / "engine" / "arg_utils.py"


def _is_classvar(annotation: ast.expr) -> bool:
    text = ast.unparse(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


@cache
def engine_arg_names() -> frozenset[str]:
    """Field names of vLLM's AsyncEngineArgs (dataclass fields are the annotated class-body
    assignments of it and its EngineArgs base)."""
    tree = ast.parse(_arg_utils_path().read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in ENGINE_CLASSES:
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and not _is_classvar(stmt.annotation)
                ):
                    names.add(stmt.target.id)
    if "model" not in names:
        raise RuntimeError(f"could not read EngineArgs fields from {_arg_utils_path()}")
    return frozenset(names)


def engine_extra_problem(key: str) -> str | None:
    """Why `key` may not go in engine_extra, or None when it may."""
    if key in OWNED_ENGINE_ARGS:
        return f"'{key}' is set by the platform: {OWNED_ENGINE_ARGS[key]}"
    names = engine_arg_names()
    if key.startswith("_") and key in names:
        return f"'{key}' is a private vLLM engine argument"
    if key in names:
        return None
    public = sorted(n for n in names if not n.startswith("_"))
    close = difflib.get_close_matches(key, public, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown vLLM engine argument '{key}'{hint}"

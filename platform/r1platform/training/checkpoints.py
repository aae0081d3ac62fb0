"""Checkpoint I/O: a servable HF model directory plus the trainer state.

Ray Train persists a checkpoint before registering it, and restores its registry from storage
when a run with the same name and storage path starts again; so a checkpoint is complete or
absent, `--resume` is a relaunch with the same name, and `FailureConfig(max_failures)` restarts
workers from the last registered checkpoint.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from r1platform.training.cursor import DataCursor

STATE_FILE = "trainer_state.pt"
MANIFEST = "r1p_checkpoint.json"


class TrainingAborted(RuntimeError):
    """Training stops for good; the message says why and that the last good checkpoint stays."""


def save_checkpoint(
    directory: Path, model: torch.nn.Module, tokenizer: Any, state: dict[str, Any]
) -> Path:
    """A standard HF model dir (config.json, model.safetensors, tokenizer files) plus the
    trainer state and a manifest listing every file with its size, so a reader can tell a
    complete copy from a torn one."""
    directory.mkdir(parents=True, exist_ok=True)
    inner = getattr(model, "module", model)
    inner.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    torch.save(state, directory / STATE_FILE)
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"step": state["step"], "files": files}))
    return directory


def verify_checkpoint(directory: Path) -> bool:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return False
    files = json.loads(manifest.read_text())["files"]
    return all(
        (directory / name).is_file() and (directory / name).stat().st_size == size
        for name, size in files.items()
    )


def load_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / STATE_FILE, weights_only=False)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def trainer_state(
    *,
    step: int,
    updates: int,
    bad_streak: int,
    optimizer: torch.optim.Optimizer,
    cursor: DataCursor,
    rngs: list[dict[str, Any]],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """What `trainer_state.pt` holds; `rngs` has one entry per rank."""
    return {
        "step": step,
        "updates": updates,
        "bad_streak": bad_streak,
        "optimizer": optimizer.state_dict(),
        "data": [cursor.state()],
        "data_layout": "global",
        "rng": rngs,
        "settings": settings,
    }


def restore_position(state: dict[str, Any], cursor: DataCursor, rank: int) -> None:
    """Put the data cursor and this rank's RNG where the checkpoint left them."""
    if state.get("data_layout") != "global" and len(state["data"]) != 1:
        raise TrainingAborted(
            "checkpoint has per-worker data positions (written before elastic training); "
            "resume it with the version that wrote it"
        )
    cursor.epoch, cursor.pos = state["data"][0]["epoch"], state["data"][0]["pos"]
    set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])

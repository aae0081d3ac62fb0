"""Training faults on real Ray Train workers and real vLLM CPU engines (no mocks).

Mid-run, a process is SIGKILLed: a Ray Train worker (hybrid: its in-process engine dies with
it; disaggregated: the engine actor lives on) or, disaggregated, a rollout engine actor. No
one intervenes: the job must finish from its last checkpoint with every step logged exactly
once, no optimizer update lost or repeated, the engines serving the trainer's weights after
every sync, and the held-out accuracy in the range the learning test asks of a clean run.

Long (a 12-step run each, plus the restart): in `make proof`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
STEPS, SAVE_EVERY, KILL_AFTER = 12, 3, 4  # the kill lands after the step-3 checkpoint


def _kill_when(out: Path, pids_file: str, killed: dict) -> None:
    """SIGKILL process "0" of `pids_file` once a step past the first checkpoint is logged."""
    deadline = time.time() + 400
    metrics, pids = out / "metrics.jsonl", out / pids_file
    while time.time() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        steps = [json.loads(x).get("step", -1) for x in lines]
        if steps and max(steps) >= KILL_AFTER and pids.exists():
            pid = json.loads(pids.read_text())["0"]
            os.kill(pid, signal.SIGKILL)
            killed.update(at=max(steps), pid=pid)
            return
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("target", "colocate"),
    [("workers.json", True), ("workers.json", False), ("engines.json", False)],
    ids=["worker-hybrid", "worker-disaggregated", "engine-disaggregated"],
)
def test_killed_process_mid_run_resumes_from_checkpoint(
    ray_local, tmp_path: Path, target: str, colocate: bool
):
    from r1platform.training.job import run
    from r1platform.training.settings import parse_settings

    killed: dict[str, int] = {}
    t = threading.Thread(target=_kill_when, args=(tmp_path, target, killed), daemon=True)
    t.start()
    t0 = time.time()
    # fp32: the sync check below (logprob_diff < 1e-4) is under bf16's noise floor (~1e-3).
    # Eager engines: every restart would compile again (the compiled default: test_grpo_job).
    res = run(parse_settings(None, output_dir=str(tmp_path), max_steps=STEPS, eval_every=6,
                             save_every=SAVE_EVERY, max_failures=2, colocate=colocate,
                             precision="fp32", rollout_compile=False))  # fmt: skip
    wall = time.time() - t0
    t.join(timeout=5)
    assert "at" in killed, f"nothing was killed (no {target})"
    assert res["status"] == "SUCCEEDED", res
    # The killed process was replaced by a new one.
    assert json.loads((tmp_path / target).read_text())["0"] != killed["pid"]
    rows = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())]
    assert [r["step"] for r in rows] == list(range(STEPS + 1))  # none duplicated or lost
    assert [r["weights_version"] for r in rows[1:]] == list(range(1, STEPS + 1))
    assert [r["prompts_seen"] for r in rows] == [16 * r["step"] for r in rows]  # data position
    assert all(r["logprob_diff"] < 1e-4 for r in rows[1:]), [r["logprob_diff"] for r in rows]
    assert Path(res["checkpoint"]).name == f"step_{STEPS:06d}"
    # Accuracy in a clean run's range (test_grpo_job's learning test asks the same lift).
    curve = dict(res["eval_curve"])
    assert curve[STEPS] - curve[0] >= 0.08, curve
    print(f"fault {target} colocate={colocate}: killed at step {killed['at']}, "
          f"wall {wall:.0f}s, eval {curve}")  # fmt: skip

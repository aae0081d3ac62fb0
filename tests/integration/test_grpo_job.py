"""GRPO end to end on real Ray Train workers and real vLLM CPU engines (no mocks).

One local Ray (2 logical CPUs) serves every test here; each test runs the job in-process
through `r1platform.training.job.run`, exactly what `jobs/grpo.py` calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
FAST = dict(  # small, quick steps: 4 prompts x G=4, 32 new tokens
    prompts_per_step=4,
    group_size=4,
    max_new_tokens=32,
    eval_size=16,
    max_failures=0,
    # fp32: the sync checks compare log-probs to 1e-4, below bf16's noise floor (~1e-3). The
    # default mode (bf16 on AMX CPUs) runs in the learning test.
    precision="fp32",
)
# Both engine modes pass the same tests: hybrid (vLLM inside the train worker, the CPU default)
# and disaggregated (vLLM in its own actor).
MODES = pytest.mark.parametrize("colocate", [True, False], ids=["hybrid", "disaggregated"])


def _run(tmp: Path, **kw):
    from r1platform.training.job import run
    from r1platform.training.settings import parse_settings

    return run(parse_settings(None, output_dir=str(tmp), **{**FAST, **kw}))


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _run_cli(tmp: Path, console_log: Path, **kw) -> dict:
    """`python jobs/grpo.py` as a user runs it, joining this module's cluster, with its
    stdout and stderr piped to `console_log`; returns the job's result line."""
    import ray
    from r1platform.training.job import RESULT_MARKER

    flags = [f"--{k}={v}" for k, v in {**FAST, **kw}.items()]
    address = ray.get_runtime_context().gcs_address
    with console_log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "jobs/grpo.py", f"--output_dir={tmp}", f"--ray_address={address}",
             *flags],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=600,
        )  # fmt: skip
    text = console_log.read_text()
    results = [ln.split(RESULT_MARKER, 1)[1] for ln in text.splitlines() if RESULT_MARKER in ln]
    assert proc.returncode == 0 and results, text[-3000:]
    return json.loads(results[-1])


def _assert_console_tells_a_story(text: str, steps: int, out_dir: Path) -> None:
    import re

    lines = text.splitlines()
    assert len(lines) <= 150, f"{len(lines)} console lines"
    vllm_info = re.compile(r"\bINFO \d\d-\d\d \d\d:\d\d:\d\d")  # vLLM's log format
    assert not [ln for ln in lines if vllm_info.search(ln)], "vLLM INFO line on the console"
    assert "Dataset train_" not in text, "Ray Data progress on the console"
    worker_line = re.compile(r"\((\w+ )?pid=\d+\)")  # Ray's prefix for a worker's output
    assert not [ln for ln in lines if worker_line.search(ln)], "worker output on the console"
    for step in range(steps + 1):  # one plain line per step (not a TTY) ...
        assert sum(f"grpo step {step}/{steps} " in ln for ln in lines) == 1, step
    assert "held-out greedy accuracy" in text  # ... and the before/after table
    # The framework logs are not lost: they are in the file the console names.
    log = out_dir / "job.log"
    assert str(log) in text and vllm_info.search(log.read_text())


def test_train_briefly_then_final_checkpoint_serves_in_vllm(ray_local, tmp_path: Path):
    # Run as a user runs it (the CLI, piped to a file), so its console is checked too.
    console_log = tmp_path / "console.txt"
    res = _run_cli(tmp_path, console_log, max_steps=3, eval_every=2, save_every=2)
    assert res["status"] == "SUCCEEDED", res
    _assert_console_tells_a_story(console_log.read_text(), 3, tmp_path)
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert "eval_accuracy" in rows[0] and "eval_accuracy" in rows[2] and "eval_accuracy" in rows[3]
    keys = (
        "rewards/accuracy/mean", "rewards/format/std", "accuracy", "kl", "clip_frac",
        "entropy", "response_length_mean", "response_length_max", "frac_reward_zero_std",
        "rollout_tokens_per_s", "train_tokens_per_s", "weight_sync_s", "step_s",
    )  # fmt: skip
    for key in keys:
        assert key in rows[1], key
    # Weights on the engine == weights in the trainer, measured on the sampled tokens.
    assert all(r["logprob_diff"] < 1e-4 for r in rows[1:])
    ck = Path(res["checkpoint"])
    assert ck.name == "step_000003"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in ck.iterdir()}
    # The final checkpoint is servable as-is by the platform's own serve app.
    _serve_and_chat(ck, tmp_path)


def _serve_and_chat(ck: Path, tmp: Path) -> None:
    import importlib

    import openai
    from r1platform.contracts.net import free_port
    from ray import serve

    cfg = tmp / "serve.yaml"
    cfg.write_text(f"models:\n  tiny-r1-grpo: {{path: {str(ck)!r}, max_model_len: 256}}\n")
    os.environ["R1P_CONFIG"] = str(cfg)
    try:
        port = free_port("127.0.0.1")
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        sys.modules.pop("serve_apps.r1_chat", None)
        app = importlib.import_module("serve_apps.r1_chat").app
        serve.run(app, name="trained", route_prefix="/")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(
            model="tiny-r1-grpo", messages=[{"role": "user", "content": "12+34"}], max_tokens=40
        )
        assert r.usage.completion_tokens > 0
        assert (r.choices[0].message.model_extra or {}).get("reasoning_content")
    finally:
        os.environ.pop("R1P_CONFIG", None)
        serve.shutdown()


def _default_sync_tolerance() -> float:
    """Engine vs trainer log-prob gap allowed in the default mode: float noise in fp32; in bf16
    (the default on AMX CPUs) the engine's and torch's kernels round apart by ~1e-3."""
    from r1platform.training.fsdp import worker_mode

    return 1e-4 if worker_mode("auto", "auto").precision == "fp32" else 5e-3


def _assert_engines_match_trainer(rows: list[dict], tol: float = 1e-4) -> None:
    """After every sync the engine samples with the trainer's weights: the trainer's
    log-probs of the sampled tokens equal the engine's (float noise only)."""
    steps = [r for r in rows if r["step"] > 0 and "event" not in r]
    assert steps and all(r["logprob_diff"] < tol for r in steps), [
        (r["step"], r["logprob_diff"]) for r in steps
    ]


@MODES
def test_resumed_run_matches_uninterrupted_run(ray_local, tmp_path: Path, colocate: bool):
    full, part = tmp_path / "full", tmp_path / "part"
    kw = dict(save_every=2, eval_every=4, colocate=colocate)
    assert _run(full, max_steps=4, **kw)["status"] == "SUCCEEDED"
    assert _run(part, max_steps=2, **kw)["status"] == "SUCCEEDED"
    res = _run(part, max_steps=4, resume=True, **kw)
    assert res["status"] == "SUCCEEDED", res
    a, b = _metrics(full), _metrics(part)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    _assert_engines_match_trainer(a)
    _assert_engines_match_trainer(b)
    for ra, rb in zip(a[3:], b[3:], strict=True):
        for key in ("reward_mean", "accuracy", "response_length_mean", "loss", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-3, abs=1e-5), (ra["step"], key)
    assert a[-1]["eval_accuracy"] == pytest.approx(b[-1]["eval_accuracy"])


def test_nan_losses_skip_then_abort_keeping_last_good_checkpoint(ray_local, tmp_path: Path):
    res = _run(tmp_path, max_steps=8, save_every=1, eval_every=10, inject_nan_steps=[3, 4, 5],
               max_bad_steps=3)  # fmt: skip
    assert res["status"] == "FAILED"
    assert "3 consecutive steps had a non-finite loss" in res["error"]
    rows = _metrics(tmp_path)
    assert [r["skipped"] for r in rows[1:]] == [False, False, True, True, True]
    assert Path(res["checkpoint"]).name == "step_000002"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "/nonexistent/model"], "model path not found: /nonexistent/model"),
        (["--dataset", "/nonexistent/data.jsonl"], "dataset path not found"),
        (["--rewards", "no_such_module:fn"], "cannot import 'no_such_module'"),
        (["--group_size", "1"], "group_size"),
    ],
)
def test_bad_input_fails_fast_with_one_line(argv, needle):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "jobs/grpo.py", *argv], capture_output=True,
                          text=True, timeout=120, cwd=REPO)  # fmt: skip
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Started a local Ray" not in proc.stdout + proc.stderr
    assert time.time() - t0 < 60


@MODES
def test_learning_raises_held_out_greedy_accuracy(ray_local, tmp_path: Path, colocate: bool):
    # The default job's algorithm and rewards, cut to 12 steps: step 0 greedy accuracy on the
    # fixed held-out split is ~2%; GRPO must lift it clearly (>= 8 points = 5 of 64 prompts).
    from r1platform.training.job import run
    from r1platform.training.settings import parse_settings

    res = run(parse_settings(None, output_dir=str(tmp_path), max_steps=12, eval_every=6,
                             save_every=12, max_failures=0, colocate=colocate))  # fmt: skip
    assert res["status"] == "SUCCEEDED", res
    curve = dict(res["eval_curve"])
    assert curve[12] - curve[0] >= 0.08, curve
    rows = _metrics(tmp_path)
    _assert_engines_match_trainer(rows, _default_sync_tolerance())
    # The step's time breakdown is in every step record, for benches to read.
    assert all(0 <= r["timing/overhead_frac"] <= 1 for r in rows[1:])

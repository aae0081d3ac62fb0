"""GRPO job settings: CLI flags, YAML --config, env prefix, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from r1platform.training.settings import GRPOSettingsError, parse_settings

ISSUE_FLAGS = [
    "model", "dataset", "group_size", "prompts_per_step", "lr", "beta", "clip_low",
    "clip_high", "loss_agg", "scale_rewards", "num_iterations", "max_new_tokens",
    "temperature", "max_steps", "eval_every", "save_every", "seed", "output_dir", "resume",
    "num_workers", "num_rollout_engines", "accelerator_type",
]  # fmt: skip


def test_every_issue_flag_is_a_field():
    from r1platform.training.settings import GRPOSettings

    assert set(ISSUE_FLAGS) <= set(GRPOSettings.model_fields)


def test_cli_values_and_implicit_bool_flags():
    s = parse_settings(
        ["--lr", "1e-3", "--group_size", "4", "--resume", "--no-scale_rewards",
         "--loss_agg", "seq-mean-token-sum-norm", "--accelerator_type", "L4"]
    )  # fmt: skip
    assert (s.lr, s.group_size, s.resume, s.scale_rewards) == (1e-3, 4, True, False)
    assert s.loss_agg == "seq-mean-token-sum-norm" and s.accelerator_type == "L4"


def test_precedence_cli_over_env_over_yaml(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text("lr: 0.01\nmax_steps: 3\nseed: 5\n")
    monkeypatch.setenv("R1P_GRPO_MAX_STEPS", "7")
    s = parse_settings(["--config", str(cfg), "--seed", "9"])
    assert (s.lr, s.max_steps, s.seed) == (0.01, 7, 9)


def test_no_argv_means_defaults_train_the_tiny_model_on_arithmetic():
    s = parse_settings([])
    assert s.model is None and s.dataset == "arithmetic" and s.beta == 0.0


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--group_size", "1"], "group_size"),
        (["--lr", "abc"], "lr"),
        (["--loss_agg", "sum"], "loss_agg"),
        (["--clip_low", "1.5"], "clip_low"),
        (["--prompts_per_step", "3", "--num_workers", "2"], "prompts_per_step"),
    ],
)
def test_invalid_value_is_one_line_naming_the_field(argv, field):
    with pytest.raises(GRPOSettingsError) as info:
        parse_settings(argv)
    msg = str(info.value)
    assert "\n" not in msg and field in msg


def test_unknown_flag_and_missing_config_file():
    with pytest.raises(GRPOSettingsError, match="unrecognized arguments: --nope"):
        parse_settings(["--nope", "1"])
    with pytest.raises(GRPOSettingsError, match="file not found"):
        parse_settings(["--config", "/nonexistent/grpo.yaml"])


def test_entrypoint_exits_non_zero_with_one_line(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "jobs/grpo.py", "--group_size", "1"],
        capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [lines[-1]] and "group_size" in lines[-1]

"""The GRPO-vs-TRL benchmark's plumbing: commands both sides accept, metrics parsing, the table."""

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import each other (benchstats)


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bench = load("grpo_vs_trl")
peer = load("trl_peer")
S = bench.BenchSettings(model="/m", steps=3, group_size=4, prompts_per_step=2, lr=1e-4)


def test_trl_peer_accepts_exactly_what_the_orchestrator_sends():
    args = peer.parse_args(bench.trl_command(S, "accuracy,format")[2:])
    assert (args.model, args.max_steps, args.group_size, args.prompts_per_step) == ("/m", 3, 4, 2)
    assert (args.lr, args.scale_rewards, args.loss_agg) == (1e-4, True, "token-mean")
    assert args.eval_before and args.reward_funcs == "accuracy,format"


def test_our_command_carries_the_issue_flags():
    cmd = bench.our_command(S, Path("/out"))
    assert cmd[1].endswith("jobs/grpo.py")
    for flag in (
        "--max_steps=3",
        "--output_dir=/out",
        "--group_size=4",
        "--lr=0.0001",
        "--prompts_per_step=2",
        "--max_new_tokens=48",
        "--eval_every=3",
        "--scale_rewards",
    ):
        assert flag in cmd
    no_scale = bench.BenchSettings(model="/m", scale_rewards=False)
    assert "--no-scale_rewards" in bench.our_command(no_scale, Path("/out"))
    assert not peer.parse_args(bench.trl_command(no_scale, "accuracy")[2:]).scale_rewards


def test_trl_loss_types_cover_every_aggregation():
    from r1platform.training.grpo import LOSS_AGGS

    assert set(peer.TRL_LOSS_TYPE) == set(LOSS_AGGS)


def test_summarize_ours_reads_metrics_jsonl(tmp_path):
    lines = [
        {"step": 0, "eval_accuracy": 0.1},
        {"step": 1, "step_s": 4.0, "rollout_tokens_per_s": 1000.0},
        {"step": 2, "step_s": 2.0, "rollout_tokens_per_s": 3000.0},
        {"step": 3, "step_s": 3.0, "rollout_tokens_per_s": 2000.0, "eval_accuracy": 0.4},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"step": 4, "ste')
    r = bench.summarize_ours(bench.read_metrics(path), wall_s=12.0)
    assert r.ok and r.s_per_step == 3.0 and r.s_per_step_steady == 2.5
    assert r.rollout_tokens_per_s == 2000.0
    assert (r.eval_accuracy_step0, r.eval_accuracy, r.eval_step) == (0.1, 0.4, 3)
    empty = bench.summarize_ours([{"step": 0, "eval_accuracy": 0.1}])
    assert not empty.ok and "step_s" in empty.error
    # The precision each side ran is reported beside its numbers: ours is the job's `auto` here.
    from r1platform.training.fsdp import worker_mode

    mode = worker_mode("auto", "auto")
    assert r.precision == f"{mode.precision} ({mode.strategy})"
    trl = bench.summarize_trl({"s_per_step_steady": 1.0, "precision": "bf16 (autocast)"})
    table = bench.format_size("tiny", bench.summarize_size("tiny", {"ours": [r], "trl": [trl]}))
    assert f"| ours | {r.precision} |" in table and "| trl | bf16 (autocast) |" in table


def test_run_ours_end_to_end_with_a_stand_in_job(tmp_path, monkeypatch):
    # A stand-in for jobs/grpo.py that writes metrics the way the real job must.
    fake = tmp_path / "fake_job.py"
    fake.write_text(
        textwrap.dedent("""
        import json, pathlib, sys
        out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True)
        rows = [{"step": 0, "eval_accuracy": 0.0}, {"step": 1, "step_s": 1.5},
                {"step": 2, "step_s": 0.5, "eval_accuracy": 0.5}]
        (out / "metrics.jsonl").write_text("\\n".join(map(json.dumps, rows)))
    """)
    )
    monkeypatch.setattr(bench, "ours_missing", lambda: None)
    monkeypatch.setattr(bench, "our_command", lambda s, d: [sys.executable, str(fake), str(d)])
    r = bench.run_ours(S, tmp_path, timeout_s=60)
    assert r.ok and r.s_per_step == 1.0 and r.eval_accuracy == 0.5
    monkeypatch.setattr(bench, "our_command", lambda s, d: [sys.executable, "-c", "exit(3)"])
    failed = bench.run_ours(S, tmp_path, timeout_s=60)
    assert not failed.ok and failed.error.startswith("exit 3")


def test_speedup_and_table():
    assert bench.speedup(2.0, 6.0, higher_is_better=False) == 3.0  # ours 3x faster per step
    assert bench.speedup(3000.0, 1000.0, higher_is_better=True) == 3.0
    assert bench.speedup(None, 1.0, True) is None
    ours = bench.SideResult("ours", True, s_per_step=2.0, eval_accuracy=0.5)
    trl = bench.SideResult("trl", True, s_per_step=6.0, eval_accuracy=0.4)
    table = bench.format_table(ours, trl)
    assert "3.00x" in table and "+10.0 pts" in table
    failed = bench.SideResult("ours", False, wall_s=0.3, error="no job")
    missing = bench.format_table(failed, trl)
    assert "ours: not measured: no job" in missing
    assert "0.300" not in missing and "x |" not in missing.split("process wall")[1]


def test_last_json_line():
    assert bench.last_json_line('log\n{"a": 1}\n') == {"a": 1}
    with pytest.raises(ValueError, match="no JSON"):
        bench.last_json_line("only logs\n")


def test_the_job_parses_the_orchestrators_command(tmp_path):
    from r1platform.training.settings import parse_settings

    for scale in (True, False):
        s = bench.BenchSettings(model="/m", steps=3, lr=1e-4, scale_rewards=scale, eval_n=50)
        parsed = parse_settings(bench.our_command(s, tmp_path)[2:])
        assert (parsed.model, parsed.max_steps, parsed.lr) == ("/m", 3, 1e-4)
        assert (parsed.scale_rewards, parsed.eval_size, parsed.clip_high) == (scale, 50, 0.28)
        assert str(parsed.output_dir) == str(tmp_path)

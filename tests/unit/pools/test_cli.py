"""r1p plan / control / decisions through typer's CliRunner on an app built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from r1platform.pools.cli import register
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[3]
POOLS = ROOT / "configs" / "pools" / "example.yaml"
WORKLOADS = ROOT / "configs" / "workloads" / "example.yaml"


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:  # a callback keeps subcommands addressable by name
        pass

    register(a)
    return a


def _run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_plan_json(app):
    r = _run(app, "plan", "--pools", POOLS, "--workloads", WORKLOADS, "--format", "json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["feasible"] is True
    assert {s["deployment"] for s in j["serving"]} == {"r1-671b", "r1-70b", "r1-7b", "r1-1.5b"}
    # R1-671B can only run on the 8xH200 nodes of this fleet (H100/A100 pools cap at 4 nodes
    # but need PP 2 at 2x the price); the plan puts it there.
    assert {s["gpu"] for s in j["serving"] if s["deployment"] == "r1-671b"} == {"H200"}
    for u in j["pools"]:
        assert u["gpus_serving"] + u["gpus_training"] + u["gpus_free"] == u["gpus_capacity"]


def test_plan_table(app):
    r = _run(app, "plan", "-p", POOLS, "-w", WORKLOADS)
    assert r.exit_code == 0, r.output
    for word in ("Pools", "Serving", "Training", "Serving cost", "$/M out tok", "r1-671b"):
        assert word in r.stdout


def _bad(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "pools, workloads, fragment, code",
    [
        (
            "pools:\n  - {name: g, gpu: Z100, nodes: 1, gpus_per_node: 8}",
            None,
            "unknown GPU type 'Z100'; known:",
            1,
        ),
        (
            "pools:\n  - {name: g, gpu: H100, nodes: 0, gpus_per_node: 8, max_nodes: 0}",
            None,
            "pool 'g': has zero GPUs",
            1,
        ),
        ("pools: [ {", None, "malformed YAML", 1),
        (
            "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpus_per_node: 1}",
            "serving:\n  - {name: big, model: deepseek-r1, request_rate: 1, avg_input_tokens: 100,"
            " avg_output_tokens: 100, slo: {ttft_p99_s: 2, tpot_p99_s: 0.1}}",
            "'deepseek-r1' fits on no pool",
            1,
        ),
        (
            "pools:\n  - {name: h100, gpu: H100, nodes: 2, gpus_per_node: 8}",
            "serving:\n  - {name: r1-671b, model: deepseek-r1, request_rate: 30,"
            " avg_input_tokens: 500, avg_output_tokens: 800, slo: {ttft_p99_s: 2, tpot_p99_s: 0.1}}",
            "more H100-class GPUs (pool h100) for r1-671b",
            2,
        ),
        (
            None,
            "serving:\n  - {name: x, model: nope-1b, request_rate: 1, avg_input_tokens: 1,"
            " avg_output_tokens: 1, slo: {ttft_p99_s: 1, tpot_p99_s: 1}}",
            "serving 'x': unknown model 'nope-1b'",
            1,
        ),
    ],
)
def test_bad_input_is_one_red_line(app, tmp_path, pools, workloads, fragment, code):
    p = _bad(tmp_path, pools) if pools else POOLS
    w = WORKLOADS
    if workloads:
        w = tmp_path / "w.yaml"
        w.write_text(workloads)
    r = _run(app, "plan", "-p", p, "-w", w)
    assert r.exit_code == code
    assert r.exception is None or isinstance(r.exception, SystemExit)  # no traceback
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert fragment in lines[0]
    assert "Traceback" not in r.output


def test_control_once_then_decisions(app, tmp_path):
    rec = tmp_path / "decisions.jsonl"
    r = _run(
        app, "control", "-p", POOLS, "-w", WORKLOADS, "--once", "--dry-run", "--decisions-file", rec
    )
    assert r.exit_code == 0, r.output
    assert "dry run" in r.stdout
    lines = rec.read_text().splitlines()
    assert lines and all(json.loads(ln)["applied"] is False for ln in lines)
    r = _run(app, "decisions", "--decisions-file", rec, "--last", 3, "--format", "json")
    assert r.exit_code == 0
    assert len(json.loads(r.stdout)) == 3
    r = _run(app, "decisions", "--decisions-file", rec)
    assert r.exit_code == 0 and "decisions" in r.stdout and "scale" in r.stdout
    r = _run(app, "decisions", "--decisions-file", tmp_path / "none.jsonl")
    assert r.exit_code == 0 and "no decisions recorded" in r.stdout
    r = _run(app, "decisions", "--last", 0)
    assert r.exit_code == 1 and r.stderr.startswith("error:")


def test_control_tuning_errors_name_the_setting(app, tmp_path, monkeypatch):
    args = ("control", "-p", POOLS, "-w", WORKLOADS, "--once", "--dry-run")
    rec = ("--decisions-file", tmp_path / "d.jsonl")
    monkeypatch.setenv("R1P_CONTROL_LEND_RESERVE", "lots")
    r = _run(app, *args, *rec)
    assert r.exit_code == 1 and r.stderr.startswith("error: R1P_CONTROL_LEND_RESERVE")
    monkeypatch.delenv("R1P_CONTROL_LEND_RESERVE")
    r = _run(app, *args, *rec, "--interval", 0)
    assert r.exit_code == 1 and r.stderr.startswith("error: --interval")
    assert "Traceback" not in r.output


def test_control_without_address_says_it_is_a_dry_run(app, tmp_path):
    rec = tmp_path / "d.jsonl"
    r = _run(app, "control", "-p", POOLS, "-w", WORKLOADS, "--once", "--decisions-file", rec)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("dry run (no --address given)") and "acts on nothing" in r.stderr
    assert all(json.loads(ln)["applied"] is False for ln in rec.read_text().splitlines())
    r = _run(
        app, "control", "-p", POOLS, "-w", WORKLOADS, "--once", "--dry-run", "--decisions-file", rec
    )
    assert r.stderr.startswith("dry run (--dry-run)")

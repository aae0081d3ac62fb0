"""Pure parts of the serving, scale-out and `make bench` scripts (no server, no job started)."""

from pathlib import Path

import pytest
from benchload import load

serve = load("serve_overhead")
scaleout = load("grpo_scaleout")
run_all = load("run_all")
table = load("readme_table")


def rounds(ttft, tps):
    return [{"ttft_p50_ms": a, "ttft_p99_ms": 2 * a, "itl_p50_ms": 1.0, "tokens_per_s": b}
            for a, b in zip(ttft, tps, strict=True)]  # fmt: skip


def test_serving_compare_reports_spread_and_the_least_favourable_concurrency():
    ours = {1: rounds([10, 12], [100, 110]), 32: rounds([60, 66], [900, 1000])}
    peer = {1: rounds([10, 10], [200, 200]), 32: rounds([100, 100], [900, 900])}
    r = serve.compare(ours, peer)
    c1 = r["by_concurrency"]["1"]
    assert c1["ttft_p50_ms"]["ours"] == {"mean": 11.0, "std": pytest.approx(1.4142, 1e-3), "n": 2}
    assert c1["tokens_per_s"]["ratio"] == pytest.approx(0.525)
    assert c1["tokens_per_s"]["ratio_rounds"]["mean"] == pytest.approx(0.525)
    assert r["worst"] == {
        "ttft_p50_ratio": pytest.approx(1.1),
        "ttft_p50_concurrency": "1",
        "tokens_per_s_ratio": pytest.approx(0.525),
        "tokens_per_s_concurrency": "1",
    }
    assert serve.met("ttft_p50_ms", 1.1) == "met" and serve.met("tokens_per_s", 0.5) == "NOT met"
    assert serve.met("tokens_per_s", None) == "not measured"


def test_stream_interval_score_is_the_geometric_mean_of_throughput():
    assert serve.score({1: rounds([1], [100]), 8: rounds([1], [400])}) == pytest.approx(200)


def test_peer_gets_its_best_stream_interval_at_each_concurrency():
    per_interval = {
        1: {1: rounds([5, 5], [300, 320]), 32: rounds([50, 50], [500, 520])},
        16: {1: rounds([9, 9], [200, 210]), 32: rounds([90, 90], [900, 880])},
    }
    peer, best = serve.best_per_concurrency(per_interval)
    assert best == {"1": 1, "32": 16}
    assert peer == {1: per_interval[1][1], 32: per_interval[16][32]}


def test_rounds_hold_at_least_sixteen_requests_per_client():
    assert [serve.round_size(64, c) for c in (1, 8, 32)] == [64, 128, 512]


def test_common_niceness_tells_ray_not_to_renice_its_workers(monkeypatch):
    import os

    # setenv first, so the variable is restored (removed) after the test.
    monkeypatch.setenv("RAY_worker_niceness", "15")
    now = os.nice(0)
    assert serve.set_common_niceness(now) == now
    assert os.environ["RAY_worker_niceness"] == "0"  # noqa: SIM112 (Ray's spelling)
    if now > 0:  # lowering needs root; as root nothing is refused
        with pytest.raises(SystemExit, match="lowering needs root"):
            serve.set_common_niceness(now - 1)


def test_scaleout_compare_checks_final_accuracy_and_the_curves():
    a = [{0: 0.0, 10: 0.20, 20: 0.30}, {0: 0.0, 10: 0.22, 20: 0.34}, {0: 0.0, 10: 0.24, 20: 0.32}]
    b = [{0: 0.0, 10: 0.21, 20: 0.31}, {0: 0.0, 10: 0.23, 20: 0.33}, {0: 0.0, 10: 0.22, 20: 0.35}]
    r = scaleout.compare(a, b)
    assert r["eval_steps"] == [0, 10, 20] and r["final_step"] == 20
    assert r["accuracy_delta_pts"] == pytest.approx(1.0)
    assert r["accuracy_within_tolerance"] and r["curves_within_spread"] == 1.0
    far = [{0: 0.0, 10: 0.5, 20: 0.6}, {0: 0.0, 10: 0.52, 20: 0.62}]
    r = scaleout.compare(far, b)
    assert not r["accuracy_within_tolerance"] and r["curves_within_spread"] == 0.0


def test_scaleout_reads_curves_and_prompts_per_second():
    metrics = [
        {"step": 0, "eval_accuracy": 0.1},
        {"step": 1, "step_s": 9.0},  # warm-up
        {"step": 2, "step_s": 2.0},
        {"step": 3, "step_s": 2.0, "eval_accuracy": 0.3},  # pays an eval
    ]
    assert scaleout.eval_curve(metrics) == {0: 0.1, 3: 0.3}
    assert scaleout.prompts_per_s(metrics, 16) == 8.0
    cmd = scaleout.job_command(2, 1, 40, Path("/o"), "disaggregated", [])
    assert {"--num_workers=2", "--num_rollout_engines=2", "--colocate=false"} <= set(cmd)


def test_scaleout_command_is_accepted_by_the_job():
    from r1platform.training.settings import parse_settings

    s = parse_settings(scaleout.job_command(2, 1, 40, Path("/o"), "disaggregated", [])[2:])
    assert (s.num_workers, s.num_rollout_engines, s.colocate, s.seed) == (2, 2, False, 1)


def test_make_bench_steps_and_nesting(tmp_path):
    assert set(run_all.STEPS) == {"serving", "grpo", "rollout", "planner", "fleet_sim.synthetic",
                                  "fleet_sim.azure", "sim_fidelity", "scaleout"}  # fmt: skip
    cmd = run_all.step_command("fleet_sim.azure", tmp_path / "x.json", smoke=False)
    assert cmd[1].endswith("bench/fleet_sim.py") and cmd[-2:] == [
        "--json",
        str(tmp_path / "x.json"),
    ]
    assert "--seeds" in run_all.step_command("fleet_sim.azure", tmp_path / "x.json", smoke=True)
    results = {}
    run_all.nest(results, "fleet_sim.azure", {"r1p": {}})
    run_all.nest(results, "fleet_sim.synthetic", {"r1p": {}})
    run_all.nest(results, "planner", {"plan_time_s": 0.1})
    assert results == {"fleet_sim": {"azure": {"r1p": {}}, "synthetic": {"r1p": {}}},
                       "planner": {"plan_time_s": 0.1}}  # fmt: skip


def test_make_bench_writes_every_target_even_when_steps_fail(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(run_all, "run_step", lambda *a: {"seconds": 0.0, "error": "exit 1"})
    rc = run_all.main(["--only", "planner", "--smoke", "--results", str(tmp_path)])
    assert rc == 1
    doc = json.loads((tmp_path / "smoke.json").read_text())
    assert doc["results"]["steps"]["planner"]["error"] == "exit 1"
    assert all(t["value"] is None and t["met"] is False for t in doc["targets"].values())
    assert not (tmp_path / "latest.json").exists(), "a smoke run never writes latest.json"
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope", "--results", str(tmp_path)])


def test_make_bench_reruns_one_step_and_keeps_the_others_marked_reused(tmp_path, monkeypatch):
    import json

    def fake_step(name, out, smoke, timeout_s):
        out.write_text(json.dumps({"ratio": 0.85 if name == "rollout" else 0.5}))
        return {"seconds": 1.0, "load_after": "x"}

    monkeypatch.setattr(run_all, "run_step", fake_step)
    monkeypatch.setattr(run_all.subprocess, "run", lambda *a, **k: None)  # the README rewrite
    monkeypatch.setattr(run_all, "commit", lambda: "abc1234")
    assert run_all.main(["--only", "rollout,planner", "--results", str(tmp_path)]) == 0
    first = json.loads((tmp_path / "latest.json").read_text())
    assert first["command"] == "bench/run_all.py --only rollout,planner"
    assert first["results"]["steps"]["rollout"]["commit"] == first["commit"] == "abc1234"
    # A failed re-run of planner: rollout comes back from its part, marked reused; planner's
    # old part is gone (its status says it failed), so no stale value stands in for it.
    monkeypatch.setattr(run_all, "run_step", lambda *a: {"seconds": 0.0, "error": "exit 1"})
    assert run_all.main(["--only", "planner", "--keep-others", "--results", str(tmp_path)]) == 1
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["results"]["rollout"] == {"ratio": 0.85}
    assert doc["results"]["steps"]["rollout"]["reused"] is True
    assert "planner" not in doc["results"] and doc["results"]["steps"]["planner"]["error"]
    assert doc["targets"]["rollout.hybrid_vs_bare_vllm"]["met"]
    assert "Taken from earlier runs of their step: rollout (commit" in table.render(doc)
    # Without --keep-others only what ran is reported.
    assert run_all.main(["--only", "planner", "--results", str(tmp_path)]) == 1
    assert "rollout" not in json.loads((tmp_path / "latest.json").read_text())["results"]

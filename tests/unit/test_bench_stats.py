"""Pure parts of the benchmarks: seed statistics, the fixed target set of latest.json, the README
table regenerated from it, and the GRPO race's summaries."""

import json

import pytest
from benchload import ROOT, load

stats = load("benchstats")
table = load("readme_table")
race = load("grpo_vs_trl")


def test_spread_is_mean_and_sample_std_and_drops_failed_seeds():
    s = stats.spread([1.0, 2.0, 3.0, None])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert stats.spread([4.0]).std == 0.0
    assert stats.spread([None, float("nan")]) is None
    assert s.fmt() == "2.000 ± 1.000 (n=3)"


def test_a_difference_is_claimed_only_when_intervals_do_not_overlap():
    a = stats.spread([0.30, 0.32, 0.34])  # 0.32 ± 0.02
    assert stats.compare_intervals(a, stats.spread([0.20, 0.21, 0.22])) == "better"
    assert stats.compare_intervals(a, stats.spread([0.29, 0.31, 0.36])) == "equal"
    assert stats.compare_intervals(stats.spread([0.1, 0.11, 0.12]), a) == "worse"
    assert stats.compare_intervals(stats.spread([0.9]), stats.spread([0.1])) == "unknown"
    assert stats.compare_intervals(None, a) == "unknown"


def test_ratio_is_peer_over_ours():
    assert stats.ratio(3.0, 1.5) == 2.0  # peer takes 3 s/step, we take 1.5: 2x faster
    assert stats.ratio(None, 1.0) is None and stats.ratio(1.0, 0.0) is None


def test_targets_always_have_the_same_fixed_names_even_with_no_results():
    empty = stats.evaluate_targets({})
    assert tuple(empty) == stats.TARGET_NAMES
    assert len(set(stats.TARGET_NAMES)) == len(stats.TARGET_NAMES) == 29
    assert all(v == {"target": v["target"], "value": None, "met": False} for v in empty.values())
    for name in (
        "serving.ttft_p50_vs_vllm",
        "serving.haproxy.throughput_vs_vllm",
        "grpo.tiny.speed_vs_trl",
        "grpo.small.speed_vs_trl",
        "grpo.tiny.speed_vs_trl_vllm",
        "rollout.hybrid_vs_bare_vllm",
        "planner.plan_time_s",
        "fleet.azure.cost_vs_first_fit",
        "fleet.synthetic.cost_vs_clairvoyant",
        "fleet.azure.harvest",
        "fleet.synthetic.slo",
        "scaleout.accuracy_delta_pts",
    ):
        assert name in empty


def fleet_doc(r1p_cost, ff_cost, st_cost, cv_cost, slo, harvest):
    pol = lambda cost, **kw: {"cost_at_slo": cost, "serving_cost": cost, **kw}  # noqa: E731
    return {
        "r1p": pol(r1p_cost, slo_attainment=slo, harvest_ratio=harvest),
        "first_fit": pol(ff_cost),
        "single_type": pol(st_cost),
        "clairvoyant": pol(cv_cost),
    }


def test_targets_read_values_and_judge_them():
    results = {
        "serving": {
            "worst": {"ttft_p50_ratio": 1.2, "tokens_per_s_ratio": 1.3},
            "ingress": {"haproxy": {"worst": {"ttft_p50_ratio": 1.0, "tokens_per_s_ratio": 0.9}}},
        },
        "grpo": {
            "tiny": {"speedup": {"trl": 1.6, "trl_vllm": None}, "accuracy_not_worse": {"trl": 1.0}}
        },
        "rollout": {"ratio": 0.85},
        "planner": {"ilp_cost_ratio_max": 1.0, "plan_time_s": 0.2},
        "fleet_sim": {"azure": fleet_doc(85.0, 100.0, 80.0, 80.0, 0.992, 0.75)},
        "scaleout": {"accuracy_delta_pts": 2.5, "curves_within_spread": 0.0},
    }
    t = stats.evaluate_targets(results)
    assert t["serving.ttft_p50_vs_vllm"] == {"target": "<= 1.1", "value": 1.2, "met": False}
    assert t["serving.throughput_vs_vllm"]["met"]
    assert t["serving.haproxy.ttft_p50_vs_vllm"]["met"]
    assert t["serving.haproxy.throughput_vs_vllm"] == {
        "target": ">= 0.95",
        "value": 0.9,
        "met": False,
    }
    assert t["grpo.tiny.speed_vs_trl"]["met"] and t["grpo.tiny.accuracy_vs_trl"]["met"]
    assert t["grpo.tiny.speed_vs_trl_vllm"] == {"target": ">= 1", "value": None, "met": False}
    assert t["grpo.small.speed_vs_trl"]["value"] is None
    assert t["fleet.azure.cost_vs_first_fit"]["value"] == pytest.approx(0.85)
    assert t["fleet.azure.cost_vs_first_fit"]["met"]
    assert not t["fleet.azure.cost_vs_single_type"]["met"]  # 85/80 > 0.95
    assert t["fleet.azure.cost_vs_clairvoyant"]["met"]  # 1.0625 <= 1.10
    assert t["fleet.azure.harvest"]["met"] and t["fleet.azure.slo"]["met"]
    assert t["fleet.synthetic.slo"] == {"target": ">= 0.99", "value": None, "met": False}
    assert t["scaleout.accuracy_delta_pts"]["met"] and not t["scaleout.curves_within_spread"]["met"]
    assert t["planner.cost_vs_optimum"]["met"] and t["rollout.hybrid_vs_bare_vllm"]["met"]


def test_latest_document_shape():
    doc = stats.latest_document(
        {"x": 1}, date="2026-01-01", machine_text="m", commit_id="abc", command="make bench"
    )
    assert set(doc) == {"machine", "date", "commit", "command", "results", "targets"}
    assert doc["results"] == {"x": 1} and tuple(doc["targets"]) == stats.TARGET_NAMES


def test_readme_table_is_regenerated_between_the_markers(tmp_path):
    doc = stats.latest_document(
        {"rollout": {"ratio": 0.9}}, date="D", machine_text="M", commit_id="C", command="make bench"
    )
    body = table.render(doc)
    assert "`make bench` on M, D, commit C" in body
    assert body.count("\n| ") == 1 + len(stats.TARGETS)  # header + one row per target
    assert "| 0.900 | >= 0.8 | yes |" in body and "not measured" in body
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{table.BEGIN}\nold table\n{table.END}\nafter\n")
    latest = tmp_path / "latest.json"
    latest.write_text(json.dumps(doc))
    assert table.main(["--latest", str(latest), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and body in text
    assert text.startswith("# x\nbefore\n") and text.endswith(f"{table.END}\nafter\n")
    assert table.main(["--latest", str(latest), "--readme", str(readme)]) == 0
    assert readme.read_text() == text, "regenerating twice changes nothing"


def test_readme_without_markers_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no benchmark table markers"):
        table.replace_between_markers("no markers here", "body")
    assert table.main(["--latest", str(tmp_path / "nope.json")]) == 1


def test_the_real_readme_has_the_markers():
    text = (ROOT / "README.md").read_text()
    assert text.count(table.BEGIN) == 1 and text.count(table.END) == 1


def test_race_defaults_are_the_jobs_defaults():
    from r1platform.training.settings import parse_settings

    job = parse_settings([])
    b = race.BenchSettings(model="")
    for name in ("dataset", "group_size", "prompts_per_step", "lr", "beta", "clip_low",
                 "clip_high", "loss_agg", "scale_rewards", "num_iterations", "max_new_tokens",
                 "temperature", "seed"):  # fmt: skip
        assert getattr(b, name) == getattr(job, name), name
    assert b.eval_n == job.eval_size
    assert race.job_rewards() == ("accuracy,format", "1.0,0.1")


def test_race_summary_uses_seed_spreads_and_interval_verdicts():
    R = race.SideResult
    runs = {
        "ours": [R("ours", True, s_per_step_steady=x, eval_accuracy=a)
                 for x, a in ((1.0, 0.30), (1.2, 0.32), (1.1, 0.34))],
        "trl": [R("trl", True, s_per_step_steady=x, eval_accuracy=a)
                for x, a in ((2.2, 0.20), (2.0, 0.21), (2.4, 0.22))],
        "trl_vllm": [R("trl_vllm", False, error="vLLM CPU refused")] * 3,
    }  # fmt: skip
    s = race.summarize_size("tiny", runs)
    assert s["speedup"]["trl"] == pytest.approx(2.0)
    assert s["accuracy"]["trl"] == "better" and s["accuracy_not_worse"]["trl"] == 1.0
    assert s["speedup"]["trl_vllm"] is None and s["accuracy"]["trl_vllm"] == "unknown"
    assert s["sides"]["trl_vllm"]["errors"] == ["vLLM CPU refused"] * 3
    text = race.format_size("tiny", s)
    assert "2.00x -> met" in text and "load avg" in text and "vLLM CPU refused" in text


def test_step_breakdown_reads_the_jobs_timing_fields(tmp_path):
    rows = [
        {"step": 1, "step_s": 9.0, "timing/rollout_s": 8.0},  # warm-up: left out
        {"step": 2, "step_s": 2.0, "timing/rollout_s": 1.0, "timing/backward_s": 0.5},
        {"step": 3, "step_s": 4.0, "timing/rollout_s": 3.0, "timing/backward_s": 0.5,
         "eval_accuracy": 0.1},  # eval step: left out
        {"step": 4, "step_s": 2.0, "timing/rollout_s": 1.0, "timing/backward_s": 0.7},
    ]  # fmt: skip
    b = race.step_breakdown(rows)
    assert b == {"rollout": 1.0, "backward": pytest.approx(0.6), "step": 2.0}
    text = race.format_breakdown(b)
    assert "| rollout    |    1.000 |  50.0% |" in text
    assert "no per-phase timings" in race.format_breakdown(
        race.step_breakdown([{"step": 1, "step_s": 1}])
    )
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert race.main(["--breakdown", str(path)]) == 0

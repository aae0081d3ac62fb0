"""GRPO Prometheus series: names as scraped (Ray's `ray_` namespace), the `job` label, and
that a step record lands in the right series."""

from r1platform.training import prom

BASE = {
    "r1p_grpo_reward", "r1p_grpo_accuracy", "r1p_grpo_eval_accuracy", "r1p_grpo_step",
    "r1p_grpo_step_seconds", "r1p_grpo_weight_sync_seconds", "r1p_grpo_weight_gather_seconds",
}  # fmt: skip


def test_exported_names_are_the_scraped_series():
    gauges = {"ray_" + n for n in ("r1p_grpo_reward", "r1p_grpo_accuracy",
                                   "r1p_grpo_eval_accuracy", "r1p_grpo_step")}  # fmt: skip
    hists = {
        f"ray_{n}{sfx}"
        for n in (
            "r1p_grpo_step_seconds",
            "r1p_grpo_weight_sync_seconds",
            "r1p_grpo_weight_gather_seconds",
        )
        for sfx in ("_bucket", "_sum", "_count")
    }
    assert gauges | hists == prom.EXPORTED_NAMES


def test_ray_prefix_matches_rays_exporter():
    # The namespace Ray's metrics agent puts in front of every ray.util.metrics series.
    from ray._private.telemetry import open_telemetry_metric_recorder as rec

    assert prom.RAY_PREFIX == rec.NAMESPACE + "_"


def test_series_carry_the_job_label():
    m = prom.GRPOMetrics("grpo-tiny")
    metrics = {**m.gauges, **m.histograms}
    assert set(metrics) == BASE
    for name, metric in metrics.items():
        assert metric.info["name"] == name and metric.info["tag_keys"] == ("job",)
    assert m.histograms["r1p_grpo_step_seconds"].boundaries == prom.STEP_BOUNDARIES


def test_observe_step_records_finite_values(monkeypatch):
    m = prom.GRPOMetrics("grpo-tiny")
    seen: list[tuple[str, float, dict]] = []
    for name, metric in m.gauges.items():
        monkeypatch.setattr(metric, "set", lambda v, tags, n=name: seen.append((n, v, tags)))
    for name, metric in m.histograms.items():
        monkeypatch.setattr(metric, "observe", lambda v, tags, n=name: seen.append((n, v, tags)))
    m.observe_step({"step": 3, "reward_mean": 0.25, "accuracy": 0.5, "step_s": 1.5,
                    "weight_sync_s": 0.04, "eval_accuracy": float("nan"), "skipped": False})  # fmt: skip
    got = {n: v for n, v, _ in seen}
    assert got == {
        "r1p_grpo_step": 3.0, "r1p_grpo_reward": 0.25, "r1p_grpo_accuracy": 0.5,
        "r1p_grpo_step_seconds": 1.5, "r1p_grpo_weight_sync_seconds": 0.04,
    }  # fmt: skip
    assert all(tags == {"job": "grpo-tiny"} for _, _, tags in seen)
    seen.clear()
    m.observe_step({"step": 4, "eval_accuracy": 0.75})
    assert {n: v for n, v, _ in seen} == {"r1p_grpo_step": 4.0, "r1p_grpo_eval_accuracy": 0.75}

"""The equal-SLO search: bisection within its budget, confirmation on the full run, the cache,
and the bench's JSON shape (sim_search.run mocked where only the search logic is under test)."""

from __future__ import annotations

import json

import pytest
from r1platform.pools import scenarios, sim, sim_search, trace


def _scenario(hours: float = 1.0) -> sim_search.Scenario:
    fleet = scenarios.fleet(100, mix={"H100": 0.5, "L4": 0.5})
    gpus = sum(p.gpus_capacity for p in fleet.pools)
    wl = scenarios.workloads(2, seed=4, total_gpus=gpus, load=0.3)
    cfg = sim.SimConfig(duration_s=hours * 3600, control_interval_s=600, seed=1)
    tr = trace.synthetic(86400, cfg.tick_s, 1)
    return sim_search.Scenario(fleet, list(wl.serving), sim.job_queue(2, 1, 3600, gpus), tr, cfg)


def _fake_run(threshold: float, calls: list):
    """SLO met from `threshold` up on the slice; the full run needs 0.1 more knob."""

    def run(kind, knob, sc, cache):
        calls.append((kind, knob, sc.cfg.duration_s))
        full = sc.cfg.duration_s > sim_search.SLICE_S
        ok = knob >= threshold + (0.1 if full else 0.0)
        slo = 0.995 if ok else 0.97
        return {"knob": knob, **_metrics(slo, cost=100 + 50 * knob)}

    return run


def _metrics(slo: float, cost: float) -> dict:
    return {
        "slo_attainment": slo,
        "serving_cost": cost,
        "cost_at_slo": cost if slo >= sim_search.SLO else None,
        "harvest_ratio": 0.8,
        "lost_gpu_hours": 0.0,
        "harvested_gpu_hours": 10.0,
        "idle_gpu_hours": 12.5,
        "training_value": 30.0,
        "net_cost": cost - 30.0,
        "jobs_arrived": 2,
        "jobs_min_share": 2,
        "preemptions": 0,
    }


def test_search_bisects_within_five_evaluations_then_confirms(monkeypatch):
    calls: list = []
    monkeypatch.setattr(sim_search, "run", _fake_run(0.4, calls))
    got = sim_search.search("first-fit-catalog", _scenario(24), cache=None)
    slice_calls = [c for c in calls if c[2] == sim_search.SLICE_S]
    assert len(slice_calls) == 5  # top of the range, then four halvings
    assert [c[1] for c in slice_calls][:3] == [1.5, 0.75, 0.375]
    assert got["search"][-1]["knob"] == slice_calls[-1][1]
    # The bisected knob (0.46875) misses on the full run; the search steps up until it holds.
    assert got["slo_attainment"] >= sim_search.SLO and got["knob"] > 0.5
    assert got["cost_at_slo"] == got["serving_cost"]


def test_search_stops_when_not_even_the_top_holds(monkeypatch):
    calls: list = []
    monkeypatch.setattr(sim_search, "run", _fake_run(9.0, calls))
    got = sim_search.search("static", _scenario(24), cache=None)
    assert len([c for c in calls if c[2] == sim_search.SLICE_S]) == 1
    assert got["cost_at_slo"] is None and got["knob"] == 1.0


def test_runs_are_cached_by_input_hash(tmp_path):
    sc = _scenario()
    a = sim_search.run("first-fit-cheapest", 0.2, sc, tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert sim_search.run("first-fit-cheapest", 0.2, sc, tmp_path) == a
    sim_search.run("first-fit-cheapest", 0.3, sc, tmp_path)  # another knob: another entry
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert sim_search.input_hash("static", 0.9, sc) != sim_search.input_hash("static", 0.8, sc)


def test_clairvoyant_and_static_knobs_move_cost_and_slo():
    sc = _scenario()
    lo = sim_search.run("clairvoyant", 0.0, sc, None)
    hi = sim_search.run("clairvoyant", 0.5, sc, None)
    assert hi["serving_cost"] > lo["serving_cost"] and hi["slo_attainment"] >= lo["slo_attainment"]
    assert hi["lost_gpu_hours"] == 0.0
    day = _scenario(24)  # the static split is a plan once: cheap to run over a day
    half = sim_search.run("static", 0.5, day, None)
    peak = sim_search.run("static", 1.0, day, None)
    assert half["serving_cost"] < peak["serving_cost"]
    with pytest.raises(ValueError, match="unknown policy"):
        sim_search.make_policy("nope", None)


def test_json_document_has_the_summary_and_detail_keys():
    def seed(shift: float) -> dict:
        r = {"knob": None, **_metrics(0.993 + shift, 90)}
        ff = {"catalog": {"knob": 0.5, **_metrics(0.995, 120)}}
        ff["cheapest"] = {"knob": 0.4, **_metrics(0.995, 110)}
        st = {
            "H100": {"knob": 0.3, **_metrics(0.996, 100)},
            "L4": {"knob": 1.5, **_metrics(0.9, 80)},
        }
        return {
            "r1p": r,
            "first_fit_variants": ff,
            "first_fit": sim_search.better(*ff.values()),
            "single_types": st,
            "single_type": sim_search.better(*st.values()),
            "static": {"knob": 0.9, **_metrics(0.999, 150)},
            "clairvoyant": {"knob": 0.2, **_metrics(0.995, 85)},
        }

    doc = sim_search.aggregate({1: seed(0.0), 2: seed(0.002)})
    missed = sim_search.aggregate({1: seed(0.0), 3: seed(-0.01)})  # one seed below the SLO
    assert missed["r1p"]["cost_at_slo"] is None and missed["targets"]["slo"]["met"] is False
    json.dumps(doc)  # serialisable as is
    keys = {"slo_attainment", "serving_cost", "cost_at_slo", "harvest_ratio", "lost_gpu_hours"}
    for k in ("r1p", "first_fit", "single_type", "static", "clairvoyant"):
        assert keys <= set(doc[k])
    assert set(doc["first_fit_variants"]) == {"catalog", "cheapest"}
    assert set(doc["single_types"]) == {"H100", "L4"}
    assert doc["first_fit"]["serving_cost"] == 110  # the cheaper variant at the SLO
    assert doc["single_type"]["serving_cost"] == 100  # L4 misses the SLO: not the best
    assert doc["r1p"]["slo_attainment"] == pytest.approx(0.993)  # the minimum over seeds
    t = doc["targets"]
    assert t["vs_first_fit"]["value"] == pytest.approx(90 / 110) and t["vs_first_fit"]["met"]
    assert t["vs_single_type"]["met"] is True and t["vs_clairvoyant"]["met"] is True
    assert t["slo"]["met"] and t["harvest_ratio"]["met"] and t["jobs_short_of_min"]["met"]


def test_controller_settings_key_r1p_runs_only(monkeypatch):
    sc = _scenario()
    before = {k: sim_search.input_hash(k, None, sc) for k in ("r1p", "first-fit-cheapest")}
    monkeypatch.setenv("R1P_CONTROL_HEADROOM_BUDGET", "0.002")
    assert sim_search.input_hash("r1p", None, sc) != before["r1p"]
    assert sim_search.input_hash("first-fit-cheapest", None, sc) == before["first-fit-cheapest"]


def test_compare_runs_only_the_policies_asked_for(monkeypatch):
    calls: list = []
    monkeypatch.setattr(
        sim_search, "run", lambda kind, knob, sc, cache: calls.append(kind) or _metrics(0.995, 90)
    )
    got = sim_search.compare(_scenario(), None, lambda _m: None, policies=("r1p",))
    assert calls == ["r1p"] and got["first_fit"] is None and got["single_types"] == {}
    doc = sim_search.aggregate({1: got})
    assert doc["static"] is None and doc["first_fit_variants"] == {}
    assert doc["targets"]["slo"]["met"] is True and doc["targets"]["vs_first_fit"]["met"] is None

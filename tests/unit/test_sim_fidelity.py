"""The simulator-fidelity bench's comparison: event order, scale-up lags, SLO attainment, and
how the replayed arrivals are cut from a trace (bench/sim_fidelity.py; the live run is in
`make bench`)."""

import pytest
from benchload import load

fid = load("sim_fidelity")
Event = fid.Event


def test_order_collapses_repeats_in_a_row_but_keeps_alternations():
    ev = [Event(0, "lend", 1, 2), Event(10, "scale", 1, 2), Event(15, "reclaim", 2, 1),
          Event(20, "scale", 2, 3), Event(60, "scale", 3, 1), Event(70, "lend", 1, 2),
          Event(90, "scale", 1, 2)]  # fmt: skip
    assert fid.order(ev) == ["lend", "scale-up", "reclaim", "scale-up", "scale-down", "lend",
                             "scale-up"]  # fmt: skip
    assert fid.order([Event(5, "scale", 1, 2), Event(1, "scale", 2, 3)]) == ["scale-up"]


def test_events_from_decisions_keeps_applied_actions_timed_from_the_replay():
    rows = [{"ts": 100.0, "kind": "scale", "before": 1, "after": 2, "applied": True},
            {"ts": 101.0, "kind": "capacity", "before": 0, "after": 4, "applied": False},
            {"ts": 102.5, "kind": "reclaim", "before": 2, "after": 1, "applied": False},
            {"ts": 103.0, "kind": "lend", "before": 1, "after": 2}]  # fmt: skip
    assert fid.events_from_decisions(rows, 90.0) == [Event(10.0, "scale", 1, 2),
                                                     Event(13.0, "lend", 1, 2)]  # fmt: skip


def test_scale_up_lag_runs_from_when_the_load_outgrew_the_replicas():
    # 1 rps until t=20, then 4 rps: with 2 rps per replica and a 10 s window, one replica is
    # outgrown once the window holds more than 20 requests: (14, 24] holds 5 + 17.
    arrivals = [float(t) for t in range(20)] + [20 + k / 4 for k in range(160)]
    ev = [Event(30.0, "scale", 1, 3), Event(50.0, "scale", 3, 2), Event(55.0, "scale", 2, 3)]
    lags = fid.scale_up_lags(ev, arrivals, cap_rps=2.0, window_s=10.0)
    assert lags[0] == (24.0, 6.0)
    assert lags[1] == (55.0, 0.0)  # 4 rps never outgrew 2 replicas: it came ahead of need


def test_compare_holds_each_agreement_to_its_bound():
    live = [Event(0, "lend", 1, 2), Event(12, "scale", 1, 3), Event(13, "reclaim", 2, 1)]
    sim = [Event(0, "lend", 1, 2), Event(10, "scale", 1, 3), Event(10, "reclaim", 2, 1)]
    ok = fid.compare(live, sim, [(5, 7.0)], [(5, 5.0)], 0.97, 0.955, interval_s=5)
    assert ok["order_agrees"] and ok["lag_agrees"] and ok["slo_agrees"] and ok["agrees"]
    assert ok["lag_max_diff_s"] == 2.0 and ok["slo_diff_points"] == 1.5
    bad = fid.compare(live, sim[:2], [(5, 12.0)], [(5, 5.0)], 0.97, 0.94, interval_s=5)
    assert not (bad["order_agrees"] or bad["lag_agrees"] or bad["slo_agrees"] or bad["agrees"])
    assert bad["order_sim"] == ["lend", "scale-up"] and bad["slo_diff_points"] == 3.0
    missing = fid.compare(live, sim, [(5, 7.0), (30, 1.0)], [(5, 7.0)], 1.0, 1.0, interval_s=5)
    assert not missing["lag_agrees"]  # a scale-up one side never made


def test_slo_attainment_counts_errors_and_either_target_missed_as_misses():
    recs = [{"status": 200, "ttft": 0.2, "tpot": 0.01}, {"status": 200, "ttft": 1.5, "tpot": 0.01},
            {"status": 200, "ttft": 0.2, "tpot": 0.5}, {"status": 503, "ttft": 0.1, "tpot": 0.0},
            {"status": None, "ttft": float("inf"), "tpot": None}]  # fmt: skip
    assert fid.slo_attainment(recs, 1.0, 0.1) == 0.2
    assert fid.slo_attainment([], 1.0, 0.1) == 1.0


def test_the_replay_is_the_busiest_swing_of_the_trace_thinned_and_compressed():
    from r1platform.pools.trace import Request

    # Minute 0: 10 requests, minute 1: 60, minute 2: 10, minute 3: 12.
    t = [i * 6.0 for i in range(10)] + [60 + i for i in range(60)]
    t += [120 + i * 6.0 for i in range(10)] + [180 + i * 5.0 for i in range(12)]
    assert fid.pick_window(t, 2) == 0.0  # 60/10 beats 60/10 later (first wins) and 12/10
    assert fid.pick_window(t, 1) == 0.0
    reqs = [Request(i + 2, x, 10.0, 5.0) for i, x in enumerate(t)]
    keep = fid.keep_fraction(t[:70], compress=2.0, cap_rps=1.0, window_s=10.0)
    # The busiest 10 s of wall time holds 21 requests: 2.5 replicas of 1 rps want more than all.
    assert fid.TARGET_REPLICAS == 2.5 and keep == 1.0
    thin = fid.keep_fraction(t[:70], compress=2.0, cap_rps=0.2, window_s=10.0)
    assert thin == pytest.approx(2.5 * 0.2 / 2.1)
    # A replica too fast for the trace at x2: compress further until it is outgrown.
    assert fid.fit_compress(t[:70], 2.0, 0.2, 10.0) == 2.0
    faster = fid.fit_compress(t[:70], 2.0, 1.0, 10.0)
    assert faster > 2.0 and fid.keep_fraction(t[:70], faster, 1.0, 10.0) < 1.0
    assert fid.keep_fraction(t[:70], faster / 1.25, 1.0, 10.0) == 1.0  # the smallest such
    assert fid.fit_compress(t[:70], 2.0, 1e6, 10.0) >= 64  # bounded
    assert fid.PROBE_RATES[-1] >= 32  # the probe climbs past what a tiny replica serves
    half = fid.schedule(reqs, 60.0, 1, compress=2.0, keep=0.5, seed=3)
    assert 15 <= len(half) <= 45 and all(0 <= x < 30 for x in half) and half == sorted(half)
    assert fid.schedule(reqs, 60.0, 1, compress=2.0, keep=0.5, seed=3) == half  # seeded
    assert len(fid.schedule(reqs, 60.0, 1, compress=2.0, keep=1.0, seed=3)) == 60


def test_the_sim_reads_load_as_the_live_metrics_pipeline_does():
    # 2 rps from t=3: exports every 10 s; the replica's counter first appears at the export
    # of t=10 (its baseline), so the first increase is seen at t=20 and covers (10, 20].
    arrivals = [3 + k / 2 for k in range(200)]
    assert fid.metrics_rate(arrivals, 19.9, window_s=30, export_s=10) == 0.0
    assert fid.metrics_rate(arrivals, 20.0, window_s=30, export_s=10) == 20 / 30
    assert fid.metrics_rate(arrivals, 47.0, window_s=30, export_s=10) == 60 / 30  # (10, 40]
    assert fid.metrics_rate(arrivals, 75.0, window_s=30, export_s=10) == 60 / 30  # (40, 70]
    assert fid.metrics_rate([], 75.0, 30, 10) == 0.0

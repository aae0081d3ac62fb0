"""Elastic GRPO, the pure parts: what a shrink/grow request means for a running job."""

from __future__ import annotations

import pytest
from r1platform.training import elastic
from r1platform.training.elastic import Request, Resize, decide, plan_workers


def _d(kind, gpus, pool=None, *, workers, cur_pool="h100", engines=0, b=4):
    return decide(Request(kind, gpus, pool), workers=workers, pool=cur_pool, engines=engines,
                  prompts_per_step=b)  # fmt: skip


@pytest.mark.parametrize(
    ("gpus", "engines", "b", "want"),
    [
        (2, 0, 4, 2),
        (3, 0, 4, 2),  # 3 workers cannot split 4 prompts evenly
        (8, 0, 4, 4),  # never more workers than prompts
        (3, 1, 4, 2),  # one GPU stays with the rollout engine
        (1, 1, 4, 0),  # nothing left for a worker: pause
        (0, 0, 4, 0),
        (5, 0, 6, 3),
    ],
)
def test_plan_workers(gpus, engines, b, want):
    assert plan_workers(gpus, engines, b) == want


def test_shrink_releases_workers_and_reports_gpus_after():
    rz = _d("shrink", 1, workers=2)
    assert (rz.workers_before, rz.workers_after) == (2, 1)
    assert (rz.gpus_before, rz.gpus_after, rz.reason) == (2, 1, "reclaim")
    assert rz.pool_after == "h100"


def test_shrink_counts_the_engines_gpus():
    rz = _d("shrink", 2, workers=2, engines=1)  # holds 3: 2 workers + 1 engine
    assert (rz.workers_after, rz.gpus_before, rz.gpus_after) == (1, 3, 2)


def test_shrink_below_minimum_pauses_and_holds_nothing():
    rz = _d("shrink", 1, workers=2, engines=1)
    assert rz.workers_after == 0 and rz.gpus_after == 0 and rz.reason == "pause"
    assert _d("shrink", 0, workers=1).reason == "pause"


def test_shrink_that_asks_for_as_much_or_more_is_a_no_op():
    assert _d("shrink", 2, workers=2) is None
    assert _d("shrink", 5, workers=2) is None
    assert _d("shrink", 0, workers=0) is None  # already paused


def test_shrink_rounds_down_to_an_even_split():
    rz = _d("shrink", 3, workers=4)
    assert rz.workers_after == 2 and rz.gpus_after == 2


def test_grow_on_the_same_pool_adds_workers_never_removes():
    rz = _d("grow", 2, "h100", workers=1)
    assert (rz.workers_after, rz.gpus_after, rz.reason) == (2, 2, "grow")
    assert _d("grow", 1, "h100", workers=2) is None
    assert _d("grow", 2, "h100", workers=2) is None
    assert _d("grow", 2, None, workers=1).pool_after == "h100"  # no pool: stay


def test_grow_to_another_pool_moves_every_worker():
    rz = _d("grow", 1, "a100", workers=2)
    assert (rz.workers_after, rz.pool_after, rz.reason) == (1, "a100", "move")


def test_grow_resumes_a_paused_job_and_ignores_too_small_grants():
    rz = _d("grow", 3, "h100", workers=0, engines=1)
    assert (rz.workers_before, rz.workers_after, rz.gpus_before, rz.gpus_after) == (0, 2, 0, 3)
    assert _d("grow", 1, "h100", workers=0, engines=1) is None


def test_resize_round_trips_through_json():
    rz = _d("shrink", 1, workers=2)
    assert Resize.from_json(rz.to_json()) == rz
    assert Request.from_dict({"kind": "grow", "gpus": "2", "pool": "x"}) == Request("grow", 2, "x")


def test_engine_gpus_follow_the_engine_placement():
    assert elastic.engine_gpus("gpu", 2, None, None) == 2
    assert elastic.engine_gpus("simulated", 2, None, None) == 0  # engines on plain CPUs
    assert elastic.engine_gpus("simulated", 1, "H100", None) == 1
    assert elastic.engine_gpus("simulated", 1, None, "h100") == 1


def test_control_actor_state_machine_as_a_plain_object():
    c = elastic.JobControl("j")
    c.start(2, "h100")
    assert c.current_gpus() == 2 and c.take_request() is None
    c.checkpoint_and_shrink(1)
    c.grow(3, "a100")  # latest request wins
    req = c.take_request()
    assert (req["kind"], req["gpus"], req["pool"]) == ("grow", 3, "a100")
    assert c.take_request() is None
    c.checkpoint_and_shrink(1)
    assert c.current_gpus() == 2  # drops only when the job reports the release
    c.set_held(1, "h100", "resizing")
    st = c.status()
    assert st["gpus"] == 1 and st["state"] == "resizing" and st["pending"]["kind"] == "shrink"
    assert elastic.actor_name("grpo") == "r1p-train-grpo"


def test_a_taken_shrink_stays_visible_until_the_release_is_reported():
    # The trainer takes a shrink, then checkpoints for a while still holding its GPUs. A
    # controller restarted in that window must find the reclaim in flight, not a plain running
    # job whose GPUs it would lend straight back once it pauses.
    from r1platform.pools.demand import Memory
    from r1platform.pools.recovery import JobState, rebuild

    c = elastic.JobControl("j")
    c.start(2, "l4")
    c.set_held(2, "l4", "running")
    c.checkpoint_and_shrink(0)
    assert c.take_request()["kind"] == "shrink"
    st = c.status()
    assert st["state"] == "running" and st["gpus"] == 2
    assert (st["pending"]["kind"], st["pending"]["gpus"]) == ("shrink", 0)
    mem = Memory()
    found = rebuild(mem, {"j": JobState.from_status(st)}, {}, now=st["pending"]["at"] + 5)
    assert [f.reason for f in found] == ["reclaim in flight (pause): completing it"]
    assert mem.pending_shrink == {"j": 0} and mem.last_reclaim["j"] == st["pending"]["at"]
    c.set_held(0, "l4", "paused")  # the release is done: nothing pending any more
    assert c.status()["pending"] is None
    # A taken grow is not kept: the job reports the GPUs it got when its workers start.
    c.grow(2, "l4")
    c.take_request()
    assert c.status()["pending"] is None

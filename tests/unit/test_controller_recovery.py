"""A controller killed in the middle of a reclaim, and its replacement: the new one rebuilds its
memory from the cluster (the jobs' states, Serve's replica targets) and finishes the reclaim
without ever booking a GPU twice, then resumes the job it paused once serving no longer needs
the GPUs. The cluster is the in-memory actuators; the job releases only after a few reads."""

from __future__ import annotations

import pytest
from pools.one_pool_world import Clock, chat_and_grpo, h100_fleet
from r1platform.pools import decisions as rec
from r1platform.pools.control_config import ControllerConfig
from r1platform.pools.controller import Controller
from r1platform.pools.demand import Memory
from r1platform.pools.memory_actuators import (
    MemoryCapacity,
    MemoryServe,
    MemoryTraining,
    StaticLoad,
)
from r1platform.pools.recovery import JobState, rebuild, recover, recover_before_start

FLEET = h100_fleet()  # 16 GPUs
WL = chat_and_grpo(rate=1.0)  # the job may borrow 2..16 GPUs
CFG = ControllerConfig(interval_s=30, lend_cooldown_s=0, down_cooldown_s=120)
BURST = 260.0  # rps: serving wants more than the 14 GPUs the job holds leave, so it pauses


class World:
    """The cluster, which outlives any controller."""

    def __init__(self, tmp_path) -> None:
        self.clock = Clock()
        self.load, self.serve, self.cap = StaticLoad(WL), MemoryServe(), MemoryCapacity()
        self.train = MemoryTraining(release_after=3, clock=self.clock)  # a slow checkpoint
        self.record = str(tmp_path / "decisions.jsonl")

    def controller(self) -> Controller:
        return Controller(
            FLEET, WL, self.load, self.serve, self.cap, self.train, CFG,
            clock=self.clock, record_path=self.record,
        )  # fmt: skip

    def gpus_booked(self) -> int:
        """Serving's GPUs (each replica at the layout Serve built it with) plus the job's."""
        per = {k: tp * pp for k, (tp, pp) in self.serve.layout.items()}
        serving = sum(n * per.get(k, 1) for k, n in self.serve.replicas.items())
        return serving + sum(self.train.gpus.values())

    def cycle(self, ctl: Controller) -> list[rec.Decision]:
        ds = ctl.step()
        for k, lay in ctl.mem.layout.items():  # Serve builds a new deployment at the plan's
            self.serve.layout.setdefault(k, lay)
        assert all(d.kind != "error" for d in ds), ds
        assert self.gpus_booked() <= 16, (self.serve.replicas, self.train.gpus)
        self.clock.t += CFG.interval_s
        return ds


def _kill_mid_reclaim(w: World) -> Controller:
    """Run a controller until it has lent the idle GPUs, raise the load, and stop it right
    after the cycle that asked the job to checkpoint and release (the job has not yet)."""
    old = w.controller()
    for _ in range(2):
        w.cycle(old)
    assert w.train.gpus["grpo"] == 14  # lent everything but serving's replica and reserve
    w.load.rates["chat"] = BURST
    ds = w.cycle(old)
    assert [(d.kind, d.before, d.after) for d in ds if d.kind == "reclaim"] == [("reclaim", 14, 0)]
    assert w.train.gpus["grpo"] == 14 and w.train.pending["grpo"][0] == 0  # mid-reclaim
    return old


def test_restarted_controller_finishes_the_reclaim_without_double_booking(tmp_path):
    w = World(tmp_path)
    _kill_mid_reclaim(w)
    serving_before = dict(w.serve.replicas)
    new = w.controller()
    found = recover(new)
    # Only the half-done reclaim is a decision; the running replicas are on the span.
    assert [(d.kind, d.target, d.before, d.after) for d in found] == [("recover", "grpo", 14, 0)]
    assert "reclaim in flight" in found[0].reason
    assert new.mem.pending_shrink == {"grpo": 0} and new.mem.job_pool == {"grpo": "h100"}
    # While the job checkpoints it keeps its 14 GPUs: serving does not grow into them, and
    # the reclaim is not asked a second time.
    waited = 0
    while True:
        ds = w.cycle(new)
        if w.train.gpus["grpo"] == 0:
            break  # released (paused) at this cycle's read: serving may take the GPUs now
        waited += 1
        assert not [d for d in ds if d.kind in ("scale", "reclaim", "lend")], ds
        assert w.serve.replicas == serving_before
    assert waited >= 1 and w.train.checkpoints["grpo"] == 1  # the one reclaim, never re-asked
    ups = [d for d in ds if d.kind == "scale" and d.after > d.before]
    assert ups and w.serve.replicas[("chat", "h100")] > serving_before[("chat", "h100")]
    # The burst ends: after the cooldown serving shrinks and the paused job is resumed.
    w.load.rates["chat"] = 1.0
    for _ in range(int(CFG.down_cooldown_s // CFG.interval_s) + 3):
        w.cycle(new)
    assert w.train.gpus["grpo"] >= 2, "the paused job was never resumed"
    kinds = [d.kind for d in rec.read_last(100, w.record)]
    assert kinds.count("reclaim") == 1 and "recover" in kinds and kinds[-1] != "error"


def test_without_the_pool_a_fresh_controller_would_double_book(tmp_path):
    """Why recovery exists: the same restart with an empty memory scales serving into the GPUs
    the job still holds (it does not know which pool they are in)."""
    w = World(tmp_path)
    _kill_mid_reclaim(w)
    new = w.controller()
    new.step()  # no recover()
    assert w.train.gpus["grpo"] == 14 and w.gpus_booked() > 16


def test_a_paused_job_keeps_its_pool_and_the_time_it_paused():
    mem = Memory()
    jobs = {
        "a": JobState(0, "h100", "paused", None, since=900.0),
        "b": JobState(4, "l4", "running", {"kind": "grow", "gpus": 6, "pool": "l4", "at": 990.0}),
        "c": JobState(8, "h100", "running"),
        "d": JobState(0, None, "finished"),
    }
    layouts = {("chat", "h100"): (2, 1), ("code", "l4"): (1, 1)}
    found = rebuild(mem, jobs, {("chat", "h100"): 2, ("code", "l4"): 0}, 1000.0, layouts)
    assert mem.layout == {("chat", "h100"): (2, 1)}  # running replicas keep their TP x PP
    assert mem.job_pool == {"a": "h100", "b": "l4", "c": "h100"}
    assert mem.last_reclaim == {"a": 900.0}  # the lend cooldown runs from the pause
    assert mem.pending_grow == {"b": (6, 990.0)} and mem.pending_shrink == {}
    assert mem.last_up == {"chat": 1000.0}  # no scale-down for one cooldown; idle ones untouched
    assert [(f.target, f.before, f.after) for f in found] == [
        ("a", 0, 0), ("b", 4, 6), ("c", 8, 8), ("chat", 2, 2),
    ]  # fmt: skip


def test_a_shrink_the_job_already_carried_out_is_not_pending():
    mem = Memory()
    js = JobState(2, "h100", "resizing", {"kind": "shrink", "gpus": 4, "pool": None, "at": 5.0})
    rebuild(mem, {"j": js}, {}, now=10.0)
    assert mem.pending_shrink == {} and mem.job_pool == {"j": "h100"}


def test_job_state_from_the_control_actors_status():
    status = {"job": "j", "gpus": 0, "pool": "l4", "state": "paused", "pending": None,
              "history": [{"t": 3.0, "gpus": 2, "pool": "l4", "state": "running"},
                          {"t": 7.5, "gpus": 0, "pool": "l4", "state": "paused"}]}  # fmt: skip
    assert JobState.from_status(status) == JobState(0, "l4", "paused", None, 7.5)


@pytest.mark.parametrize("where, method", [("train", "job_state"), ("serve", "current_replicas")])
def test_the_loop_starts_only_once_the_cluster_could_be_read(tmp_path, where, method):
    """A partial view is not safe to act on (the job's pool unknown, its GPUs counted in none):
    each failed read is a recorded decision, and the start waits with the loop's backoff."""
    w = World(tmp_path)
    _kill_mid_reclaim(w)
    {"train": w.train, "serve": w.serve}[where].fail_next(method, times=2)
    new = w.controller()
    waits: list[float] = []
    ds = recover_before_start(new, sleep=waits.append)
    failed = [d for d in ds if d.error]
    assert len(failed) == 2 and all("injected failure" in d.error for d in failed)
    assert not any(d.applied for d in failed) and waits == [5.0, 10.0]
    assert new.mem.pending_shrink == {"grpo": 0}
    w.cycle(new)

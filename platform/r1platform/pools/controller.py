"""Reconcile loop: live load -> plan -> actions on Serve, the autoscaler and training.

One cycle is four phases, each a method that can be called and tested on its own:
  observe -> what runs now (load, replicas, GPUs each job holds, overdue requests);
  plan    -> the demand to provision for (demand.target_rates) and the plan for it;
  act     -> the actions that move toward the plan (decide.decide), applied one by one;
  record  -> decisions to the local record, Prometheus metrics, the cycle's span.
IO sits behind the Protocols in `protocols`: the same loop runs against Ray / GRPO jobs, fakes
in tests, and the simulator. A cycle is one `pools.reconcile` span, with a child per action. A plan that changes a deployment's TP, PP, engine profile or pool is
deployed whole (serve_config(plan) through the Serve actuator, one write, one `deploy`
decision); replica-only changes are set_replicas calls.

A cycle never ends the loop: a failed read or actuator (dashboard, GCS, a job's actor) becomes
an `error` decision with its message and trace id, and `run` retries with backoff. A lend or
reclaim is never assumed done: a grow the job has not taken up within grow_timeout_s is rolled
back (its GPUs stop counting as the job's, and the next plan may offer them again), and a
shrink not carried out within shrink_timeout_s is asked for again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from r1platform.telemetry import get_tracer, set_attributes

from . import decide as rules
from . import decisions as rec
from .control_config import ControllerConfig
from .cycle import (
    Observation,
    Planned,
    lead_times,
    next_wait,
    plan_repacking,
    plan_request,
    settle_in_flight,
)
from .demand import Memory, forecast_error
from .errors import InfeasibleError, PoolsError
from .fleet import Fleet
from .plan_model import Plan
from .planner import plan_one_layout
from .prom import ControllerMetrics
from .protocols import CapacityActuator, FleetSource, LoadSource, ServeActuator, TrainingActuator
from .serve_config import serve_config
from .workloads import Workloads

TRACER = "r1platform.pools"
Pair = tuple[str, str]


class Controller:
    """One reconcile cycle per `step()`; `run()` repeats it every interval."""

    def __init__(
        self,
        fleet: FleetSource,
        workloads: Workloads,
        load: LoadSource,
        serve: ServeActuator,
        capacity: CapacityActuator,
        training: TrainingActuator,
        cfg: ControllerConfig | None = None,
        *,
        record_path: str | None = None,
        record: bool = True,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self._fleet = fleet
        self.workloads = workloads
        self.load, self.serve, self.capacity, self.training = load, serve, capacity, training
        self.cfg = cfg or ControllerConfig()
        self.mem = Memory()
        self.record_path, self.record_enabled = record_path, record
        self.clock, self.dry_run = clock, dry_run
        self.metrics = metrics
        self.last_plan: Plan | None = None
        self._surplus: dict[Pair, int] = {}  # D@P running more than the last plan wanted
        self.failures_in_a_row = 0
        self.cycles_done = 0
        self.last_error: str | None = None
        self.tracer = get_tracer(TRACER)

    @property
    def deploys(self) -> bool:  # a Serve actuator without deploy (the sim's) cannot relayout
        return hasattr(self.serve, "deploy")

    def fleet(self) -> Fleet:
        return self._fleet() if callable(self._fleet) else self._fleet

    # ------------------------------------------------------------------ the cycle
    def step(self) -> list[rec.Decision]:
        """observe -> plan -> act -> record. Never raises for a failed cycle: the failure is
        the cycle's one `error` decision (run() then backs off)."""
        self.mem.cycle += 1
        with self.tracer.start_as_current_span("pools.reconcile") as root:
            set_attributes(root, {"cycle": self.mem.cycle})
            try:
                obs = self.observe(self.clock(), root)
                try:
                    planned = self.plan(obs)
                except PoolsError as e:  # infeasible or unfit: a planning outcome, not a fault
                    planned, ds = None, [self._plan_failed(e, root)]
                else:
                    ds = self.act(obs, planned, root)
            except Exception as e:  # one bad cycle must not end the loop
                return self._cycle_failed(e, root)
            finally:
                self.cycles_done += 1
            self.record(ds, obs, planned)
            self.failures_in_a_row, self.last_error = 0, None
            return ds

    def observe(self, now: float, span: trace.Span = trace.INVALID_SPAN) -> Observation:
        """Read load, replicas and training GPUs; settle requests that completed, roll back
        grows never taken up and note shrinks that are overdue."""
        fleet = self.fleet()
        loads = self.load.read()
        serving_now = self.serve.current_replicas()
        raw = {j.name: self.training.current_gpus(j.name) for j in self.workloads.training}
        absent = sorted(j for j, g in raw.items() if g is None)
        workloads = self.workloads
        if absent:
            workloads = workloads.model_copy(
                update={"training": [j for j in workloads.training if j.name not in absent]}
            )
            set_attributes(span, {"jobs_not_running": ",".join(absent)})
        held = {j: int(g) for j, g in raw.items() if g is not None}
        fl = settle_in_flight(held, self.mem, now, self.cfg)
        err = forecast_error(self.mem.forecast, loads) if self.mem.forecast else None
        return Observation(
            now,
            fleet,
            workloads,
            loads,
            serving_now,
            fl.training_now,
            absent,
            fl.rolled_back,
            fl.overdue,
            err,
        )

    def plan(self, obs: Observation) -> Planned:
        """The plan for this cycle's demand (updates the loop's memory); PoolsError if none fits."""
        defaults = {w.name: w.request_rate for w in self.workloads.serving}
        leads = lead_times(obs, self.cfg)  # once a cycle: the demand and decide both use it
        req = plan_request(obs, self.mem, self.cfg, defaults, self._surplus, leads, self.deploys)
        rates = dict(req.rates)
        with self.tracer.start_as_current_span("pools.plan") as ps:
            try:
                try:
                    p = plan_repacking(req, obs.training_now, self.mem.job_pool, self.cfg, ps)
                except InfeasibleError:
                    # Headroom and lookahead are wishes; the measured load is the need.
                    raw = {k: v.request_rate for k, v in obs.loads.items() if k in rates}
                    p = plan_one_layout(replace(req, rates={**rates, **raw}, keep={}))
                    set_attributes(ps, {"degraded": "planned for measured load only"})
            except PoolsError as e:
                set_attributes(ps, {"feasible": False, "reason": str(e)})
                raise
            set_attributes(
                ps,
                {
                    "feasible": True,
                    "method": p.solver.get("method", ""),
                    "solve_s": float(p.solver.get("time_s", 0.0)),
                    "cost_per_hour_after": p.cost_per_hour,
                    "rates": ",".join(f"{k}={v:.3f}" for k, v in sorted(rates.items())),
                },
            )
        self.last_plan = p
        return Planned(p, rates, leads)

    def act(self, obs: Observation, planned: Planned, root=None) -> list[rec.Decision]:
        """Settle rolled-back and overdue requests, then apply the actions toward the plan
        one by one; an actuator's failure is recorded on its decision, not raised."""
        p, now = planned.plan, obs.now
        out = [self._rollback(job, *v) for job, v in sorted(obs.rolled_back.items())]
        out += [self._retry_shrink(job, target, obs) for job, target in sorted(obs.overdue.items())]
        jobs = obs.workloads.training
        actions = rules.decide(
            obs.fleet,
            p,
            obs.serving_now,
            obs.training_now,
            self.mem,
            now,
            self.cfg,
            {j.name: j.priority for j in jobs},
            {j.name: max(j.gpus.min, 1) for j in jobs},
            planned.leads,
        )
        self._surplus = rules.surplus(p, obs.serving_now, actions)
        for s_ in p.serving:
            self.mem.layout.setdefault((s_.deployment, s_.pool), (s_.tp, s_.pp))
        after = dict(obs.serving_now)
        for a in actions:
            if a.kind == "scale":
                after[(a.target, a.pool)] = a.after
        costs = rules.serving_cost(p, obs.serving_now), rules.serving_cost(p, after)
        # A change of TP, PP, engine profile or pool is one whole Serve config write (Serve
        # rolls the changed deployments itself); this cycle's scale actions ride in it. An
        # actuator without deploy (the simulator's) keeps scaling replica by replica.
        changes = {}
        if self.deploys:
            changes = rules.layout_changes(p, obs.serving_now, self.mem.deployed, self.mem.layout)
        deploy_error = None
        if changes:
            d, deploy_error = self._deploy(changes, rules.applied_plan(p, after), obs, costs)
            out.append(d)
        for a in actions:
            folded = bool(changes) and a.kind == "scale"
            with self.tracer.start_as_current_span(f"pools.{a.kind}") as s:
                if folded:
                    error = deploy_error
                    if error is None and not self.dry_run and a.after > a.before:
                        self.mem.last_up[a.target] = now
                else:
                    error = self._apply(a, now)
                attrs = {
                    "pool": a.pool,
                    "gpu": a.gpu,
                    ("deployment" if a.kind == "scale" else "job"): a.target,
                    "before": a.before,
                    "after": a.after,
                    "reason": a.reason,
                    "cost_per_hour_before": costs[0],
                    "cost_per_hour_after": costs[1],
                    "dry_run": self.dry_run,
                }
                if error:
                    attrs["error"] = error
                    s.set_status(StatusCode.ERROR, error)
                set_attributes(s, attrs)
                out.append(
                    self._decision(
                        a.kind,
                        a.target,
                        a.pool,
                        a.gpu,
                        a.before,
                        a.after,
                        a.reason + ("; applied by the deploy" if folded else ""),
                        *costs,
                        s,
                        error,
                    )
                )
        failed = self._request_capacity(p, root)
        if failed is not None:
            out.append(failed)
        if root is not None:
            set_attributes(
                root,
                {
                    "actions": len(actions),
                    "cost_per_hour_before": costs[0],
                    "cost_per_hour_after": costs[1],
                    "plan_cost_per_hour": p.cost_per_hour,
                },
            )
        return out

    def record(
        self, ds: list[rec.Decision], obs: Observation | None, planned: Planned | None = None
    ) -> None:
        """Append the cycle's decisions to the record and fold them into the metrics."""
        if self.record_enabled:
            rec.append(ds, self.record_path)
        if self.metrics is not None:
            replicas = None
            if obs is not None and planned is not None:
                # A dry run shows the targets it would have set.
                replicas = dict(obs.serving_now)
                for d in ds:
                    if d.kind == "scale" and d.error is None and d.pool:
                        replicas[(d.target, d.pool)] = int(d.after)
            err = obs.forecast_error if obs is not None else None
            self.metrics.record(ds, replicas, err)

    # ------------------------------------------------------------------ helpers
    def _plan_failed(self, e: PoolsError, root) -> rec.Decision:
        set_attributes(root, {"error": str(e)})
        d = self._decision("plan", "fleet", None, None, 0, 0, str(e), None, None, root, str(e))
        return d

    def _cycle_failed(self, e: Exception, root) -> list[rec.Decision]:
        msg = f"{type(e).__name__}: {e}"
        root.record_exception(e)
        root.set_status(StatusCode.ERROR, msg)
        set_attributes(root, {"error": msg})
        self.failures_in_a_row += 1
        self.last_error = msg
        reason = f"cycle failed ({self.failures_in_a_row} in a row); retry with backoff"
        d = self._decision("error", "cycle", None, None, 0, 0, reason, None, None, root, msg)
        self.record([d], None)
        return [d]

    def _rollback(self, job: str, offered: int, held: int) -> rec.Decision:
        reason = (
            f"lend of {offered} GPUs not taken up within {self.cfg.grow_timeout_s:g}s; "
            f"booking rolled back to the {held} the job holds"
        )
        with self.tracer.start_as_current_span("pools.rollback") as s:
            set_attributes(s, {"job": job, "before": offered, "after": held, "reason": reason})
            pool = self.mem.job_pool.get(job)
            return self._decision("rollback", job, pool, None, offered, held, reason, None, None, s)

    def _retry_shrink(self, job: str, target: int, obs: Observation) -> rec.Decision:
        held = obs.training_now.get(job, 0)
        reason = f"job still holds {held} GPUs {self.cfg.shrink_timeout_s:g}s after a reclaim"
        with self.tracer.start_as_current_span("pools.reclaim") as s:
            error = None
            if not self.dry_run:
                try:
                    self.training.request_checkpoint_and_shrink(job, target)
                    self.mem.shrink_since[job] = obs.now
                except Exception as e:  # recorded, retried next cycle
                    error = f"{type(e).__name__}: {e}"
                    s.set_status(StatusCode.ERROR, error)
            set_attributes(s, {"job": job, "before": held, "after": target, "retry": True})
            pool = self.mem.job_pool.get(job)
            return self._decision(
                "retry", job, pool, None, held, target, reason, None, None, s, error
            )

    def _deploy(
        self, changes: dict[Pair, str], applied: Plan, obs: Observation, costs: tuple
    ) -> tuple[rec.Decision, str | None]:
        """Deploy serve_config(applied) through the Serve actuator in one write. Booked (the
        new layouts pinned, the full layouts remembered) only once the actuator accepted it:
        a failure leaves the loop's view as it was, so the next cycle deploys again."""
        what = "; ".join(f"{d}@{q}: {c}" for (d, q), c in sorted(changes.items()))
        before = sum(n for (d, _), n in obs.serving_now.items() if d in {k[0] for k in changes})
        after = sum(s.replicas for s in applied.serving if (s.deployment, s.pool) in changes)
        with self.tracer.start_as_current_span("pools.deploy") as span:
            error = None
            if not self.dry_run:
                try:
                    self.serve.deploy(serve_config(applied))
                except Exception as e:  # recorded; the next cycle tries again
                    error = f"{type(e).__name__}: {e}"
            if error is None and not self.dry_run:
                rules.book_deployed(self.mem, applied)
            attrs = {
                "deployments": ",".join(f"{d}@{q}" for d, q in sorted(changes)),
                "changes": what,
                "before": before,
                "after": after,
                "cost_per_hour_before": costs[0],
                "cost_per_hour_after": costs[1],
                "dry_run": self.dry_run,
            }
            if error:
                attrs["error"] = error
                span.set_status(StatusCode.ERROR, error)
            set_attributes(span, attrs)
            pools = sorted({q for _, q in changes})
            reason = f"layout change ({what}): the plan's Serve config in one write"
            target = ",".join(sorted({d for d, _ in changes}))
            pool = pools[0] if len(pools) == 1 else None
            d = self._decision(
                "deploy", target, pool, None, before, after, reason, *costs, span, error
            )
            return d, error

    def _apply(self, a: rules.Action, now: float) -> str | None:
        """Act; an actuator's failure is returned (recorded on the span and the decision), so
        one unreachable deployment or job cannot stop the loop for all the others. Nothing is
        booked unless the actuator accepted the call."""
        if self.dry_run:
            return None
        try:
            if a.kind == "scale":
                self.serve.set_replicas(a.target, a.pool, a.after)
                if a.after > a.before:
                    self.mem.last_up[a.target] = now
            elif a.kind == "reclaim":
                self.training.request_checkpoint_and_shrink(a.target, a.after)
                self.mem.pending_shrink[a.target] = a.after
                self.mem.shrink_since[a.target] = now
                self.mem.pending_grow.pop(a.target, None)
                self.mem.last_reclaim[a.target] = now
            else:
                self.training.grow(a.target, a.after, a.pool)
                self.mem.job_pool[a.target] = a.pool
                self.mem.pending_grow[a.target] = (a.after, now)
        except Exception as e:  # see the docstring
            return f"{type(e).__name__}: {e}"
        return None

    def _request_capacity(self, p: Plan, root) -> rec.Decision | None:
        want = {u.pool: u.gpus_serving + u.gpus_training for u in p.pools}
        with self.tracer.start_as_current_span("pools.capacity") as s:
            set_attributes(s, {"gpus": ",".join(f"{k}={v}" for k, v in sorted(want.items()))})
            if self.dry_run:
                return None
            try:
                self.capacity.request(want)
            except Exception as e:  # the autoscaler ask is retried next cycle
                msg = f"{type(e).__name__}: {e}"
                s.set_status(StatusCode.ERROR, msg)
                total = sum(want.values())
                reason = "autoscaler capacity request failed"
                return self._decision(
                    "capacity", "fleet", None, None, 0, total, reason, None, None, s, msg
                )
        return None

    def _decision(self, kind, target, pool, gpu, before, after, reason, cb, ca, span, error=None):
        where = rec.Where(self.clock(), self.mem.cycle, span, applied=not self.dry_run)
        return rec.decision(where, kind, target, pool, gpu, before, after, reason, cb, ca, error)

    def health(self) -> dict:
        """What a watcher needs: cycles run, failures in a row and the last error."""
        return {
            "cycles": self.cycles_done,
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": self.last_error,
        }

    def next_wait_s(self) -> float:
        """Seconds to the next cycle: backoff after failures; soon after a reclaim (the freed
        GPUs are wanted by serving); otherwise the interval."""
        return next_wait(self.cfg, self.mem, self.failures_in_a_row)

    def run(
        self,
        *,
        once: bool = False,
        max_cycles: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Cycle every interval_s; after a failed cycle, sooner, with exponential backoff."""
        n = 0
        while True:
            started = time.monotonic()
            self.step()
            n += 1
            if once or (max_cycles is not None and n >= max_cycles):
                return
            sleep(max(self.next_wait_s() - (time.monotonic() - started), 0.0))

"""The reconcile loop as a detached Ray actor (`r1p control --actor`), and its watch.

The actor runs the loop on one thread and answers `health()` on another, so a watcher can
always ask how it is doing: `starting`, `running` (with cycles run, failures in a row and the
last error), or `failed` with the exception that ended the loop. A dead actor reads as `dead`.
`r1p control --actor` waits for the first cycle and reports it; `r1p status` shows the health.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from r1platform.contracts.actors import CONTROLLER_ACTOR, NAMESPACE


class ControllerLoop:
    """Actor body: build the live controller from the YAML texts, run it, report health."""

    def __init__(self, pools_text, wl_text, cfg, metrics_url, record_path, dashboard) -> None:
        self.state, self.error = "starting", None
        self.args = (pools_text, wl_text, cfg, metrics_url, record_path, dashboard)
        self.ctl = None

    def _build(self):
        import tempfile

        from .controller import Controller
        from .fleet import load_fleet
        from .ray_actuators import live, live_fleet
        from .workloads import load_workloads

        pools_text, wl_text, cfg, metrics_url, record_path, dashboard = self.args
        d = Path(tempfile.mkdtemp())
        (d / "pools.yaml").write_text(pools_text)
        (d / "workloads.yaml").write_text(wl_text)
        fleet = load_fleet(d / "pools.yaml")
        wl = load_workloads(d / "workloads.yaml", fleet.catalog)
        parts = live("auto", metrics_url, dashboard, cfg.rate_window_s, configured=fleet)
        from .recovery import recover_before_start

        rp = str(record_path) if record_path else None
        ctl = Controller(live_fleet(fleet), wl, *parts, cfg, record_path=rp)
        recover_before_start(ctl)  # a restarted actor picks up the reclaims and lends in flight
        return ctl

    def run(self) -> str:
        if self.state in ("running", "failed"):
            return self.state  # one loop per actor; a second `run` is a no-op
        self.state = "running"
        try:
            self.ctl = self._build()
            self.ctl.run()
        except BaseException as e:
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            raise
        return self.state

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "error": self.error}
        if self.ctl is not None:
            out.update(self.ctl.health())
        return out


def start_controller_actor(
    pools: Path,
    workloads: Path,
    cfg,
    *,
    address: str | None,
    metrics_url: str | None,
    record_path: Path | None,
    dashboard: str = "http://127.0.0.1:8265",
    wait_s: float = 120.0,
) -> dict[str, Any]:
    """Start the loop as a detached actor (survives the CLI; one per cluster), then watch it
    until its first cycle has run or it failed. Returns its health."""
    import ray

    ray.init(
        address=address or "auto",
        namespace=NAMESPACE,
        ignore_reinit_error=True,
        logging_level="ERROR",
    )
    args = (Path(pools).read_text(), Path(workloads).read_text(), cfg, metrics_url, record_path)
    cls = ray.remote(num_cpus=0, max_concurrency=2)(ControllerLoop)
    actor = cls.options(name=CONTROLLER_ACTOR, lifetime="detached", get_if_exists=True).remote(
        *args, dashboard
    )
    run_ref = actor.run.remote()
    return watch(actor, run_ref, wait_s)


def watch(actor, run_ref, wait_s: float, poll_s: float = 1.0) -> dict[str, Any]:
    """Health once the first cycle is done, the loop failed, or wait_s passed."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        done, _ = ray.wait([run_ref], timeout=0)
        if done:  # the loop ended: that is a failure for a loop meant to run forever
            try:
                ray.get(run_ref)
            except Exception as e:  # the actor's exception, or its death
                return {**_health(actor), "state": "failed", "error": _root_cause(e)}
        h = _health(actor)
        if h["state"] in ("failed", "dead") or h.get("cycles", 0) >= 1:
            return h
        if time.monotonic() > deadline:
            return {**h, "error": h.get("error") or f"no cycle completed within {wait_s:g}s"}
        time.sleep(poll_s)


def _root_cause(e: Exception) -> str:
    cause = getattr(e, "cause", None) or e
    return f"{type(cause).__name__}: {cause}"


def _health(actor) -> dict[str, Any]:
    import ray

    try:
        return ray.get(actor.health.remote(), timeout=10)
    except Exception as e:  # an actor that died answers nothing
        return {"state": "dead", "error": _root_cause(e)}


def controller_health() -> dict[str, Any] | None:
    """Health of the cluster's controller actor; None when there is none (ray.init first)."""
    import ray

    try:
        actor = ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE)
    except ValueError:
        return None
    return _health(actor)


def describe(h: dict[str, Any] | None) -> str:
    """One line for a human: state, cycles, failures in a row, last error."""
    if h is None:
        return "controller: not running (start it with `r1p control --actor`)"
    parts = [f"controller: {h['state']}"]
    if "cycles" in h:
        parts.append(f"{h['cycles']} cycle(s)")
    if h.get("failures_in_a_row"):
        parts.append(f"{h['failures_in_a_row']} failed in a row")
    if h.get("error") or h.get("last_error"):
        parts.append(f"error: {h.get('error') or h.get('last_error')}")
    return ", ".join(parts)

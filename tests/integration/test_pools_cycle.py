"""End to end on the `r1p up` cluster: the pool controller (`r1p control`, a
separate process exporting its spans over OTLP/HTTP to a receiver in this test) lends an idle
GPU of the L4 pool to a running GRPO job (`ray job submit -- python jobs/grpo.py`), reclaims it
with a checkpoint when a burst of chat requests needs more serving replicas, and gives it back
after the burst. The story is read back from the exported spans; the job's own log shows it
lost no step beyond the checkpoint each resize took.

Everything is real: Ray head + a virtual L4 node (4 `pool:l4` units), Serve replicas with vLLM
CPU engines, Ray Train workers, Serve's REST API for replica targets, Ray's metrics agent for
load, `request_resources` for capacity. Only the fleet is simulated (no GPUs here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from poolscene import (
    CONTROL_ENV,
    DASHBOARD,
    ROOT,
    Burst,
    control_command,
    running_replicas,
    submit_grpo,
    up_cluster,
)
from waiting import jsonl, wait_for

pytestmark = pytest.mark.integration

JOB = "cycle"  # the run name, and the training workload's name
B = 4  # prompts per GRPO step
# One CPU-run replica is declared to carry 1 rps (measured profiles override the roofline the
# same way on GPUs), so a 2 rps burst (x1.15 headroom) needs 3 replicas: one more than the free
# GPU allows, and well short of 4.
WORKLOADS = """serving:
  - {name: tiny-r1, model: tiny-r1, request_rate: 0.2, avg_input_tokens: 16,
     avg_output_tokens: 8, slo: {ttft_p99_s: 1.0, tpot_p99_s: 0.1}, gpu_types: [L4],
     replica_rps: {L4: 1.0}}
training:
  - {name: cycle, model: tiny-r1, gpus: {min: 1, max: 2}, gpu_types: [L4], priority: 1}
"""
BURST_RPS = 2.0


# ------------------------------------------------------------------ OTLP/HTTP receiver
class SpanSink:
    """Collects spans a real OTLP/HTTP exporter posts to /v1/traces (protobuf)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = ExportTraceServiceRequest.FromString(body)
                with sink.lock:
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            sink.spans.extend(_span_dict(s) for s in ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return sorted((s for s in self.spans if s["name"] == name), key=lambda s: s["start"])


def _span_dict(s: Any) -> dict[str, Any]:
    attrs = {}
    for kv in s.attributes:
        v = kv.value
        attrs[kv.key] = getattr(v, v.WhichOneof("value"))
    return {
        "name": s.name,
        "span_id": s.span_id.hex(),
        "parent": s.parent_span_id.hex() or None,
        "start": s.start_time_unix_nano,
        "status": s.status.code,
        "attrs": attrs,
    }


# ------------------------------------------------------------------ helpers
# ------------------------------------------------------------------ the cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from up_cluster(tmp_path_factory, "cycle", WORKLOADS)


def test_burst_reclaims_from_grpo_and_gives_back_traced(cluster):
    from ray.job_submission import JobSubmissionClient

    d: Path = cluster["dir"]
    metrics = d / "out" / "metrics.jsonl"
    jobs = JobSubmissionClient(DASHBOARD)
    job_id = submit_grpo(jobs, JOB, 1, B, d / "out")
    sink = SpanSink()
    control = None
    burst = None
    log = open(d / "control.log", "w")  # noqa: SIM115 - closed in finally
    try:
        steps = lambda: [r for r in jsonl(metrics) if "event" not in r]  # noqa: E731
        resizes = lambda: [r for r in jsonl(metrics) if r.get("event") == "resize"]  # noqa: E731
        wait_for(lambda: len(steps()) >= 3, "the GRPO job's first steps", 420)

        env = {**os.environ, **CONTROL_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
               "OTEL_BSP_SCHEDULE_DELAY": "500"}  # fmt: skip
        control = subprocess.Popen(
            control_command(d), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )

        # 1. Quiet: the idle GPUs of the pool are lent to the job, which grows 1 -> 2 workers.
        wait_for(lambda: [r for r in resizes() if r["reason"] == "grow"], "the job to grow", 300)
        wait_for(lambda: any(r["workers"] == 2 for r in steps()), "a 2-worker step", 300)

        # 2. Burst: serving needs 3 replicas; the job is shrunk with a checkpoint to make room.
        burst = Burst(cluster["base"], BURST_RPS).start()
        wait_for(lambda: [r for r in resizes() if r["reason"] == "reclaim"], "the reclaim", 300)
        wait_for(lambda: running_replicas() == 3, "3 serving replicas running", 420, every=2)
        time.sleep(10)  # the 3 replicas carry the burst for a while
        burst.stop()

        # 3. After the burst: back to one replica, and the GPU goes back to the job.
        wait_for(lambda: running_replicas() == 1, "the scale-down to 1 replica", 300, every=2)
        wait_for(lambda: len([r for r in resizes() if r["reason"] == "grow"]) == 2,
              "the job to grow again", 300)  # fmt: skip
        regrow_step = resizes()[-1]["step"]
        wait_for(
            lambda: any(r["step"] > regrow_step + 1 for r in steps()), "steps after regrow", 300
        )
    finally:
        if burst is not None and burst.stop_at is None:
            burst.stop()
        if control is not None:
            control.send_signal(signal.SIGINT)  # exits through the OTel provider's flush
            try:
                control.wait(timeout=60)
            except subprocess.TimeoutExpired:
                control.kill()
        log.close()
        jobs.stop_job(job_id)

    # ---- from the exported spans: lend -> reclaim + scale up -> scale down + lend
    reconciles = {s["span_id"] for s in sink.named("pools.reconcile")}
    acts = sorted(sink.named("pools.scale") + sink.named("pools.reclaim") +
                  sink.named("pools.lend"), key=lambda s: s["start"])  # fmt: skip
    assert acts and all(s["parent"] in reconciles for s in acts)
    assert all(s["status"] != 2 for s in acts), [s["attrs"] for s in acts if s["status"] == 2]
    story = [
        (s["name"].removeprefix("pools."), s["attrs"]["before"], s["attrs"]["after"]) for s in acts
    ]
    lend1 = story.index(("lend", 1, 2))
    reclaim = story.index(("reclaim", 2, 1), lend1)
    up = next(i for i, (k, b, a) in enumerate(story) if k == "scale" and a == 3 and i > lend1)
    down = next(i for i, (k, b, a) in enumerate(story) if k == "scale" and a < b and i > up)
    lend2 = story.index(("lend", 1, 2), reclaim + 1)
    assert lend2 > down, story
    # No flapping: during the burst nothing is scaled down or lent back.
    flaps = [x for x in story[reclaim + 1 : down] if x[0] == "lend" or x[2] < x[1]]
    assert not flaps, story
    r = acts[reclaim]["attrs"]
    assert (r["job"], r["pool"], r["gpu"]) == (JOB, "l4", "L4")
    assert "checkpoint" in r["reason"]
    u = acts[up]["attrs"]
    assert u["deployment"] == "tiny-r1" and u["cost_per_hour_after"] > u["cost_per_hour_before"]
    assert any(k == "scale" and b > a == 1 for k, b, a in story[down:]), story  # back to 1
    assert "lent to training" in acts[lend2]["attrs"]["reason"]
    plans = sink.named("pools.plan")
    assert plans and all(p["attrs"]["feasible"] for p in plans)
    caps = sink.named("pools.capacity")  # request_resources ran against the live GCS
    assert caps and all(c["attrs"]["gpus"].startswith("l4=") for c in caps)
    recorded = [json.loads(x) for x in (d / "decisions.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["before"], x["after"]) for x in recorded] == story

    # ---- from the job: every resize resumed from the checkpoint of the step it was taken at
    events = resizes()
    assert [e["reason"] for e in events] == ["grow", "reclaim", "grow"]
    assert [(e["workers_before"], e["workers_after"]) for e in events] == [(1, 2), (2, 1), (1, 2)]
    for e in events:
        assert Path(e["checkpoint"]).name == f"step_{e['step']:06d}"
    rows = steps()
    assert [x["step"] for x in rows] == list(range(len(rows)))  # no step lost or repeated
    for x in rows[1:]:
        assert x["weights_version"] == x["step"] and x["prompts_seen"] == x["step"] * B
        phase = sum(x["step"] > e["step"] for e in events)
        assert x["workers"] == [1, 2, 1, 2][phase], x["step"]

    # ---- serving: every request of the burst was answered
    assert burst is not None and not burst.errors, burst.errors[:3]
    assert burst.codes and set(burst.codes) == {200}
    print(f"cycle: {len(story)} actions {story}; {len(burst.codes)} burst requests all 200; "
          f"resizes at steps {[e['step'] for e in events]}")  # fmt: skip

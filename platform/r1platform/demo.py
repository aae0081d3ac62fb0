"""`make demo`: the whole platform on one machine, end to end.

up → one chat (reasoning and answer shown apart) → a GRPO job through the Ray Jobs API with
its progress streamed → the trained checkpoint served as a second model → the same question
before and after → a summary with the endpoint, the placement plan and the job result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from r1platform import localcluster
from r1platform.tasks import arithmetic

console = Console()
ROOT = Path(__file__).resolve().parents[2]
TRAINED_ID = "tiny-r1-grpo"


def r1p(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("r1p")), *args], check=True, cwd=ROOT)


def ask(base_url: str, model: str, question: str) -> tuple[str, str]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("R1P_DEMO_KEY", "local"))
    r = client.chat.completions.create(
        model=model,
        messages=arithmetic.question_to_messages(question),
        max_tokens=64,
        temperature=0,
    )
    msg = r.choices[0].message
    return (msg.model_extra or {}).get("reasoning_content") or "", msg.content or ""


def show_answer(title: str, reasoning: str, answer: str) -> None:
    console.print(Panel(f"[dim]reasoning:[/] {reasoning}\n[bold]answer:[/] {answer}", title=title))


def compare_models(base_url: str, n: int = 8) -> None:
    """A few held-out questions, greedy, graded like the job's accuracy reward."""
    from r1platform.training.rewards import accuracy_reward

    table = Table(
        "question",
        "expected",
        "tiny-r1 (before)",
        f"{TRAINED_ID} (after)",
        title="held-out questions, greedy",
    )
    for row in arithmetic.build_split("test", n, 0):
        cells = []
        for model in ("tiny-r1", TRAINED_ID):
            _, content = ask(base_url, model, row["question"])
            ok = accuracy_reward([f"</think>{content}"], answer=[row["answer"]])[0] == 1.0
            cells.append(f"{'[green]✓' if ok else '[red]✗'}[/] {content[:28]}")
        table.add_row(row["question"], row["answer"], *cells)
    console.print(table)


def serve_trained(checkpoint: str) -> None:
    """Redeploy the app with the trained checkpoint as a second model beside the base one:
    a derived settings file, the same declarative deploy `r1p up` does."""
    import yaml

    from r1platform.config import load_settings

    settings = load_settings()
    models = {k: v.model_dump() for k, v in settings.models.items()}
    base = next(iter(models.values()))
    models[TRAINED_ID] = {
        **base,
        "path": checkpoint,
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    }
    derived = localcluster.state_path().with_name("demo-settings.yaml")
    derived.write_text(yaml.safe_dump({**settings.model_dump(mode="json"), "models": models}))
    state = localcluster.load_state()
    assert state is not None
    localcluster.deploy_serve_app(state.dashboard_url, str(derived), settings.serve.port)
    url = state.serve_url.removesuffix("/v1")
    if not localcluster.wait_for_models(url, [*models], timeout_s=600):
        raise RuntimeError(f"{TRAINED_ID} did not become ready")


def plan_summary() -> dict[str, Any]:
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("r1p")),
            "plan",
            "-p",
            "configs/pools/local.yaml",
            "-w",
            "configs/workloads/local.yaml",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout)


WORKLOADS = ROOT / "configs" / "workloads" / "local.yaml"


def demo_job_name() -> str:
    """The workload file's training job: the demo job runs under that name, so `r1p control`
    on the same files sees it (and can lend it GPUs) through its control actor."""
    import yaml

    return yaml.safe_load(WORKLOADS.read_text())["training"][0]["name"]


def grpo_args() -> list[str]:
    # The demo job trains on the borrowed H100 pool while serving keeps the L4 pool.
    extra = os.environ.get("R1P_DEMO_GRPO_ARGS", "").split()
    return [
        "--run_name", demo_job_name(),
        "--accelerator_type", "H100", "--train_pool", "h100", "--rollout_pool", "h100",
        *extra,
    ]  # fmt: skip


def main() -> int:
    os.environ.setdefault("R1P_CONFIG", str(ROOT / "configs" / "local.yaml"))
    state = localcluster.load_state()
    if not localcluster.cluster_alive(state):
        if state is not None:  # a dead cluster's processes and files: clear them first
            r1p("down")
        console.rule("r1p up")
        r1p("up")
        state = localcluster.load_state()
    assert state is not None
    localcluster.use_cluster_auth(state)  # the Jobs client below presents the Ray token
    question = arithmetic.build_split("test", 1, 0)[0]["question"]
    console.rule(f"chat with tiny-r1: {question}")
    before = ask(state.serve_url, "tiny-r1", question)
    show_answer("tiny-r1 (base)", *before)

    console.rule("GRPO job via the Ray Jobs API")
    from r1platform.training.job import submit_and_stream

    job = submit_and_stream(state.dashboard_url, grpo_args())
    if job.get("status") != "SUCCEEDED" or not job.get("checkpoint"):
        console.print(f"[red]the GRPO job did not succeed:[/] {job.get('error') or job}")
        return 1

    console.rule(f"serving the trained checkpoint as {TRAINED_ID}")
    serve_trained(job["checkpoint"])
    after = ask(state.serve_url, TRAINED_ID, question)
    show_answer("tiny-r1 (base), before", *before)
    show_answer(
        f"{TRAINED_ID}, after GRPO (expected {arithmetic.solve_question(question)})", *after
    )
    compare_models(state.serve_url)

    plan = plan_summary()
    table = Table("what", "value", title="summary")
    table.add_row("endpoint", state.serve_url)
    table.add_row("dashboard", state.dashboard_url)
    for s in plan.get("serving", []):
        table.add_row(
            f"plan: serve {s['deployment']}",
            f"{s['replicas']}x {s['gpu']} on {s['pool']} (${s['cost_per_hour']:.2f}/h)",
        )
    for t in plan.get("training", []):
        table.add_row(f"plan: train {t['job']}", f"{t['gpus']} GPUs borrowed from {t['pool']}")
    m = job.get("metrics") or {}
    table.add_row("job", f"{job['job_id']} {job['status']}")
    curve = job.get("eval_curve") or []
    if curve:
        (s0, a0), (s1, a1) = curve[0], curve[-1]
        table.add_row("held-out eval_accuracy", f"step {s0}: {a0:.2f} → step {s1}: {a1:.2f}")
    table.add_row("final step metrics", ", ".join(f"{k}={v}" for k, v in list(m.items())[:6]))
    table.add_row("checkpoint", str(job["checkpoint"]))
    console.print(table)
    console.print(
        f"call it:  curl {state.serve_url}/chat/completions -H 'Content-Type: application/json' "
        f"""-d '{{"model": "{TRAINED_ID}", "messages": [{{"role": "user", "content": "12+30"}}]}}'""",
        soft_wrap=True,
    )
    console.print(f"or with the openai client: OpenAI(base_url={state.serve_url!r}, api_key=...)")
    console.print("stop everything with [bold]make down[/] (or `.venv/bin/r1p down`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

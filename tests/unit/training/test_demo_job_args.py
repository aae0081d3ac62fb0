"""The demo's GRPO job runs under the training workload's name, so `r1p control` on
configs/workloads/local.yaml steers that very job."""

from pathlib import Path

import yaml
from r1platform import demo
from r1platform.contracts.actors import training_actor_name
from r1platform.training.settings import parse_settings

ROOT = Path(__file__).resolve().parents[3]


def test_demo_job_name_is_the_workload_files_training_job(monkeypatch):
    monkeypatch.delenv("R1P_DEMO_GRPO_ARGS", raising=False)
    workloads = yaml.safe_load((ROOT / "configs/workloads/local.yaml").read_text())
    names = [w["name"] for w in workloads["training"]]
    s = parse_settings(demo.grpo_args())
    assert s.run_name in names and s.run_name != "grpo"
    # The controller reaches the job through this actor name.
    assert training_actor_name(s.run_name) == f"r1p-train-{names[0]}"
    assert s.accelerator_type == "H100" and s.train_pool == "h100"

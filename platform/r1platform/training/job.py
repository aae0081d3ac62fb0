"""The GRPO job: validate → start Ray (if needed) → rollout engines → TorchTrainer → result.

The TorchTrainer runs under training/elastic.py's loop: the pool controller may shrink, pause,
grow or move the job through its control actor `r1p-train-<run_name>`, each time from a
checkpoint; the result lists those `resizes`.

`main(argv)` is what `jobs/grpo.py` calls. Everything a user can get wrong (settings, model
path, dataset path, reward import, group size) is checked before any Ray work and reported as
one line with a non-zero exit. `submit_and_stream` runs the same job on a cluster through the
Ray Jobs API.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1platform.training.settings import GRPOSettings, GRPOSettingsError, parse_settings

RESULT_MARKER = "R1P_GRPO_RESULT "
LOG_FILE = "job.log"
REPO_ROOT = Path(__file__).resolve().parents[3]


class JobInputError(ValueError):
    """Bad input found before training; the message is the one line to print."""


@dataclass
class Prepared:
    settings: GRPOSettings
    model_path: str
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    skipped: int
    output_dir: Path
    storage_path: str


def _default_output_dir() -> Path:
    from r1platform.contracts.paths import cache_dir

    return cache_dir() / "runs" / time.strftime("grpo-%Y%m%d-%H%M%S")


def _is_uri(path: str) -> bool:
    return "://" in path


def _has_run_state(storage_path: str, run_name: str) -> bool:
    """Whether Ray Train would restore an earlier run from here (and so silently resume)."""
    if _is_uri(storage_path):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
        info = fs.get_file_info(pyarrow.fs.FileSelector(f"{root}/{run_name}", allow_not_found=True))
        return any(i.base_name.startswith("checkpoint_manager") for i in info)
    run_dir = Path(storage_path) / run_name
    return run_dir.is_dir() and any(run_dir.glob("checkpoint_manager*"))


def prepare(s: GRPOSettings) -> Prepared:
    """Every input check that needs no Ray. Raises JobInputError with a one-line message."""
    from r1platform.training import datasets, rewards

    if s.model is None:
        from r1platform.models.tiny import ensure_tiny_model

        model_path = str(ensure_tiny_model())
    else:
        model_path = str(Path(s.model).expanduser())
        if not Path(model_path).is_dir():
            raise JobInputError(f"model path not found: {s.model}")
        if not (Path(model_path) / "config.json").is_file():
            raise JobInputError(f"model path is not a HF model dir (no config.json): {s.model}")
    try:
        datasets.check_source(s.dataset)
        rewards.load_reward_funcs(s.reward_specs())
        train = datasets.load_prompts(s.dataset, "train", seed=s.seed)
    except (datasets.DatasetError, rewards.RewardSpecError) as err:
        raise JobInputError(str(err)) from None
    try:
        held_out = datasets.load_prompts(s.dataset, "test", limit=s.eval_size, seed=s.seed)
        train_rows, eval_rows = train.rows, held_out.rows
    except datasets.DatasetError:
        # No test split: hold out the tail of train, so eval never sees a training prompt.
        if len(train.rows) < 2:
            raise JobInputError(f"{s.dataset}: too few rows to hold out an eval split") from None
        k = min(s.eval_size, max(1, len(train.rows) // 10))
        train_rows, eval_rows = train.rows[:-k], train.rows[-k:]
    if len(train_rows) < s.prompts_per_step:
        raise JobInputError(
            f"{s.dataset}: {len(train_rows)} valid rows, fewer than prompts_per_step "
            f"({s.prompts_per_step})"
        )
    if s.resume and s.output_dir is None:
        raise JobInputError("--resume needs the --output_dir of the run to continue")
    output_dir = Path(s.output_dir).expanduser() if s.output_dir else _default_output_dir()
    if _is_uri(str(output_dir)):
        raise JobInputError("output_dir must be a local path; use --checkpoint_uri for s3://")
    storage = s.checkpoint_uri or str((output_dir / "checkpoints").resolve())
    if not s.resume and _has_run_state(storage, s.run_name):
        raise JobInputError(
            f"{storage}/{s.run_name} already holds a run: pass --resume to continue it "
            "or choose another --output_dir"
        )
    return Prepared(s, model_path, train_rows, eval_rows, train.skipped, output_dir, storage)


def _ensure_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    from r1platform.localcluster import ray_init_address
    from r1platform.ray_join import ClusterUnreachable

    # No address: RAY_ADDRESS (set by `ray job submit`) or a cluster already running here;
    # with neither, ray.init starts a local one. Only a live cluster is joined: the address
    # file a dead one left behind would keep ray.init in GCS timeouts for minutes.
    try:
        address = ray_init_address(address)
    except ClusterUnreachable as err:
        raise JobInputError(str(err)) from None
    ray.init(address=address, log_to_driver=True)


def run(s: GRPOSettings) -> dict[str, Any]:
    """Train; returns {"status", "checkpoint", "metrics", "output_dir", ...}.

    The console shows the job's own lines and one line (or a bar) per step; framework logs go
    to OUTPUT_DIR/job.log (all of them with `verbose`), and its tail is shown on failure."""
    from r1platform.training.console import JobConsole

    prep = prepare(s)
    prep.output_dir.mkdir(parents=True, exist_ok=True)
    console = JobConsole(prep.output_dir / LOG_FILE, s.max_steps, verbose=s.verbose)
    console.attach()  # before ray.init, so its own driver log lines go to the file too
    import ray

    # Import the run's modules before ray.init: under `ray job submit`, ray.init sets up the
    # job's working_dir again and re-extracts it in place, and an import landing in that
    # window finds the package directory half empty ("cannot import name 'rollout'").
    from r1platform.training import elastic, rollout, trainer  # noqa: F401

    owns_ray = not ray.is_initialized()
    try:
        _ensure_ray(s.ray_address)
        console.take_ray_stream()  # ray.init registered its printer: replace it
        summary = _run_on_ray(s, prep)
    except JobInputError:
        raise  # one line says it all (e.g. a dead --ray_address): no log tail
    except BaseException:
        _show_tail(console)
        raise
    finally:
        if owns_ray and ray.is_initialized():
            # The job is over: disconnect while the console still sends the actors' late
            # shutdown lines to job.log, so none reach the terminal after the result.
            ray.shutdown()
        console.detach()
    if summary["status"] != "SUCCEEDED":
        _show_tail(console)
    return summary


def _show_tail(console: Any) -> None:
    lines = console.tail()
    if lines:
        print(f"grpo: last lines of {console.log_path}:", file=sys.stderr)
        sys.stderr.write("".join(lines))
        sys.stderr.flush()


def _run_on_ray(s: GRPOSettings, prep: Prepared) -> dict[str, Any]:
    import ray

    from r1platform.contracts.placement_mode import detect_mode
    from r1platform.training import elastic, rollout
    from r1platform.training.trainer import build_trainer

    mode = detect_mode(ray.cluster_resources())
    use_gpu = s.use_gpu if s.use_gpu is not None else mode == "gpu"
    backend = rollout.sync_backend(s.weight_sync_backend, mode)
    hybrid = s.colocated(mode)
    if prep.skipped:
        print(f"grpo: skipped {prep.skipped} malformed dataset rows", flush=True)
    print(
        f"grpo: model={prep.model_path} dataset={s.dataset} train={len(prep.train_rows)} "
        f"eval={len(prep.eval_rows)} output_dir={prep.output_dir} checkpoints={prep.storage_path}",
        flush=True,
    )
    shown = "shown here too (--verbose)" if s.verbose else "--verbose shows them here"
    print(f"grpo: framework logs (vLLM, Ray) -> {prep.output_dir / LOG_FILE}; {shown}", flush=True)
    t0 = time.perf_counter()
    engine_cfg = rollout.EngineConfig(
        model=prep.model_path,
        max_model_len=s.max_model_len,
        max_num_seqs=s.engine_max_num_seqs(),
        seed=s.seed,
        backend=backend,
        gpu_memory_utilization=s.gpu_memory_utilization,
        accelerator_type=s.accelerator_type,  # its engine profile sets dtype / enforce_eager
        parallel_strategy=s.parallel_strategy,  # on CPU the trainer's compute dtype applies
        precision=s.precision,
        compile=s.rollout_compile,
    )
    engine_opts = rollout.engine_actor_options(
        mode=mode,
        num_cpus=s.engine_cpus,
        accelerator_type=s.accelerator_type,
        pool=s.rollout_pool,
        kv_cache_gib=s.kv_cache_gib,
    )
    engine_units = (
        0 if hybrid else elastic.engine_gpus(
            mode, s.num_rollout_engines, s.accelerator_type, s.rollout_pool
        )
    )  # fmt: skip
    if hybrid:
        print("grpo: hybrid mode: a vLLM engine inside each train worker", flush=True)

    def start_engines() -> list[Any]:
        if hybrid:
            return []  # each train worker starts its own (training/engines.py)
        t = time.perf_counter()
        handles = rollout.start_engines(s.num_rollout_engines, engine_cfg, engine_opts)
        print(f"grpo: {len(handles)} rollout engine(s) ready in {time.perf_counter() - t:.1f}s")
        return handles

    def stop_engines(handles: list[Any]) -> None:
        for h in handles:
            ray.kill(h)

    def make_trainer(run_s: GRPOSettings, handles: list[Any]) -> Any:
        return build_trainer(
            run_s,
            engines=handles,
            model_path=prep.model_path,
            train_rows=prep.train_rows,
            eval_rows=prep.eval_rows,
            output_dir=str(prep.output_dir),
            storage_path=prep.storage_path,
            use_gpu=use_gpu,
            sync_backend=backend,
            local_engine=engine_cfg if hybrid else None,
            control={
                "name": elastic.actor_name(s.run_name),
                "engines": engine_units,
                "pool": run_s.train_pool,
            },
        )

    outcome = elastic.run_fits(  # stops the engines when it ends
        s,
        make_trainer=make_trainer,
        start_engines=start_engines,
        stop_engines=stop_engines,
        engines=start_engines(),
        engine_units=engine_units,
        metrics_path=prep.output_dir / "metrics.jsonl",
        latest_checkpoint=lambda: _latest_checkpoint(prep.storage_path, s.run_name),
        root_message=_root_message,
    )
    status, error, checkpoint = outcome.status, outcome.error, outcome.checkpoint
    summary = {
        "status": status,
        "error": error,
        "checkpoint": checkpoint,
        "output_dir": str(prep.output_dir),
        "metrics": last_metrics(prep.output_dir / "metrics.jsonl"),
        "eval_curve": eval_curve(prep.output_dir / "metrics.jsonl"),
        "resizes": outcome.resizes,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (prep.output_dir / "result.json").write_text(json.dumps(summary, indent=2))
    return summary


def _root_message(err: BaseException) -> str:
    text = str(err)
    for marker in ("TrainingAborted: ", "Error: "):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip().splitlines()[0]
    return text.strip().splitlines()[-1] if text.strip() else type(err).__name__


def _latest_checkpoint(storage_path: str, run_name: str) -> str | None:
    if _is_uri(storage_path):
        return None
    found = sorted((Path(storage_path) / run_name).glob("step_*"))
    from r1platform.training.checkpoints import verify_checkpoint

    good = [p for p in found if verify_checkpoint(p)]
    return str(good[-1]) if good else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_metrics(path: Path) -> dict[str, Any]:
    records = [r for r in read_metrics(path) if "event" not in r]  # skip resize events
    return records[-1] if records else {}


def eval_curve(path: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["eval_accuracy"])
        for r in read_metrics(path)
        if isinstance(r.get("eval_accuracy"), int | float) and math.isfinite(r["eval_accuracy"])
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = parse_settings(argv)
        prepare(settings)  # fail fast, before any Ray work
        summary = run(settings)
    except (GRPOSettingsError, JobInputError) as err:
        print(f"grpo: error: {err}", file=sys.stderr, flush=True)
        return 2
    print(RESULT_MARKER + json.dumps(summary), flush=True)
    from r1platform.training.console import print_summary

    print_summary(summary)
    if summary["status"] != "SUCCEEDED":
        print(f"grpo: failed: {summary['error']}", file=sys.stderr, flush=True)
        return 1
    return 0


def submit_and_stream(address: str, args: list[str]) -> dict[str, Any]:
    """Submit jobs/grpo.py to a running cluster via the Jobs API, stream its logs to stdout,
    and return {"status", "job_id", "checkpoint", "metrics", ...} from the job's result line."""
    # The client's own INFO/WARNING lines (packaging, uploads, websocket) are not the job's
    # story; failures still raise. Muted at Ray's handlers: some SDK loggers set their own level.
    import ray  # noqa: F401  (installs the "ray" logger's handler)

    handlers = [(h, h.level) for h in logging.getLogger("ray").handlers]
    for h, level in handlers:
        h.setLevel(max(level, logging.ERROR))
    try:
        return _submit_and_stream(address, args)
    finally:
        for h, level in handlers:
            h.setLevel(level)


def _submit_and_stream(address: str, args: list[str]) -> dict[str, Any]:
    import asyncio

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    entry = " ".join(["python", "jobs/grpo.py", *(_quote(a) for a in args)])
    job_id = client.submit_job(
        entrypoint=entry,
        runtime_env={
            "working_dir": str(REPO_ROOT),
            "excludes": [".venv", ".git", "**/__pycache__", "outputs", "*.egg-info"],
        },
    )
    result: dict[str, Any] = {}

    async def tail() -> None:
        buf = ""
        async for chunk in client.tail_job_logs(job_id):
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                if RESULT_MARKER in line:  # progress bars may prefix escape codes
                    result.update(json.loads(line.split(RESULT_MARKER, 1)[1]))
                elif not _is_job_manager_line(line):
                    sys.stdout.write(line + "\n")
            sys.stdout.flush()
        if buf:
            sys.stdout.write(buf)

    asyncio.run(tail())
    status = client.get_job_status(job_id)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    if not result:
        for line in client.get_job_logs(job_id).splitlines():
            if RESULT_MARKER in line:
                result.update(json.loads(line.split(RESULT_MARKER, 1)[1]))
    return {
        **result,
        "job_id": job_id,
        "status": str(status.value if hasattr(status, "value") else status),
        "train_status": result.get("status"),
    }


def _is_job_manager_line(line: str) -> bool:
    """Ray's own job-manager lines ("Runtime env is setting up.") are not the job's story; the
    result line is for the submitter to parse, and it prints the summary it carries."""
    return "INFO job_manager.py:" in line


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)

"""The job console: worker lines from Ray's log stream go to job.log, rank 0's step records
and notes reach the console, and Ray's own printer is put back afterwards."""

import io
import json
import logging
from pathlib import Path

from r1platform.training import console as jc
from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
from rich.console import Console

VLLM_LINE = "(MainProcess pid=7) INFO 12-01 10:55:03 [model.py:733] Resolved architecture"


def _console(tmp_path: Path, verbose: bool = False) -> tuple[jc.JobConsole, io.StringIO]:
    buf = io.StringIO()
    c = jc.JobConsole(tmp_path / "job.log", 3, verbose=verbose,
                      console=Console(file=buf, width=200, highlight=False))  # fmt: skip
    return c, buf


def _batch(*lines: str, actor: str = "RolloutEngine") -> dict:
    return {"lines": list(lines), "pid": 42, "actor_name": actor, "is_err": False}


def test_worker_lines_go_to_the_file_and_steps_to_the_console(tmp_path, capsys):
    c, buf = _console(tmp_path)
    c.attach()
    try:
        jc.report_step({"step": 1, "reward_mean": 0.5, "accuracy": 0.25, "step_s": 1.5})
        jc.note("grpo resumed at step 1 (weights version 1)")
        marked = capsys.readouterr().out.splitlines()  # what rank 0 writes to its stdout
        c.handle(_batch(VLLM_LINE))
        c.handle(_batch(*marked, "Running Dataset train_1: 0 row", actor=""))
    finally:
        c.detach()
    shown = buf.getvalue()
    assert "grpo step 1/3 reward=0.500 acc=0.250 step=1.50s" in shown
    assert "grpo resumed at step 1" in shown
    assert "INFO" not in shown and "Dataset" not in shown and jc.STEP_MARKER not in shown
    logged = (tmp_path / "job.log").read_text()
    assert f"(RolloutEngine pid=42) {VLLM_LINE}" in logged
    assert "(pid=42) Running Dataset train_1" in logged
    assert jc.STEP_MARKER not in logged
    assert c.tail(1) == ["(pid=42) Running Dataset train_1: 0 row\n"]


def test_step_records_survive_non_finite_values(tmp_path, capsys):
    c, buf = _console(tmp_path)
    jc.report_step({"step": 2, "eval_accuracy": float("nan"), "skipped": True})
    line = capsys.readouterr().out.strip()
    assert json.loads(line.split(jc.STEP_MARKER, 1)[1])["eval_accuracy"] is None
    c.handle(_batch(line))
    assert "step 2/3" in buf.getvalue() and "skipped (non-finite loss)" in buf.getvalue()


def test_rays_printer_is_replaced_then_restored(tmp_path):
    seen: list[dict] = []
    dispatcher.add_handler(jc.RAY_HANDLER_NAME, seen.append)
    try:
        c, _ = _console(tmp_path)
        c.attach()
        dispatcher.emit(_batch(VLLM_LINE))
        assert seen == []  # not printed by Ray while the job console holds the stream
        c.detach()
        names = [n for n, _ in dispatcher.handlers]
        assert jc.HANDLER_NAME not in names and names.count(jc.RAY_HANDLER_NAME) == 1
        dispatcher.emit(_batch(VLLM_LINE))
        assert len(seen) == 1
    finally:
        dispatcher.remove_handler(jc.RAY_HANDLER_NAME)


def test_verbose_forwards_framework_lines_to_rays_printer(tmp_path):
    seen: list[dict] = []
    dispatcher.add_handler(jc.RAY_HANDLER_NAME, seen.append)
    try:
        c, _ = _console(tmp_path, verbose=True)
        c.attach()
        c.handle(_batch(VLLM_LINE, jc.NOTE_MARKER + "a note"))
        c.detach()
        assert [b["lines"] for b in seen] == [[VLLM_LINE]]
    finally:
        dispatcher.remove_handler(jc.RAY_HANDLER_NAME)


def test_driver_ray_logs_go_to_the_file_unless_verbose(tmp_path):
    import ray  # noqa: F401  (installs Ray's console handler on the "ray" logger)

    ray_logger = logging.getLogger("ray")
    before = [(h, h.level) for h in ray_logger.handlers]
    assert before, "ray has a console handler to mute"
    c, _ = _console(tmp_path)
    c.attach()
    consoles = [h for h, _ in before if not isinstance(h, logging.FileHandler)]
    assert all(h.level >= logging.ERROR for h in consoles)  # only errors reach the console
    logging.getLogger("ray.some_module").info("Started a local Ray instance")
    c.detach()
    assert "Started a local Ray instance" in (tmp_path / "job.log").read_text()
    assert [(h, h.level) for h in ray_logger.handlers] == before  # put back as found


def test_a_terminal_gets_one_progress_bar(tmp_path, capsys):
    buf = io.StringIO()
    term = Console(file=buf, width=160, force_terminal=True, highlight=False)
    for step in (1, 2):  # what rank 0 writes (in its own process, before the bar exists here)
        jc.report_step({"step": step, "reward_mean": 0.5, "accuracy": 0.25, "step_s": 2.0})
    jc.report_step({"step": 3, "reward_mean": 0.75, "eval_accuracy": 0.5, "step_s": 2.0})
    marked = capsys.readouterr().out.splitlines()
    c = jc.JobConsole(tmp_path / "job.log", 3, console=term)
    c.attach()
    try:
        assert c._progress is not None
        c.handle(_batch(*marked))
        task = c._progress.tasks[0]
        assert task.completed == 3 and task.total == 3
        assert "reward=0.750" in task.fields["stats"]
    finally:
        c.detach()
    from rich.text import Text

    shown = Text.from_ansi(buf.getvalue()).plain
    assert "grpo step 3/3" in shown and "eval=0.500" in shown  # eval points stay on screen
    assert "grpo step 1/3" not in shown  # plain steps only move the bar

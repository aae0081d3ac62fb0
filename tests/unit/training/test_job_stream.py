"""What the submitter shows of a streamed job log: the job's own lines, not Ray's job manager."""

from r1platform.training.job import _is_job_manager_line


def test_ray_job_manager_lines_are_not_the_jobs_story():
    assert _is_job_manager_line(
        "2026-12-01 12:47:03,340\tINFO job_manager.py:581 -- Runtime env is setting up."
    )
    for line in ("grpo step 3/40 reward=0.2 acc=0.1", "grpo: error: INFO is not a number", ""):
        assert not _is_job_manager_line(line)

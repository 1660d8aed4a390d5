"""A job's limits: the executor's configured defaults, overridden by the assignment's settings, reach the command."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from grader_service.autograding.executor import AutogradeExecutor, GradingTask, JobLimits


def executor(**traits: object) -> AutogradeExecutor:
    config = Config()
    for name, value in traits.items():
        setattr(config.AutogradeExecutor, name, value)
    return AutogradeExecutor(config=config)


def test_assignment_settings_override_the_defaults_and_others_are_ignored() -> None:
    ex = executor(cell_timeout=12.0, memory_limit="3Gi")
    limits = ex.job_limits({"cell_timeout": 3, "memory": None, "disk": "64Mi", "allowed_files": ["*.ipynb"]})
    assert limits == JobLimits(cell_timeout=3.0, timeout=600.0, memory="3Gi", cpu=1.0, disk="64Mi")
    assert ex.job_limits({}) == JobLimits(cell_timeout=12.0, memory="3Gi")


def test_the_options_carry_the_limits_and_the_output_limit() -> None:
    ex = executor(output_limit=4096)
    task = GradingTask(1, 1, "c0ffee", "ml", "tiny", "stu", Path("/j"), ex.job_limits({"timeout": 90}))
    args = ex.autograde_options(task).arguments(("s", "r", "o"))
    assert args[args.index("--timeout") + 1] == "90"
    assert args[-2:] == ["--output-limit", "4096"]


def test_the_former_name_of_the_output_limit_still_sets_it() -> None:
    assert executor(max_output_bytes=512).output_limit == 512
    assert executor().output_limit == 1_000_000

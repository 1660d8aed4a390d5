"""Staging grading jobs on the fake's PVC the way the scheduler does, for executor tests and benchmarks."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from grader_service.autograding.executor import AutogradeExecutor, GradingTask

DATA = Path(__file__).resolve().parent.parent / "data"
TINY_SOURCE = DATA / "tiny"
TINY_SUBMISSION = DATA / "tiny_submission.ipynb"


def stage_job(
    data_dir: Path,
    job_id: int,
    *,
    submission: Path | None = TINY_SUBMISSION,
    source: Path | None = TINY_SOURCE,
) -> Path:
    """``<data>/jobs/<id>/{submission,source,output}``, world-writable like the scheduler makes it."""
    job_dir = data_dir / "jobs" / str(job_id)
    shutil.rmtree(job_dir, ignore_errors=True)
    for part in ("submission", "source", "output"):
        (job_dir / part).mkdir(parents=True)
    if submission is not None:
        shutil.copy(submission, job_dir / "submission" / "tiny.ipynb")
    if source is not None:
        for path in source.iterdir():
            shutil.copy(path, job_dir / "source" / path.name)
    for path in (job_dir, *job_dir.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)
    return job_dir


def make_task(
    executor: AutogradeExecutor, job_dir: Path, job_id: int, **assignment_settings: Any
) -> GradingTask:
    return GradingTask(
        job_id=job_id,
        submission_id=1000 + job_id,
        commit_hash=hashlib.sha1(f"commit-{job_id}".encode()).hexdigest(),
        lecture="intro-2024",
        assignment="tiny",
        user="student",
        job_dir=job_dir,
        limits=executor.job_limits(assignment_settings),
    )

"""Job directories: staged from git before grading, their output kept after it.

A job directory is `<data>/jobs/<job id>/{submission,source,output}`: the submission's commit,
the assignment's source commit and an empty output directory, opened to the sandbox's uid. Every
job of an assignment needs the same source, so it is exported from git once per commit into a
cache and copied from there. After grading, the job's output moves to the submission's results
directory, from which feedback is rendered when first asked for.

`JobStager` knows only the data layout; which jobs exist and which sources are current is the
queue's business.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from . import git
from .layout import DataLayout

if TYPE_CHECKING:
    from ..autograding.executor import GradingTask


class JobStager:
    """Stages job directories in `layout` and keeps their output."""

    def __init__(self, layout: DataLayout):
        self.layout = layout

    async def stage(self, task: GradingTask) -> None:
        """`<job>/submission` from the submission's commit and `<job>/source` from the assignment's."""
        assignment_id = task.assignment_id
        source = await self.cached_source(assignment_id, task.source_commit)
        await asyncio.to_thread(prepare_job_dir, task.job_dir, source)
        await git.export(
            self.layout.submission_repo(assignment_id, task.user_id),
            task.commit_hash,
            task.job_dir / "submission",
        )
        await asyncio.to_thread(open_to_sandbox, task.job_dir)

    async def cached_source(self, assignment_id: int, commit: str) -> Path:
        """The source files at `commit`, exported from git once (every job of an assignment needs them)."""
        cache = self.layout.source_cache(assignment_id, commit)
        if cache.is_dir():
            return cache
        staging = cache.with_name(f"{cache.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        try:
            await git.export(self.layout.source_repo(assignment_id), commit, staging)
            try:
                staging.rename(cache)
            except OSError:
                if not cache.is_dir():
                    raise
                # Another worker was quicker: its copy is the same.
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        return cache

    def prune_source_cache(self, current: Iterable[tuple[int, str]]) -> None:
        """Drop cached sources other than `current` (assignment id, commit) pairs."""
        cache_dir = self.layout.source_cache_dir()
        if not cache_dir.is_dir():
            return
        keep = {self.layout.source_cache(assignment_id, commit).name for assignment_id, commit in current}
        for entry in cache_dir.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    async def keep_output(self, task: GradingTask) -> None:
        """Move the graded notebooks to the submission's results, replacing an earlier grading's.

        Feedback is rendered from them when first asked for: rendering HTML costs as much as
        grading a small notebook, and most feedback is read once or never, so it stays off the
        grading path.
        """
        results = self.layout.results_dir(task.submission_id)
        version = results.with_name(f"{results.name}.job-{task.job_id}")
        await asyncio.to_thread(shutil.rmtree, version, True)
        version.mkdir(parents=True)
        (task.job_dir / "output").rename(version / "output")
        previous = await asyncio.to_thread(swap_in, results, version)
        if previous is not None:
            await asyncio.to_thread(shutil.rmtree, previous, True)

    @staticmethod
    async def remove(task: GradingTask) -> None:
        await asyncio.to_thread(shutil.rmtree, task.job_dir, True)


def swap_in(link: Path, version: Path) -> Path | None:
    """Point `link` at `version` in one atomic step; return the directory it named before.

    A submission's results are a symlink to the directory of the grading that made them, replaced
    by `rename(2)`: a reader (the feedback page of an earlier grading) finds the old results or the
    new ones, never none, while a regrade lands.
    """
    previous: Path | None = None
    if link.is_symlink():
        previous = link.parent / os.readlink(link)
    elif link.exists():  # results kept as a plain directory by an older version of the service
        previous = link.with_name(f"{link.name}.unversioned")
        shutil.rmtree(previous, ignore_errors=True)
        link.rename(previous)
    pointer = link.with_name(f"{version.name}.link")
    pointer.unlink(missing_ok=True)
    pointer.symlink_to(version.name)
    os.replace(pointer, link)
    return previous if previous is not None and previous != version else None


def prepare_job_dir(job_dir: Path, source: Path) -> None:
    shutil.rmtree(job_dir, ignore_errors=True)
    shutil.copytree(source, job_dir / "source")
    (job_dir / "submission").mkdir()
    (job_dir / "output").mkdir()


def open_to_sandbox(job_dir: Path) -> None:
    """Readable and writable by the sandbox's unprivileged uid, nobody else's business.

    Links are left alone: chmod would change whatever they lead to, not the link.
    """
    for path in (job_dir, *job_dir.rglob("*")):
        if not path.is_symlink():
            # Executables stay executable: a command assignment's harness may run its scripts directly.
            path.chmod(0o777 if path.is_dir() or path.stat().st_mode & 0o100 else 0o666)


__all__ = ["JobStager", "open_to_sandbox", "prepare_job_dir"]

"""A regrade landing never leaves a submission without results, not even for a moment.

Feedback pages are rendered from and served out of a submission's results; a tutor or student
reading feedback while a regrade lands must get the old grading's or the new one's, never a 404.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from grader_service.storage.layout import DataLayout
from grader_service.storage.staging import JobStager

SUBMISSION = 7


def grading_output(layout: DataLayout, job_id: int, files: int) -> Any:
    """A finished job: `<job>/output` with many files, so removing an old one takes a while."""
    job_dir = layout.root / "jobs" / str(job_id)
    output = job_dir / "output"
    output.mkdir(parents=True)
    (output / "gradebook.json").write_text(f'{{"job": {job_id}}}')
    for i in range(files):
        (output / f"cell-{i}.txt").write_text("x")
    return SimpleNamespace(job_id=job_id, submission_id=SUBMISSION, job_dir=job_dir)


def test_results_are_present_throughout_regrades(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    stager = JobStager(layout)
    results = layout.results_dir(SUBMISSION)
    jobs = [grading_output(layout, job_id, files=1500) for job_id in range(1, 7)]
    asyncio.run(stager.keep_output(jobs[0]))

    missing: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def read_feedback_source() -> None:
        while not stop.is_set():
            try:
                seen.add((results / "output" / "gradebook.json").read_text())
            except OSError as e:
                missing.append(repr(e))

    reader = threading.Thread(target=read_feedback_source)
    reader.start()
    try:
        for job in jobs[1:]:
            asyncio.run(stager.keep_output(job))
    finally:
        stop.set()
        reader.join()

    assert not missing, f"results were missing {len(missing)} times, e.g. {missing[0]}"
    assert (results / "output" / "gradebook.json").read_text() == '{"job": 6}'
    assert len(seen) >= 2, seen  # the reader did see regrades land
    # Old gradings' directories are removed; only the latest is kept.
    kept = sorted(p.name for p in results.parent.iterdir())
    assert kept == [results.name, f"{results.name}.job-6"], kept


def test_results_kept_as_a_plain_directory_are_replaced(tmp_path: Path) -> None:
    """Data dirs from before versioned results hold `results/<id>` as a directory."""
    layout = DataLayout(tmp_path)
    results = layout.results_dir(SUBMISSION)
    (results / "output").mkdir(parents=True)
    (results / "output" / "gradebook.json").write_text('{"job": 0}')
    asyncio.run(JobStager(layout).keep_output(grading_output(layout, 1, files=1)))
    assert results.is_symlink()
    assert (results / "output" / "gradebook.json").read_text() == '{"job": 1}'
    assert sorted(p.name for p in results.parent.iterdir()) == [results.name, f"{results.name}.job-1"]

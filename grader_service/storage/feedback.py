"""Feedback pages, rendered from a submission's graded notebooks when first requested.

Rendering runs `grader-convert feedback` as a subprocess (nbconvert is heavy, and the input is
student output) into a temporary directory that is renamed into place, so a page is either
complete or absent. Concurrent requests for the same submission wait for one rendering.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

_locks: dict[int, asyncio.Lock] = {}
# Where a submission's rendered pages are kept. Renamed whenever what a page may show changes, so no
# page rendered under an earlier rule is served ("feedback": before outputs after hidden tests were
# withheld).
PAGES_DIR = "feedback-v2"


class FeedbackUnavailable(Exception):
    pass


async def feedback_pages(
    results_dir: Path, submission_id: int, grades: dict[str, Any] | None = None, grades_version: int = 0
) -> tuple[Path, list[Path]]:
    """The folder of HTML pages for the submission's latest grading and the pages in it.

    `results_dir` names the latest grading's directory (see `staging.swap_in`); it is resolved
    once, so one request renders and serves one grading's pages. A regrade landing meanwhile
    removes that directory: the request then starts over on the new grading's.

    `grades` (the per-cell grades, `grader_service.grades`) are shown on the pages; the pages of
    each `grades_version` are kept apart, so a change to the grades renders them anew.
    """
    lock = _locks.setdefault(submission_id, asyncio.Lock())
    try:
        async with lock:
            for _ in range(3):
                version = results_dir.resolve()
                try:
                    folder = await _render(version, grades, grades_version)
                    return folder, sorted(folder.rglob("*.html"))
                except (FeedbackUnavailable, OSError):
                    if results_dir.resolve() == version:
                        raise
            raise FeedbackUnavailable("the submission is being regraded; try again in a moment")
    finally:
        if not lock.locked():
            _locks.pop(submission_id, None)


async def _render(version: Path, grades: dict[str, Any] | None, grades_version: int) -> Path:
    name = PAGES_DIR if not grades else f"{PAGES_DIR}-grades{grades_version}"
    output, pages = version / "output", version / name
    if not pages.is_dir():
        if not output.is_dir():
            raise FeedbackUnavailable("no graded notebooks are stored for this submission")
        tmp = version / f"{name}.tmp"
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        extra: list[str] = []
        if grades:
            grades_file = version / f"{name}.json"
            await asyncio.to_thread(grades_file.write_text, json.dumps(grades), "utf-8")
            extra = ["--grades", str(grades_file)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grader_service.convert.cli", "feedback", "-i", str(output), "-o", str(tmp),
            *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise FeedbackUnavailable(f"rendering feedback failed: {out[-1000:].decode(errors='replace')}")
        tmp.rename(pages)
    return pages

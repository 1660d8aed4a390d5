"""Feedback pages, rendered from a submission's graded notebooks when first requested.

Rendering runs `grader-convert feedback` as a subprocess (nbconvert is heavy, and the input is
student output) into a temporary directory that is renamed into place, so a page is either
complete or absent. Concurrent requests for the same submission wait for one rendering.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

_locks: dict[int, asyncio.Lock] = {}
# Where a submission's rendered pages are kept. Renamed whenever what a page may show changes, so no
# page rendered under an earlier rule is served ("feedback": before outputs after hidden tests were
# withheld).
PAGES_DIR = "feedback-v2"


class FeedbackUnavailable(Exception):
    pass


async def feedback_pages(results_dir: Path, submission_id: int) -> tuple[Path, list[Path]]:
    """The folder of HTML pages for the submission's latest grading and the pages in it.

    `results_dir` names the latest grading's directory (see `staging.swap_in`); it is resolved
    once, so one request renders and serves one grading's pages. A regrade landing meanwhile
    removes that directory: the request then starts over on the new grading's.
    """
    lock = _locks.setdefault(submission_id, asyncio.Lock())
    try:
        async with lock:
            for _ in range(3):
                version = results_dir.resolve()
                try:
                    folder = await _render(version)
                    return folder, sorted(folder.rglob("*.html"))
                except (FeedbackUnavailable, OSError):
                    if results_dir.resolve() == version:
                        raise
            raise FeedbackUnavailable("the submission is being regraded; try again in a moment")
    finally:
        if not lock.locked():
            _locks.pop(submission_id, None)


async def _render(version: Path) -> Path:
    output, pages = version / "output", version / PAGES_DIR
    if not pages.is_dir():
        if not output.is_dir():
            raise FeedbackUnavailable("no graded notebooks are stored for this submission")
        tmp = version / f"{PAGES_DIR}.tmp"
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grader_service.convert.cli", "feedback", "-i", str(output), "-o", str(tmp),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise FeedbackUnavailable(f"rendering feedback failed: {out[-1000:].decode(errors='replace')}")
        tmp.rename(pages)
    return pages

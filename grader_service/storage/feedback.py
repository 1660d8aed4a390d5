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


async def feedback_pages(results_dir: Path, submission_id: int) -> list[Path]:
    """The HTML pages for the submission's latest grading, rendering them if needed."""
    output, pages = results_dir / "output", results_dir / PAGES_DIR
    lock = _locks.setdefault(submission_id, asyncio.Lock())
    async with lock:
        if not pages.is_dir():
            if not output.is_dir():
                raise FeedbackUnavailable("no graded notebooks are stored for this submission")
            tmp = results_dir / f"{PAGES_DIR}.tmp"
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "grader_service.convert.cli", "feedback", "-i", str(output), "-o", str(tmp),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise FeedbackUnavailable(
                    f"rendering feedback failed: {out[-1000:].decode(errors='replace')}"
                )
            tmp.rename(pages)
    _locks.pop(submission_id, None)
    return sorted(pages.rglob("*.html"))

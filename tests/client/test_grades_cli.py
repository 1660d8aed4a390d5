"""`grader grade` and the clients' per-cell grade methods, against the real service."""

from __future__ import annotations

import asyncio
import json

import pytest

from grader_client.errors import Conflict

from .conftest import Course
from .test_cli import SOLVED, ok, refused, row, run


@pytest.fixture(scope="module")
def graded(course: Course) -> int:
    submitted = json.loads(ok(run(course, "student", "submit", str(SOLVED), "--wait", "--json")).stdout)
    assert submitted["auto_status"] == "graded"
    return int(submitted["id"])


def test_grade_shows_sets_and_comments_cells(course: Course, graded: int) -> None:
    sid = str(graded)
    table = ok(run(course, "tutor", "grade", sid)).stdout
    assert row(table, "test_add")[:3] == ["test", "1", "-"]  # kind, auto, manual
    result = ok(
        run(course, "tutor", "grade", sid, "--set", "test_add=0.5", "--comment", "test_add=half marks",
            "--extra", "test_fizzbuzz=1")
    )  # fmt: skip
    cells = row(result.stdout, "test_add")
    assert cells[2] == "0.5" and "half marks" in result.stdout
    shown = json.loads(ok(run(course, "tutor", "grade", sid, "--json")).stdout)
    by_id = {g["grade_id"]: g for g in shown["items"]}
    assert by_id["test_add"]["manual"] == 0.5 and by_id["test_fizzbuzz"]["extra_credit"] == 1
    submission = course.client("tutor").submission("intro", "basics", graded)
    assert submission.final_score == shown["cell_score"] == 10 - 0.5 + 1
    ok(run(course, "tutor", "grade", sid, "--set", "test_add=-"))  # '-': grading's points again
    history = course.client("tutor").history("intro", "basics", graded)
    assert [h.what for h in history] == ["test_add", "test_fizzbuzz", "test_add"]
    assert history[-1].old == {"points": 0.5} and history[-1].new == {"points": None}


def test_refusals(course: Course, graded: int) -> None:
    sid = str(graded)
    refused(run(course, "tutor", "grade", sid, "--set", "nope=1"), 1, "nope")
    refused(run(course, "tutor", "grade", sid, "--set", "test_add=5"), 1, "test_add")
    refused(run(course, "tutor", "grade", sid, "--set", "test_add"), 2, "GRADE_ID=VALUE")
    refused(run(course, "student", "grade", sid, "--set", "test_add=1"), 1, "needs the tutor role")
    refused(run(course, "other", "grade", sid), 1, "not found")


def test_version_conflict_and_async_client(course: Course, graded: int) -> None:
    client = course.client("tutor")
    version = client.grades("intro", "basics", graded).version
    client.set_grades("intro", "basics", graded, {"test_add": {"comment": "first"}}, version)
    with pytest.raises(Conflict):
        client.set_grades("intro", "basics", graded, {"test_add": {"comment": "second"}}, version)

    async def through_async() -> tuple[int, list[int]]:
        async with course.async_client("tutor") as aclient:
            grades = await aclient.grades("intro", "basics", graded)
            queue = [item.id async for item in aclient.grading_queue("intro", "basics")]
            changed = await aclient.set_grades(
                "intro", "basics", graded, {"test_add": {"comment": "async"}}, grades.version
            )
            assert changed.version == grades.version + 1
            return len(await aclient.history("intro", "basics", graded)), queue

    changes, queue = asyncio.run(through_async())
    assert changes >= 2 and graded not in queue  # no cell of basics needs a person
    assert list(client.grading_queue("intro", "basics")) == []

"""The whole-lecture gradebook through both clients and `grader scores export --lecture`, against the
real service: a graded submission, a student who never submitted, and the per-assignment export agree."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from grader_client import errors, models

from .conftest import EXAMPLES, Course
from .test_cli import ok, refused, run

SOLVED = EXAMPLES / "submission" / "basics.ipynb"
SOURCE = EXAMPLES / "source" / "basics"


@pytest.fixture(scope="module")
def book(course: Course) -> int:
    """Lecture `book`: alice submits `one` (graded 10/10), bob never submits; `two` has no submission.
    Returns alice's submission id."""
    with course.client("admin") as admin:
        admin.create_lecture("book", "Gradebook")
        for user, role in (("ins", "instructor"), ("tut", "tutor"), ("alice", "student"), ("bob", "student")):
            admin.set_role("book", user, role)
    with course.client("instructor") as ins:
        for name in ("one", "two"):
            ins.create_assignment("book", name, due_date="2099-01-01T00:00:00Z")
            ins.upload_assignment("book", name, SOURCE)
            ins.release_assignment("book", name)
    with course.client("student") as alice:
        submission = alice.submit("book", "one", SOLVED)
        assert alice.wait("book", "one", submission.id).auto_status == "graded"
    return submission.id


def test_both_clients_read_the_gradebook(course: Course, book: int) -> None:
    with course.client("tutor") as tut:
        table = tut.lecture_scores("book")
        assert isinstance(table, models.LectureScoreTable)
        assert table.lecture == "book" and table.policy is None
        assert [(a.name, a.policy) for a in table.assignments] == [("one", "latest"), ("two", "latest")]
        rows = {row.user: row for row in table.items}
        assert set(rows) == {"alice", "bob"}  # the roster's students, not its staff
        assert rows["alice"].scores == {"one": 10.0, "two": None} and rows["alice"].total == 10.0
        assert rows["bob"].scores == {"one": None, "two": None} and rows["bob"].total == 0.0
        # The same figure as the per-assignment export.
        (alice,) = [r for r in tut.scores("book", "one").items if r.user == "alice"]
        assert alice.submission == book and alice.final_score == rows["alice"].scores["one"]
        text = tut.lecture_scores("book", "best", format="csv")
        assert list(csv.reader(io.StringIO(text))) == [
            ["user", "display_name", "one", "two", "total"],
            ["alice", "", "10.0", "", "10.0"],
            ["bob", "", "", "", "0.0"],
        ]
        assert tut.lecture_scores("book", "best").policy == "best"
        with pytest.raises(errors.UsageError, match="Policy must be latest or best"):
            tut.lecture_scores("book", "newest")

    async def read() -> models.LectureScoreTable:
        async with course.async_client("instructor") as ins:
            return await ins.lecture_scores("book")

    assert asyncio.run(read()).to_json() == table.to_json()
    with course.client("student") as alice, pytest.raises(errors.Forbidden):
        alice.lecture_scores("book")


def test_cli_exports_the_whole_lecture(course: Course, book: int, tmp_path: Path) -> None:
    target = tmp_path / "book.csv"
    result = ok(run(course, "tutor", "scores", "export", "--lecture", "book", "-o", str(target)))
    assert "Scores written to" in result.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text(), newline="")))
    assert [(r["user"], r["one"], r["two"]) for r in rows] == [("alice", "10.0", ""), ("bob", "", "")]
    shown = json.loads(
        ok(
            run(course, "tutor", "scores", "export", "-l", "book", "--policy", "best", "--format", "json")
        ).stdout
    )
    assert shown["policy"] == "best" and [i["user"] for i in shown["items"]] == ["alice", "bob"]
    # Without --lecture, the defaults name one assignment: its table, as before.
    one = ok(run(course, "tutor", "scores", "export", GRADER_LECTURE="book", GRADER_ASSIGNMENT="one")).stdout
    assert one.splitlines()[0].startswith("user,display_name,submission")
    # With no default assignment, the default lecture's gradebook.
    whole = ok(run(course, "tutor", "scores", "export", GRADER_LECTURE="book", GRADER_ASSIGNMENT="")).stdout
    assert whole.splitlines()[0] == "user,display_name,one,two,total"
    refused(
        run(course, "tutor", "scores", "export", "-l", "book", "-a", "one", "--policy", "best"),
        2,
        "--policy is for the whole lecture's gradebook",
    )
    refused(run(course, "student", "scores", "export", "-l", "book"), 1, "")

"""`grader extension set/list/delete` and the clients' extension methods, against the real service."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from .conftest import EXAMPLES, Course
from .test_cli import SOLVED, ok, refused, row, run


def test_set_list_delete_from_the_command_line(course: Course) -> None:
    result = ok(
        run(
            course, "instructor", "extension", "set", "alice", "--due", "2099-02-01T12:00:00+00:00",
            "--late-until", "2099-02-03T12:00:00+00:00", "--max-submissions", "60",
        )
    )  # fmt: skip
    assert "alice has until" in result.stderr and "60 submissions" in result.stderr
    table = ok(run(course, "tutor", "extension", "list")).stdout
    assert row(table, "alice")[-1] == "60"
    listed = json.loads(ok(run(course, "tutor", "extension", "list", "--json")).stdout)
    assert [(e["user"], e["due_date"], e["max_submissions"]) for e in listed] == [
        ("alice", "2099-02-01T12:00:00Z", 60)
    ]
    mine = course.client("student").assignment("intro", "basics")
    assert (
        mine.extended and mine.due_date == datetime(2099, 2, 1, 12, tzinfo=UTC) and mine.max_submissions == 60
    )
    assert not course.client("other").assignment("intro", "basics").extended
    ok(run(course, "instructor", "extension", "delete", "alice"))
    assert "No extensions." in ok(run(course, "tutor", "extension", "list")).stderr
    refused(run(course, "instructor", "extension", "delete", "alice"), 1, "no extension")


def test_refusals(course: Course) -> None:
    refused(run(course, "student", "extension", "list"), 1, "needs the tutor role")  # students: 403
    refused(
        run(course, "tutor", "extension", "set", "alice", "--due", "2099-01-01T00:00Z"),
        1,
        "needs the instructor role",
    )
    refused(
        run(course, "instructor", "extension", "set", "nobody", "--due", "2099-01-01T00:00Z"), 1, "roster"
    )
    refused(run(course, "instructor", "extension", "set", "tut", "--due", "2099-01-01T00:00Z"), 1, "students")
    refused(
        run(
            course, "instructor", "extension", "set", "alice", "--due", "2099-01-02T00:00Z",
            "--late-until", "2099-01-01T00:00Z",
        ),
        1,
        "late_until",
    )  # fmt: skip
    bad = run(
        course,
        "instructor",
        "extension",
        "set",
        "alice",
        "--due",
        "2099-01-01T00:00Z",
        "--max-submissions",
        "0",
    )
    assert bad.exit_code == 2 and "max-submissions" in bad.stderr  # refused before sending
    assert run(course, "instructor", "extension", "set", "alice").exit_code == 2  # --due is required
    assert list(course.client("tutor").extensions("intro", "basics")) == []


def test_extension_turns_a_late_submission_on_time(course: Course) -> None:
    now = datetime.now(UTC)
    with course.client("instructor") as ins:
        ins.create_assignment(
            "intro",
            "late",
            due_date=now - timedelta(hours=1),
            late_until=now + timedelta(hours=1),
            late_penalty=0.5,
        )
        ins.upload_assignment("intro", "late", EXAMPLES / "source" / "basics")
        ins.release_assignment("intro", "late")
    submitted = course.client("student").submit("intro", "late", SOLVED)
    assert submitted.late
    with course.client("tutor") as tutor:
        tutor.update_submission("intro", "late", submitted.id, manual_score=8)
        assert tutor.submission("intro", "late", submitted.id).final_score == 4.0
        assert [r.final_score for r in tutor.scores("intro", "late").items] == [4.0]
    ok(
        run(
            course,
            "instructor",
            "extension",
            "set",
            "alice",
            "-a",
            "late",
            "--due",
            (now + timedelta(hours=2)).isoformat(),
        )
    )
    with course.client("tutor") as tutor:
        on_time = tutor.submission("intro", "late", submitted.id)
        assert (on_time.late, on_time.score, on_time.final_score) == (False, 8.0, 8.0)
        assert [(r.late, r.final_score) for r in tutor.scores("intro", "late").items] == [(False, 8.0)]


def test_async_client(course: Course) -> None:
    async def main() -> None:
        async with course.async_client("instructor") as ins:
            granted = await ins.set_extension(
                "intro", "basics", "bob", "2099-03-01T00:00:00Z", max_submissions=70
            )
            assert granted.user == "bob" and granted.max_submissions == 70 and granted.late_until is None
            assert [e.user async for e in ins.extensions("intro", "basics")] == ["bob"]
            await ins.remove_extension("intro", "basics", "bob")
            assert [e async for e in ins.extensions("intro", "basics")] == []

    asyncio.run(main())

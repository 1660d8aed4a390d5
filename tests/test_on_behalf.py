"""Instructors submitting on behalf of a student (`POST …/submissions?user=NAME`), over real HTTP on
SQLite and PostgreSQL: after the deadline and past the limit, judged late by the student's own
deadline, stored as the student's, and refused to anyone else."""

from __future__ import annotations

from datetime import timedelta

import pytest

from .conftest import DATA, World
from .test_api import A, iso, new_released_assignment


def submit_for(world: World, who: str, name: str, user: str, assignment: str):
    return world.client(who).post(
        f"{A}/{name}/submissions",
        params={"filename": "tiny.ipynb", "user": user},
        data=(DATA / "tiny_submission.ipynb").read_bytes(),
        headers={"Content-Type": "application/x-ipynb+json"},
    )


def test_after_the_deadline_and_the_limit_late_by_the_students_deadline(world: World) -> None:
    new_released_assignment(
        world, "obh-late", due_date=iso(timedelta(hours=-2)), max_submissions=1, late_penalty=0.5
    )
    # The student can no longer submit; their instructor still can, twice, past the limit of one.
    assert world.submit("student", assignment="obh-late").status_code == 403
    first = submit_for(world, "instructor", "obh-late", "stu", "obh-late")
    assert first.status_code == 201, first.text
    again = submit_for(world, "instructor", "obh-late", "stu", "obh-late")
    assert again.status_code == 201, again.text
    body = first.json()
    assert body["user"] == "stu" and body["late"] is True and 7000 < body["late_seconds"] < 7400
    # It is the student's submission: in their own list, graded like theirs.
    mine = world.client("student").get(f"{A}/obh-late/submissions").json()["items"]
    assert sorted(s["id"] for s in mine) == sorted([body["id"], again.json()["id"]])
    assert (
        world.client("instructor").get(f"{A}/obh-late/submissions", params={"user": "ins"}).json()["total"]
        == 0
    )

    # An extension makes the same kind of submission on time: lateness follows the student's deadline.
    ext = world.client("instructor").put(
        f"{A}/obh-late/extensions/stu", json={"due_date": iso(timedelta(hours=1))}
    )
    assert ext.status_code == 201, ext.text
    on_time = submit_for(world, "instructor", "obh-late", "stu", "obh-late")
    assert on_time.status_code == 201 and on_time.json()["late"] is False


@pytest.mark.parametrize(
    "who, user, status, words",
    [
        ("tutor", "stu", 403, "instructor"),
        ("student", "stu", 403, "instructor"),
        ("student", "stu2", 403, "instructor"),
        ("other_student", "stu", 403, "instructor"),
        ("instructor", "tut", 400, "students only"),
        ("instructor", "ins", 400, "students only"),
        ("instructor", "nobody", 404, "not on the roster"),
        ("instructor", "out", 404, "not on the roster"),  # an instructor of another lecture
        ("instructor", "a/b", 400, "Invalid user name"),
        ("instructor", "", 400, "Invalid user name"),
    ],
)
def test_refused(world: World, who: str, user: str, status: int, words: str) -> None:
    if world.client("instructor").get(f"{A}/obh-refused").status_code == 404:
        new_released_assignment(world, "obh-refused", due_date=iso(timedelta(days=1)))
    before = world.client("instructor").get(f"{A}/obh-refused/submissions").json()["total"]
    r = submit_for(world, who, "obh-refused", user, "obh-refused")
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json") and words in r.json()["message"]
    # Nothing was stored for anyone.
    assert world.client("instructor").get(f"{A}/obh-refused/submissions").json()["total"] == before

"""Per-student extensions over real HTTP, on SQLite and PostgreSQL: who may grant and read them, how
they move a student's deadline, and that `late`/`final_score` and the scores export follow them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from .conftest import World
from .test_api import A, iso, new_released_assignment


def ext(name: str, user: str = "stu") -> str:
    return f"{A}/{name}/extensions/{user}"


def export_row(world: World, name: str, user: str, fmt: str = "json") -> dict:
    """The student's row of the per-assignment scores export (JSON), or its CSV line as a dict."""
    r = world.client("tutor").get(f"{A}/{name}/scores", params={"format": fmt})
    assert r.status_code == 200, r.text
    if fmt == "json":
        (row,) = [row for row in r.json()["items"] if row["user"] == user]
        return row
    lines = r.text.splitlines()
    header = lines[0].split(",")
    (line,) = [
        dict(zip(header, line.split(","), strict=True)) for line in lines[1:] if line.startswith(user + ",")
    ]
    return line


def test_grant_list_change_delete(world: World) -> None:
    new_released_assignment(world, "ext-crud", due_date=iso(timedelta(days=1)))
    ins = world.client("instructor")
    due = "2099-02-01T12:00:00Z"
    r = ins.put(ext("ext-crud"), json={"due_date": due})
    assert r.status_code == 201, r.text
    assert (
        r.json()["due_date"] == due and r.json()["late_until"] is None and r.json()["max_submissions"] is None
    )
    listed = world.client("tutor").get(f"{A}/ext-crud/extensions").json()
    assert listed["total"] == 1 and [e["user"] for e in listed["items"]] == ["stu"]
    r = ins.put(
        ext("ext-crud"), json={"due_date": due, "late_until": "2099-03-01T00:00:00Z", "max_submissions": 4}
    )
    assert r.status_code == 200 and r.json()["late_until"] == "2099-03-01T00:00:00Z"
    assert r.json()["max_submissions"] == 4
    # The body is the whole extension: what it leaves out is null again.
    r = ins.put(ext("ext-crud"), json={"due_date": due})
    assert r.status_code == 200 and r.json()["late_until"] is None and r.json()["max_submissions"] is None
    assert ins.delete(ext("ext-crud")).status_code == 204
    assert world.client("tutor").get(f"{A}/ext-crud/extensions").json()["total"] == 0
    r = ins.delete(ext("ext-crud"))
    assert r.status_code == 404 and "no extension" in r.json()["message"]


def test_student_sees_own_deadline_others_see_the_assignments(world: World) -> None:
    new_released_assignment(world, "ext-view", due_date="2030-01-01T00:00:00Z", max_submissions=2)
    ins = world.client("instructor")
    assert (
        ins.put(ext("ext-view"), json={"due_date": "2031-01-01T00:00:00Z", "max_submissions": 5}).status_code
        == 201
    )
    mine = world.client("student").get(f"{A}/ext-view").json()
    assert (mine["due_date"], mine["max_submissions"], mine["extended"]) == ("2031-01-01T00:00:00Z", 5, True)
    listed = world.client("student").get(A).json()["items"]
    assert [(a["due_date"], a["extended"]) for a in listed if a["name"] == "ext-view"] == [
        ("2031-01-01T00:00:00Z", True)
    ]
    other = world.client("other_student").get(f"{A}/ext-view").json()
    assert (other["due_date"], other["max_submissions"], other["extended"]) == (
        "2030-01-01T00:00:00Z",
        2,
        False,
    )
    staff = world.client("tutor").get(f"{A}/ext-view").json()
    assert (staff["due_date"], staff["extended"]) == ("2030-01-01T00:00:00Z", False)


def test_extension_after_a_late_submission_turns_it_on_time(world: World) -> None:
    new_released_assignment(
        world,
        "ext-late",
        due_date=iso(timedelta(hours=-1)),
        late_until=iso(timedelta(hours=2)),
        late_penalty=0.25,
    )
    r = world.submit("student", assignment="ext-late")
    assert r.status_code == 201 and r.json()["late"] is True
    sid = r.json()["id"]
    tutor = world.client("tutor")
    r = tutor.patch(f"{A}/ext-late/submissions/{sid}", json={"manual_score": 2})
    assert r.status_code == 200 and r.json()["score"] == 2.0 and r.json()["final_score"] == 1.5
    assert (
        export_row(world, "ext-late", "stu")["final_score"],
        export_row(world, "ext-late", "stu", "csv")["final_score"],
    ) == (1.5, "1.5")

    ins = world.client("instructor")
    assert ins.put(ext("ext-late"), json={"due_date": iso(timedelta(hours=1))}).status_code == 201
    got = tutor.get(f"{A}/ext-late/submissions/{sid}").json()
    assert (got["late"], got["late_seconds"], got["score"], got["final_score"]) == (False, 0.0, 2.0, 2.0)
    row = export_row(world, "ext-late", "stu")
    assert (row["late"], row["final_score"]) == (False, 2.0)
    assert export_row(world, "ext-late", "stu", "csv")["final_score"] == "2.0"
    assert (
        world.client("student").get(f"{A}/ext-late/submissions/{sid}").json()["final_score"] is None
    )  # unreleased

    # An extension that ends before the submission keeps it late, by the seconds past the new deadline.
    assert ins.put(ext("ext-late"), json={"due_date": iso(timedelta(hours=-3))}).status_code == 200
    got = tutor.get(f"{A}/ext-late/submissions/{sid}").json()
    assert (
        got["late"] is True
        and 3 * 3600 - 60 < got["late_seconds"] < 3 * 3600 + 60
        and got["final_score"] == 1.5
    )

    assert ins.delete(ext("ext-late")).status_code == 204
    got = tutor.get(f"{A}/ext-late/submissions/{sid}").json()
    assert got["late"] is True and 3500 < got["late_seconds"] < 3700 and got["final_score"] == 1.5
    assert export_row(world, "ext-late", "stu")["final_score"] == 1.5


def test_extension_lets_a_student_submit_after_the_deadline(world: World) -> None:
    new_released_assignment(world, "ext-closed", due_date=iso(timedelta(hours=-1)))
    assert world.submit("student", assignment="ext-closed").status_code == 403
    ins = world.client("instructor")
    assert ins.put(ext("ext-closed"), json={"due_date": iso(timedelta(hours=1))}).status_code == 201
    r = world.submit("student", assignment="ext-closed")
    assert r.status_code == 201 and r.json()["late"] is False
    assert world.submit("other_student", assignment="ext-closed").status_code == 403  # only the student's own
    # late_until: after the student's due date, late but accepted until then; then closed.
    body = {"due_date": iso(timedelta(hours=-2)), "late_until": iso(timedelta(hours=1))}
    assert ins.put(ext("ext-closed"), json=body).status_code == 200
    r = world.submit("student", assignment="ext-closed")
    assert r.status_code == 201 and r.json()["late"] is True and 7100 < r.json()["late_seconds"] < 7300
    body = {"due_date": iso(timedelta(hours=-2)), "late_until": iso(timedelta(hours=-1))}
    assert ins.put(ext("ext-closed"), json=body).status_code == 200
    r = world.submit("student", assignment="ext-closed")
    assert r.status_code == 403 and "deadline" in r.json()["message"]


def test_max_submissions_override(world: World) -> None:
    new_released_assignment(world, "ext-tries", max_submissions=1)
    assert world.submit("student", assignment="ext-tries").status_code == 201
    assert world.submit("student", assignment="ext-tries").status_code == 403
    ins = world.client("instructor")
    body = {"due_date": "2099-01-01T00:00:00Z", "max_submissions": 3}
    assert ins.put(ext("ext-tries"), json=body).status_code == 201
    assert world.client("student").get(f"{A}/ext-tries").json()["max_submissions"] == 3
    assert [world.submit("student", assignment="ext-tries").status_code for _ in range(3)] == [201, 201, 403]
    assert world.submit("other_student", assignment="ext-tries").status_code == 201
    assert world.submit("other_student", assignment="ext-tries").status_code == 403
    # Without max_submissions, the assignment's limit holds again.
    assert ins.put(ext("ext-tries"), json={"due_date": "2099-01-01T00:00:00Z"}).status_code == 200
    assert world.client("student").get(f"{A}/ext-tries").json()["max_submissions"] == 1


def test_students_and_tutors_cannot_write_students_cannot_read(world: World) -> None:
    new_released_assignment(world, "ext-perm")
    ins = world.client("instructor")
    body = {"due_date": "2099-01-01T00:00:00Z"}
    assert ins.put(ext("ext-perm", "stu2"), json=body).status_code == 201
    for who in ("student", "other_student"):
        client = world.client(who)
        assert client.get(f"{A}/ext-perm/extensions").status_code == 403
        for user in ("stu", "stu2"):
            assert client.put(ext("ext-perm", user), json=body).status_code == 403
            assert client.delete(ext("ext-perm", user)).status_code == 403
    tutor = world.client("tutor")
    assert tutor.put(ext("ext-perm"), json=body).status_code == 403
    assert tutor.delete(ext("ext-perm", "stu2")).status_code == 403
    outsider = world.client("outsider")  # no role in the lecture: it does not exist for them
    assert outsider.get(f"{A}/ext-perm/extensions").status_code == 404
    assert outsider.put(ext("ext-perm"), json=body).status_code == 404
    assert world.client(None).get(f"{A}/ext-perm/extensions").status_code == 401
    # What stu sees of the assignment says nothing of stu2's extension.
    assert world.client("student").get(f"{A}/ext-perm").json()["extended"] is False
    assert [e["user"] for e in tutor.get(f"{A}/ext-perm/extensions").json()["items"]] == ["stu2"]


@pytest.mark.parametrize(
    ("user", "body", "status", "named"),
    [
        ("nobody", {"due_date": "2099-01-01T00:00:00Z"}, 404, "roster"),
        ("out", {"due_date": "2099-01-01T00:00:00Z"}, 404, "roster"),  # a user of another lecture
        ("tut", {"due_date": "2099-01-01T00:00:00Z"}, 400, "students"),
        ("ins", {"due_date": "2099-01-01T00:00:00Z"}, 400, "students"),
        ("stu", {}, 400, "due_date"),
        ("stu", {"due_date": None}, 400, "due_date"),
        ("stu", {"due_date": "tomorrow"}, 400, "due_date"),
        ("stu", {"due_date": "2099-01-01T00:00:00"}, 400, "time zone"),
        ("stu", {"due_date": 4102444800}, 400, "due_date"),
        (
            "stu",
            {"due_date": "2099-01-02T00:00:00Z", "late_until": "2099-01-01T00:00:00Z"},
            400,
            "late_until",
        ),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "late_until": "soon"}, 400, "late_until"),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "max_submissions": 0}, 400, "max_submissions"),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "max_submissions": -1}, 400, "max_submissions"),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "max_submissions": True}, 400, "max_submissions"),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "max_submissions": "3"}, 400, "max_submissions"),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "max_submissions": 1.5}, 400, "max_submissions"),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "max_submissions": 2**63}, 400, "max_submissions"),
        ("stu", {"due_date": "2099-01-01T00:00:00Z", "penalty": 0}, 400, "penalty"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    world: World, user: str, body: dict, status: int, named: str
) -> None:
    if world.client("tutor").get(f"{A}/ext-bad").status_code == 404:
        new_released_assignment(world, "ext-bad")
    r = world.client("instructor").put(ext("ext-bad", user), json=body)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json") and named in r.json()["message"]
    assert world.client("tutor").get(f"{A}/ext-bad/extensions").json()["total"] == 0


def test_bad_bodies_and_paths(world: World) -> None:
    ins = world.client("instructor")
    for content in (b"not json", b"[1]", b'"x"', b"null"):
        r = ins.put(ext("tiny"), data=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["message"], content
    r = ins.put(f"{A}/no-such/extensions/stu", json={"due_date": "2099-01-01T00:00:00Z"})
    assert r.status_code == 404 and "no-such" in r.json()["message"]
    assert ins.get(f"{A}/no-such/extensions").status_code == 404
    assert world.client("tutor").get(f"{A}/tiny/extensions").json()["total"] == 0


def test_withdrawing_follows_the_students_own_deadline(world: World) -> None:
    new_released_assignment(
        world, "ext-withdraw", due_date=iso(timedelta(hours=-1)), late_until=iso(timedelta(hours=2))
    )
    first, second = (world.submit("student", assignment="ext-withdraw").json()["id"] for _ in range(2))
    student = world.client("student")
    r = student.delete(f"{A}/ext-withdraw/submissions/{first}")
    assert r.status_code == 403 and "before the deadline" in r.json()["message"]
    body = {"due_date": iso(timedelta(hours=1))}
    assert world.client("instructor").put(ext("ext-withdraw"), json=body).status_code == 201
    assert student.delete(f"{A}/ext-withdraw/submissions/{first}").status_code == 204
    body = {"due_date": iso(timedelta(minutes=-1)), "late_until": iso(timedelta(hours=1))}
    assert world.client("instructor").put(ext("ext-withdraw"), json=body).status_code == 200
    assert student.delete(f"{A}/ext-withdraw/submissions/{second}").status_code == 403


def test_moving_the_assignments_deadline_recomputes_late_except_for_extended_students(world: World) -> None:
    new_released_assignment(
        world,
        "ext-move",
        due_date=iso(timedelta(hours=1)),
        late_until=iso(timedelta(hours=3)),
        late_penalty=0.5,
    )
    ins, tutor = world.client("instructor"), world.client("tutor")
    mine = world.submit("student", assignment="ext-move").json()["id"]
    theirs = world.submit("other_student", assignment="ext-move").json()["id"]
    # stu2 has an extension of their own: the assignment's deadline no longer concerns them.
    assert ins.put(ext("ext-move", "stu2"), json={"due_date": iso(timedelta(hours=-2))}).status_code == 201
    assert tutor.get(f"{A}/ext-move/submissions/{theirs}").json()["late"] is True

    def late(sid: int) -> tuple[bool, float]:
        got = tutor.get(f"{A}/ext-move/submissions/{sid}").json()
        return got["late"], got["late_seconds"]

    # Moved into the past: stu's submission is late now, by the seconds past the new deadline.
    r = ins.patch(f"{A}/ext-move", json={"due_date": iso(timedelta(hours=-1))})
    assert r.status_code == 200, r.text
    is_late, seconds = late(mine)
    assert is_late and 3600 - 60 < seconds < 3600 + 60
    assert export_row(world, "ext-move", "stu")["late"] is True
    assert late(theirs)[0] is True and 7200 - 60 < late(theirs)[1] < 7200 + 60  # their own deadline

    # Moved back: on time again; stu2's lateness still follows their extension alone.
    r = ins.patch(f"{A}/ext-move", json={"due_date": iso(timedelta(days=1)), "late_until": None})
    assert r.status_code == 200, r.text
    assert late(mine) == (False, 0.0) and late(theirs)[0] is True
    # Another field changed alone leaves lateness as it is.
    assert ins.patch(f"{A}/ext-move", json={"late_penalty": 0.25}).status_code == 200
    assert late(mine) == (False, 0.0)

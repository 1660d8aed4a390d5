"""Every endpoint, every kind of caller: exactly the right answer.

Callers: anonymous, a student, another student of the same lecture, a tutor, an instructor,
an admin, and an outsider who is instructor of a *different* lecture (a role in one lecture
grants nothing in another).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import DATA, World, zip_dir

WHO = ("anonymous", "student", "other_student", "tutor", "instructor", "admin", "outsider")
A = "lectures/ml/assignments"
_n = itertools.count()


@dataclass
class Case:
    method: str
    path: str | Callable[[World], str]
    expect: dict[str, int]
    json: Any = None
    data: Callable[[], bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def statuses(  # outsiders have no role in lecture ml: to them it does not exist
    anonymous=401, student=403, other_student=403, tutor=403, instructor=403, admin=403, outsider=404
):
    return dict(
        anonymous=anonymous,
        student=student,
        other_student=other_student,
        tutor=tutor,
        instructor=instructor,
        admin=admin,
        outsider=outsider,
    )


def members(code: int) -> dict[str, int]:
    return statuses(student=code, other_student=code, tutor=code, instructor=code, admin=code)


def fresh_lecture(world: World) -> str:
    code = f"tmp{next(_n)}"
    world.client("admin").post("lectures", json={"code": code, "name": code})
    world.client("admin").put(f"lectures/{code}/roles/ins", json={"role": "instructor"})
    return f"lectures/{code}"


def fresh_assignment(world: World) -> str:
    name = f"a{next(_n)}"
    assert world.client("instructor").post(A, json={"name": name}).status_code == 201
    return f"{A}/{name}"


def student_submission(world: World) -> str:
    r = world.submit("student")
    assert r.status_code == 201, r.text
    return f"{A}/tiny/submissions/{r.json()['id']}"


def granted_role(world: World) -> str:
    world.client("admin").put("lectures/ml/roles/newbie", json={"role": "student"})
    return "lectures/ml/roles/newbie"


def granted_extension(world: World) -> str:
    path = f"{fresh_assignment(world)}/extensions/stu"
    assert world.client("instructor").put(path, json={"due_date": DUE}).status_code == 201
    return path


DUE = "2099-01-01T00:00:00Z"
NOTEBOOK = {"Content-Type": "application/x-ipynb+json"}
CASES = {
    "health": Case("GET", "health", {w: 200 for w in WHO}),
    "openapi": Case("GET", "openapi.yaml", {w: 200 for w in WHO}),
    "user": Case("GET", "user", {**members(200), "outsider": 200}),
    "list lectures": Case("GET", "lectures", {**members(200), "outsider": 200}),
    "create lecture": Case(
        "POST", "lectures", statuses(admin=201, outsider=403), json={"code": "new-lecture"}
    ),
    "get lecture": Case("GET", "lectures/ml", members(200)),
    "patch lecture": Case("PATCH", "lectures/ml", statuses(instructor=200, admin=200), json={"name": "ML"}),
    # a fresh lecture where only "ins" has a role (instructor): everyone else is told it does not exist
    "delete lecture": Case(
        "DELETE", fresh_lecture, statuses(admin=204, student=404, other_student=404, tutor=404)
    ),
    "list roles": Case("GET", "lectures/ml/roles", statuses(tutor=200, instructor=200, admin=200)),
    "grant role": Case(
        "PUT",
        lambda w: f"lectures/ml/roles/new{next(_n)}",
        statuses(instructor=201, admin=201),
        json={"role": "student"},
    ),
    "revoke role": Case("DELETE", granted_role, statuses(instructor=204, admin=204)),
    "list assignments": Case("GET", A, members(200)),
    "create assignment": Case(
        "POST", A, statuses(instructor=201, admin=201), json={"name": "new-assignment"}
    ),
    "get released assignment": Case("GET", f"{A}/tiny", members(200)),
    "get unreleased assignment": Case(
        "GET", f"{A}/draft", statuses(student=404, other_student=404, tutor=200, instructor=200, admin=200)
    ),
    "patch assignment": Case("PATCH", f"{A}/tiny", statuses(instructor=200, admin=200), json={"title": "T"}),
    "delete assignment": Case("DELETE", fresh_assignment, statuses(instructor=204, admin=204)),
    "download release": Case("GET", f"{A}/tiny/files", members(200)),
    "download source": Case(
        "GET", f"{A}/tiny/files", statuses(tutor=200, instructor=200, admin=200), params={"version": "source"}
    ),
    "download unreleased": Case(
        "GET",
        f"{A}/draft/files",
        statuses(student=404, other_student=404, tutor=404, instructor=404, admin=404),
        params={"version": "release"},
    ),
    "upload source": Case(
        "PUT",
        f"{A}/tiny/files",
        statuses(instructor=200, admin=200),
        data=lambda: zip_dir(DATA / "tiny"),
        headers={"Content-Type": "application/zip"},
    ),
    "submit": Case(
        "POST",
        f"{A}/tiny/submissions",
        members(201),
        headers=NOTEBOOK,
        data=lambda: (DATA / "tiny_submission.ipynb").read_bytes(),
        params={"filename": "tiny.ipynb"},
    ),
    "submit unreleased": Case(
        "POST",
        f"{A}/draft/submissions",
        statuses(student=404, other_student=404, tutor=409, instructor=409, admin=409),
        headers=NOTEBOOK,
        data=lambda: (DATA / "tiny_submission.ipynb").read_bytes(),
        params={"filename": "tiny.ipynb"},
    ),
    "list submissions": Case("GET", f"{A}/tiny/submissions", members(200)),
    "get own/other submission": Case("GET", student_submission, {**members(200), "other_student": 404}),
    "download submission": Case(
        "GET", lambda w: student_submission(w) + "/files", {**members(200), "other_student": 404}
    ),
    "grade submission": Case(
        "PATCH",
        student_submission,
        statuses(tutor=200, instructor=200, admin=200),
        json={"manual_score": 1, "comment": "ok"},
    ),
    "list extensions": Case("GET", f"{A}/tiny/extensions", statuses(tutor=200, instructor=200, admin=200)),
    "grant extension": Case(
        "PUT",
        lambda w: f"{fresh_assignment(w)}/extensions/stu",
        statuses(instructor=201, admin=201),
        json={"due_date": DUE},
    ),
    "remove extension": Case("DELETE", granted_extension, statuses(instructor=204, admin=204)),
    "delete submission": Case(
        "DELETE", student_submission, statuses(student=204, other_student=404, instructor=204, admin=204)
    ),
}


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("name", list(CASES))
def test_permission_matrix(world: World, name: str, who: str) -> None:
    case = CASES[name]
    path = case.path(world) if callable(case.path) else case.path
    json_body = case.json
    if name in ("create lecture", "create assignment") and isinstance(json_body, dict):
        json_body = {**json_body, ("code" if "lecture" in name else "name"): f"n{next(_n)}"}
    client = world.client(None if who == "anonymous" else who)
    r = client.request(
        case.method,
        path,
        json=json_body,
        data=case.data() if case.data else None,
        headers=case.headers,
        params=case.params,
    )
    expected = case.expect[who]
    assert r.status_code == expected, f"{name} as {who}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error", "message"} and body["message"], body


def test_lists_show_only_what_the_caller_may_see(world: World) -> None:
    mine = world.submit("student").json()["id"]
    theirs = world.submit("other_student").json()["id"]
    ids = lambda who: {s["id"] for s in world.client(who).get(f"{A}/tiny/submissions").json()["items"]}  # noqa: E731
    assert mine in ids("student") and theirs not in ids("student")
    assert theirs in ids("other_student") and mine not in ids("other_student")
    assert {mine, theirs} <= ids("tutor")
    names = lambda who: {a["name"] for a in world.client(who).get(A).json()["items"]}  # noqa: E731
    assert "draft" not in names("student") and "draft" in names("tutor")
    codes = lambda who: {lec["code"] for lec in world.client(who).get("lectures").json()["items"]}  # noqa: E731
    assert "ml" in codes("student") and "ml" not in codes("outsider") and "other" in codes("outsider")
    assert {"ml", "other"} <= codes("admin")
    student_view = world.client("student").get(f"{A}/tiny").json()
    assert "settings" not in student_view and "source_commit" not in student_view

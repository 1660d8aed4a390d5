"""List endpoints over many rows: every page together is exactly the list, and the scores export picks
each student's latest or best submission as the assignment's policy says (late penalty, manual scores and
withdrawn submissions included). Rows are written straight to the service's database: git is not read."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from grader_service import db
from grader_service.orm import Assignment, Lecture, Role, Submission, User, utcnow

from .service import Client, ServiceProcess

A = "lectures/big/assignments"
STUDENTS = [f"s{i:02d}" for i in range(13)]  # s12 never submits


@dataclass
class Row:
    """What the test wrote for one submission: the expectations are computed from these alone."""

    id: int
    user: str
    assignment: str
    score: float | None
    manual_score: float | None
    late: bool
    deleted: bool


@pytest.fixture(scope="module")
def course(service: ServiceProcess) -> tuple[dict[str, Client], list[Row]]:
    staff = service.client(service.token("big-tutor"))
    clients = {"tutor": staff, "s03": service.client(service.token("s03"))}
    rng = random.Random(21)
    written: list[tuple[Submission, str]] = []
    with db.session_scope(db.make_session_factory(service.engine)) as session:
        lecture = Lecture(code="big", name="Big")
        session.add(lecture)
        session.flush()
        assignments = {
            name: Assignment(
                lecture_id=lecture.id, name=name, status="released", grading_policy=policy, late_penalty=0.5,
                settings={}, release_commit="b" * 40, max_score=10,
            )
            for name, policy in (("latest", "latest"), ("best", "best"))
        }  # fmt: skip
        session.add_all(assignments.values())
        tutor = session.scalars(select(User).where(User.name == "big-tutor")).one()
        session.add(Role(user_id=tutor.id, lecture_id=lecture.id, role="tutor"))
        users = {}
        for name in STUDENTS:
            users[name] = session.scalars(select(User).where(User.name == name)).one_or_none() or User(
                name=name
            )
            session.add(users[name])
        session.flush()
        for user in users.values():
            session.add(Role(user_id=user.id, lecture_id=lecture.id, role="student"))
        start = utcnow() - timedelta(days=1)
        for i in range(60):  # interleaved across students and assignments, as they would arrive
            name, assignment = rng.choice(STUDENTS[:-1]), rng.choice(list(assignments.values()))
            submission = Submission(
                assignment_id=assignment.id, user_id=users[name].id, commit_hash=f"{i:040x}",
                submitted_at=start + timedelta(minutes=i), late=rng.random() < 0.3, auto_status="graded",
                score=rng.choice([None, 0.0, 2.5, 5.0, 7.5, 10.0]), max_score=10,
                manual_score=rng.choice([None, None, None, 4.0, 9.0]),
                deleted_at=utcnow() if rng.random() < 0.15 else None, gradebook={"big": "x" * 1000},
            )  # fmt: skip
            session.add(submission)
            written.append((submission, assignment.name))
        session.flush()
        rows = [
            Row(s.id, s.user.name, a, s.score, s.manual_score, s.late, s.deleted_at is not None)
            for s, a in written
        ]
    return clients, rows


def final(row: Row) -> float | None:
    score = row.manual_score if row.manual_score is not None else row.score
    if score is None:
        return None
    return round(score * 0.5, 6) if row.late else score


def expected_scores(rows: list[Row], assignment: str) -> list[dict[str, Any]]:
    """The export's rule, written out: per student with a kept submission, the latest, or the best
    penalized final score (the earliest of equals); students in name order."""
    table = []
    for user in sorted({r.user for r in rows if r.assignment == assignment and not r.deleted}):
        mine = [r for r in rows if r.assignment == assignment and r.user == user and not r.deleted]
        if assignment == "latest":
            chosen = max(mine, key=lambda r: r.id)
        else:
            chosen = max(mine, key=lambda r: (final(r) or 0, -r.id))
        score = chosen.manual_score if chosen.manual_score is not None else chosen.score
        table.append(
            {
                "user": user,
                "submission": chosen.id,
                "late": chosen.late,
                "score": score,
                "final_score": final(chosen),
            }
        )
    return table


@pytest.mark.parametrize("assignment", ["latest", "best"])
def test_scores_export_picks_by_policy_with_penalty_manual_scores_and_withdrawals(course, assignment) -> None:
    clients, rows = course
    want = expected_scores(rows, assignment)
    assert len(want) >= 8  # the seed gives most students a kept submission to choose from
    table = clients["tutor"].get(f"{A}/{assignment}/scores").json()
    assert table["policy"] == assignment
    got = [
        {k: item[k] for k in ("user", "submission", "late", "score", "final_score")}
        for item in table["items"]
    ]
    assert got == want
    r = clients["tutor"].get(f"{A}/{assignment}/scores", params={"format": "csv"})
    parsed = list(csv.DictReader(io.StringIO(r.text)))
    assert [(p["user"], int(p["submission"])) for p in parsed] == [(w["user"], w["submission"]) for w in want]
    for p, w in zip(parsed, want, strict=True):
        assert (float(p["final_score"]) if p["final_score"] else None) == w["final_score"]


def walk(client: Client, path: str, params: dict[str, str], limit: int) -> tuple[list[int], set[int]]:
    """Every page of a list, in order: the ids seen, and the totals the pages reported."""
    ids, totals, offset = [], set(), 0
    while True:
        page = client.get(path, params={**params, "limit": str(limit), "offset": str(offset)}).json()
        totals.add(page["total"])
        assert "gradebook" not in str(page["items"])  # lists never carry gradebooks
        ids += [item["id"] for item in page["items"]]
        if len(page["items"]) < limit:
            return ids, totals
        offset += limit


@pytest.mark.parametrize("limit", [1, 4, 7, 100])
def test_pages_together_are_the_whole_list_newest_first(course, limit: int) -> None:
    clients, rows = course
    kept = [r for r in rows if r.assignment == "best" and not r.deleted]
    latest = {}
    for r in kept:
        latest[r.user] = max(latest.get(r.user, 0), r.id)
    cases = [
        ("tutor", {}, [r.id for r in kept]),
        ("tutor", {"latest": "true"}, list(latest.values())),
        ("tutor", {"user": "s03"}, [r.id for r in kept if r.user == "s03"]),
        ("tutor", {"user": "s12"}, []),
        ("s03", {}, [r.id for r in kept if r.user == "s03"]),
        ("s03", {"user": "s05"}, [r.id for r in kept if r.user == "s03"]),  # a student sees only their own
    ]
    for who, params, want in cases:
        ids, totals = walk(clients[who], f"{A}/best/submissions", params, limit)
        assert ids == sorted(want, reverse=True), (who, params)
        assert totals == {len(want)}, (who, params)

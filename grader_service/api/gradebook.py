"""The whole-lecture gradebook: one row per student on the roster, one column per assignment, a total.

A large course has a thousand students and tens of assignments, so the table is streamed, never built
whole: students are read a page at a time (keyset pagination by name), each page's scores with one query
for all assignments, and the page is written and flushed before the next is read. The database
connection goes back to the pool before each flush, so a slow client holds none while it reads. Pages
are read in separate transactions: a submission graded while the table streams may show in a later page.

Each cell is chosen exactly as the per-assignment export chooses (`grading.counts_instead`) and scored
by the one rule (`scoring.final_score`): the latest or best submission, late penalty applied.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import CompoundSelect, func, select, union_all
from sqlalchemy.orm import Session
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from ..orm import Assignment, Lecture, Role, Submission, User
from ..scoring import final_score
from ..states import GradingPolicy, RoleName
from .base import APIHandler
from .csv_export import csv_lines
from .grading import counts_instead
from .permissions import needs_role

# Students per page: one page's submissions (students x assignments x their submissions) are in memory.
PAGE_SIZE = 200
FIXED_COLUMNS = ("user", "display_name")


@dataclass(frozen=True)
class Student:
    id: int
    name: str
    display_name: str | None


@dataclass(frozen=True)
class Row:
    """One student's line: their final score per assignment (None: nothing submitted) and the total."""

    user: str
    display_name: str | None
    scores: list[float | None]

    @property
    def total(self) -> float:
        return round(sum((score for score in self.scores if score is not None), 0.0), 6)


def roster_page(db: Session, lecture_id: int, after: str | None, size: int) -> list[Student]:
    """The lecture's students after the name `after` (None: from the first), in name order."""
    query = (
        select(User.id, User.name, User.display_name)
        .join(Role, Role.user_id == User.id)
        .where(Role.lecture_id == lecture_id, Role.role == RoleName.STUDENT)
        .order_by(User.name)
        .limit(size)
    )
    if after is not None:
        query = query.where(User.name > after)
    return [Student(*row) for row in db.execute(query).tuples()]


def page_query(user_ids: Sequence[int], latest: Sequence[int], best: Sequence[int]) -> CompoundSelect[Any]:
    """The scores of a page of students, with their submission ids: under the latest policy (assignments
    `latest`) only each one's latest kept submission (max(id)); under best (`best`) all their kept ones,
    to choose from. Two parts of one UNION ALL, each served by an index (an OR of both would scan the
    table: benchmarks/large_course.py)."""
    kept = (Submission.user_id.in_(user_ids), Submission.deleted_at.is_(None))
    columns = (
        Submission.id, Submission.user_id, Submission.assignment_id, Submission.late,
        Submission.score, Submission.manual_score, Submission.cell_score,
    )  # fmt: skip
    newest = (
        select(func.max(Submission.id))
        .where(Submission.assignment_id.in_(latest), *kept)
        .group_by(Submission.assignment_id, Submission.user_id)
    )
    return union_all(
        select(*columns).where(Submission.assignment_id.in_(best), *kept),
        select(*columns).where(Submission.id.in_(newest)),
    )


def page_scores(
    db: Session,
    students: Sequence[Student],
    assignments: Sequence[Assignment],
    policies: Sequence[GradingPolicy],
) -> list[Row]:
    """The students' rows, from one query over all assignments; each cell chosen as the per-assignment
    export chooses (`counts_instead`, in submission order)."""
    latest = [a.id for a, policy in zip(assignments, policies, strict=True) if policy == GradingPolicy.LATEST]
    best = [a.id for a, policy in zip(assignments, policies, strict=True) if policy == GradingPolicy.BEST]
    result = db.execute(page_query([student.id for student in students], latest, best)).tuples()
    rows = sorted(result.all(), key=itemgetter(0))  # by submission id (a key: comparing whole rows is slow)
    column = {a.id: i for i, a in enumerate(assignments)}
    chosen: dict[tuple[int, int], float | None] = {}
    for _, user_id, assignment_id, late, auto, manual, cells in rows:  # in submission order
        i = column[assignment_id]
        final = final_score(auto, manual, late, assignments[i].late_penalty, cells)
        key = (user_id, i)
        if key not in chosen or counts_instead(policies[i], chosen[key], final):
            chosen[key] = final
    return [
        Row(s.name, s.display_name, [chosen.get((s.id, i)) for i in range(len(assignments))])
        for s in students
    ]


def csv_chunk(rows: Sequence[Row]) -> str:
    return csv_lines([row.user, row.display_name, *row.scores, row.total] for row in rows)


def json_chunk(rows: Sequence[Row], names: Sequence[str], first: bool) -> str:
    items = (
        json.dumps(
            {
                "user": row.user,
                "display_name": row.display_name,
                "scores": dict(zip(names, row.scores, strict=True)),
                "total": row.total,
            }
        )
        for row in rows
    )
    text = ",".join(items)
    return text if first or not text else "," + text


class LectureScoresHandler(APIHandler):
    """`GET /lectures/{code}/scores`: the gradebook, streamed page by page (module docstring)."""

    @needs_role(RoleName.TUTOR)
    async def get(self, lecture: Lecture) -> None:
        wanted = self.choice_argument("policy", tuple(GradingPolicy), None)
        fmt = self.choice_argument("format", ("json", "csv"), "json")
        assignments = list(
            self.db.scalars(
                select(Assignment).where(Assignment.lecture_id == lecture.id).order_by(Assignment.id)
            )
        )
        policies = [GradingPolicy(wanted) if wanted else a.grading_policy for a in assignments]
        names = [a.name for a in assignments]
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=UTF-8")
            self.set_header("Content-Disposition", f'attachment; filename="{lecture.code}-scores.csv"')
            self.write(csv_lines([[*FIXED_COLUMNS, *names, "total"]]))
        else:
            head = {
                "lecture": lecture.code,
                "policy": wanted,
                "assignments": [
                    {"name": a.name, "policy": p, "late_penalty": a.late_penalty, "max_score": a.max_score}
                    for a, p in zip(assignments, policies, strict=True)
                ],
            }
            self.write(json.dumps(head)[:-1] + ', "items": [')
        try:
            await self._stream(lecture.id, assignments, policies, fmt)
        except StreamClosedError:
            return  # the client left: nothing more to send
        if fmt == "json":
            self.write("]}")
        self.finish()

    async def _stream(
        self, lecture_id: int, assignments: list[Assignment], policies: list[GradingPolicy], fmt: str | None
    ) -> None:
        names = [a.name for a in assignments]
        after: str | None = None
        while True:
            students = roster_page(self.db, lecture_id, after, PAGE_SIZE)
            rows = page_scores(self.db, students, assignments, policies) if students else []
            # Hold no database connection while the client reads this page.
            self.release_db()
            self.write(csv_chunk(rows) if fmt == "csv" else json_chunk(rows, names, first=after is None))
            await self.flush()
            if len(students) < PAGE_SIZE:
                return
            after = students[-1].name
            if not await self.service.db_gate.wait(self.service.db_wait_timeout):
                # The headers are out: no error answer now. Cut the connection, so that the client sees
                # a truncated response rather than a table that ends early.
                self.service.log.warning("Lecture scores cut short: %s", self.database_busy().message)
                connection = self.request.connection
                assert isinstance(connection, HTTP1Connection)  # the server speaks HTTP/1 only
                connection.close()
                raise StreamClosedError()


handlers = [(r"lectures/([^/]+)/scores", LectureScoresHandler)]

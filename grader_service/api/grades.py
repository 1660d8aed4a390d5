"""Per-cell grades of a submission, their history, and the queue of submissions waiting for a person.

Students read their own submission's grades once its result is visible to them (`ResultView`); only
tutors and instructors change them, read the history, or the grading queue. A PUT changes any subset
of cells in one transaction, guarded by the submission's `grades_version`: of two concurrent PUTs
both are applied in turn or the later one is answered 409, never one silently lost.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult

from ..grades import grades_of, history_of, log_change, refresh
from ..orm import Grade, GradeChange, Lecture, Submission, User, utcnow
from ..states import ManualStatus, RoleName
from .base import APIHandler, api_error, isoformat
from .lectures import check_fields
from .params import ID_MAX
from .permissions import needs_role

COMMENT_MAX = 20000
CELL_FIELDS = {"points", "comment", "extra_credit"}


def grade_model(grade: Grade) -> dict[str, Any]:
    return {
        "grade_id": grade.grade_id,
        "notebook": grade.notebook,
        "kind": grade.kind,
        "auto": grade.auto_points,
        "manual": grade.manual_points,
        "extra_credit": grade.extra_credit,
        "max": grade.max_points,
        "comment": grade.comment,
        "needs_manual": grade.needs_manual,
    }


def grades_model(submission: Submission, grades: list[Grade], version: int) -> dict[str, Any]:
    return {
        "submission": submission.id,
        "version": version,
        "manual_status": submission.manual_status,
        "cell_score": submission.cell_score,
        "items": [grade_model(g) for g in grades],
    }


def change_model(change: GradeChange) -> dict[str, Any]:
    return {
        "id": change.id,
        "at": isoformat(change.at),
        "user": change.user_name,
        "what": change.what,
        "old": json.loads(change.old) if change.old is not None else None,
        "new": json.loads(change.new) if change.new is not None else None,
        "comment": change.comment,
    }


def is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class CellChange:
    """One cell's part of a PUT body: the fields it sets (absent ones are left as they are)."""

    grade_id: str
    fields: dict[str, Any]


def parse_changes(body: dict[str, Any]) -> list[CellChange]:
    """The PUT body's cells, their fields' types checked (400); ranges are checked against the rows."""
    check_fields(body, {"grades", "version"})
    cells = body.get("grades")
    if not isinstance(cells, dict) or not cells:
        raise api_error(
            400, "Field 'grades' must be a non-empty object: grade_id -> {points, comment, extra_credit}"
        )
    changes = []
    for grade_id, fields in cells.items():
        if not isinstance(fields, dict) or not fields or set(fields) - CELL_FIELDS:
            raise api_error(
                400, f"grades[{grade_id!r}] must be an object with some of: {', '.join(sorted(CELL_FIELDS))}"
            )
        if "points" in fields and fields["points"] is not None and not is_number(fields["points"]):
            raise api_error(400, f"grades[{grade_id!r}].points must be a number or null")
        if "extra_credit" in fields and not is_number(fields["extra_credit"]):
            raise api_error(400, f"grades[{grade_id!r}].extra_credit must be a number")
        comment = fields.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > COMMENT_MAX):
            raise api_error(
                400, f"grades[{grade_id!r}].comment must be a string of at most {COMMENT_MAX} characters"
            )
        changes.append(CellChange(grade_id, fields))
    return changes


def check_ranges(changes: list[CellChange], grades: dict[str, Grade]) -> None:
    """422 naming the first cell that does not exist or whose points fall outside [0, max]."""
    for change in changes:
        grade = grades.get(change.grade_id)
        if grade is None:
            raise api_error(
                422, f"Unknown grade_id {change.grade_id!r}: this submission has no such graded cell"
            )
        points = change.fields.get("points")
        if points is not None and not 0 <= points <= grade.max_points:
            raise api_error(
                422, f"grades[{change.grade_id!r}].points {points} is outside [0, {grade.max_points}]"
            )
        extra = change.fields.get("extra_credit")
        if extra is not None and extra < 0:
            raise api_error(422, f"grades[{change.grade_id!r}].extra_credit {extra} must not be negative")


FIELD_COLUMNS = {"points": "manual_points", "comment": "comment", "extra_credit": "extra_credit"}


def apply_change(grade: Grade, change: CellChange) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set the cell's fields; the old and new values of those that changed (for the history)."""
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for field, value in change.fields.items():
        column = FIELD_COLUMNS[field]
        value = float(value) if is_number(value) else value
        if getattr(grade, column) != value:
            old[field], new[field] = getattr(grade, column), value
            setattr(grade, column, value)
    if new:
        grade.updated_at = utcnow()
    return old, new


class GradesHandler(APIHandler):
    def expected_version(self, body: dict[str, Any], current: int) -> int:
        """The version the caller's change is based on: the body's `version`, else `If-Match`, else the
        one just read (then only a change landing meanwhile makes this request 409)."""
        version = body.get("version")
        header = self.request.headers.get("If-Match")
        if version is None and header is not None:
            try:
                version = int(header.strip().removeprefix("W/").strip('"'))
            except ValueError:
                raise api_error(400, "If-Match must be a grades version (an integer)") from None
        if version is None:
            return current
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= ID_MAX:
            raise api_error(400, f"Field 'version' must be an integer from 0 to {ID_MAX}")
        return version

    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission = self.submission_or_404(self.assignment_or_404(lecture, name), submission_id)
        self.permissions.result_view(submission).require_visible("grades")
        self.set_header("ETag", f'"{submission.grades_version}"')
        self.write_json(
            grades_model(submission, grades_of(self.db, submission.id), submission.grades_version)
        )

    @needs_role(RoleName.TUTOR)
    def put(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission = self.submission_or_404(self.assignment_or_404(lecture, name), submission_id)
        body = self.json_body()
        changes = parse_changes(body)
        expected = self.expected_version(body, submission.grades_version)
        rows = {g.grade_id: g for g in grades_of(self.db, submission.id)}
        check_ranges(changes, rows)
        # Compare-and-set first: from here this transaction holds the submission (its row lock on
        # PostgreSQL, the write lock on SQLite) and the rows read above are the current ones.
        claimed: CursorResult[Any] = self.db.execute(  # type: ignore[assignment]
            update(Submission)
            .where(Submission.id == submission.id, Submission.grades_version == expected)
            .values(grades_version=expected + 1)
        )
        if claimed.rowcount != 1:
            self.db.rollback()
            raise api_error(
                409, f"The grades of submission {submission.id} changed meanwhile (not version {expected}); "
                "read them again and resend"
            )  # fmt: skip
        for change in changes:
            old, new = apply_change(rows[change.grade_id], change)
            if new:
                log_change(self.db, submission.id, self.me, change.grade_id, old, new)
        self.db.flush()
        refresh(submission, list(rows.values()), bump=False)
        self.db.commit()
        self.set_header("ETag", f'"{expected + 1}"')
        self.write_json(grades_model(submission, grades_of(self.db, submission.id), expected + 1))


class HistoryHandler(APIHandler):
    @needs_role(RoleName.TUTOR)
    def get(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission = self.submission_or_404(self.assignment_or_404(lecture, name), submission_id)
        self.write_json(
            {
                "submission": submission.id,
                "items": [change_model(c) for c in history_of(self.db, submission.id)],
            }
        )


def queue_item(row: Any, previous: int | None, following: int | None) -> dict[str, Any]:
    sid, user, submitted_at = row
    return {
        "id": sid,
        "user": user,
        "submitted_at": isoformat(submitted_at),
        "previous": previous,
        "next": following,
    }


class GradingQueueHandler(APIHandler):
    """Submissions that still need a person (manual_status needed), oldest first, each with the ids
    before and after it in that order, so a tutor can step through them."""

    @needs_role(RoleName.TUTOR)
    def get(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        offset, limit = self.pagination()
        waiting = (
            Submission.assignment_id == assignment.id,
            Submission.deleted_at.is_(None),
            Submission.manual_status == ManualStatus.NEEDED,
        )
        total = self.db.execute(select(func.count()).where(*waiting)).scalar_one()
        start = max(offset - 1, 0)  # one row either side of the page: its first's previous, last's next
        window = self.db.execute(
            select(Submission.id, User.name, Submission.submitted_at)
            .join(User, User.id == Submission.user_id)
            .where(*waiting)
            .order_by(Submission.submitted_at, Submission.id)
            .offset(start)
            .limit(limit + 1 + (offset - start))
        ).all()
        items = []
        for i in range(offset - start, min(len(window), offset - start + limit)):
            previous = window[i - 1][0] if i > 0 else None
            following = window[i + 1][0] if i + 1 < len(window) else None
            items.append(queue_item(window[i], previous, following))
        self.write_page(items, total, offset, limit)


S = r"lectures/([^/]+)/assignments/([^/]+)/submissions/([^/]+)"
handlers = [
    (S + "/grades", GradesHandler),
    (S + "/history", HistoryHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)/grading-queue", GradingQueueHandler),
]

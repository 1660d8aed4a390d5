"""Assignments of a lecture: instructors create and configure them; students see released ones."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..orm import Assignment, Extension, Lecture, Submission
from ..scoring import Deadline, deadline_of, recompute_assignment_lateness
from ..states import (
    AssignmentKind,
    AssignmentStatus,
    FeedbackPolicy,
    GradingPolicy,
    RoleName,
    choices,
    member_of,
)
from ..storage.release import Released, ReleaseFailed, release_assignment
from .base import APIHandler, api_error
from .lectures import check_fields, slug_field, string_field
from .params import ID_MAX
from .permissions import needs_role
from .serialize import assignment_model

QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|K|M|G|T|Ki|Mi|Gi|Ti)?\Z")
# Per-assignment executor settings and how to check each (the spec's AssignmentSettings).
SETTINGS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "cell_timeout": ((int, float), "seconds per cell (> 0)"),
    "timeout": ((int, float), "seconds for the whole notebook (> 0)"),
    "memory": ((int, str), "memory limit: bytes (>= 1) or a Kubernetes quantity such as '1Gi'"),
    "cpu": ((int, float, str), "CPU limit: cores (> 0), or a Kubernetes quantity such as '500m'"),
    "disk": (
        (int, str),
        "disk limit of a grading job: bytes (>= 1) or a Kubernetes quantity such as '512Mi'",
    ),
    "image": ((str,), "grading image for the Kubernetes executor (1-255 characters)"),
    "allowed_files": ((list,), "glob patterns of files students may submit"),
    "autograde": ((bool,), "true or false: false sends submissions to a person at once, with no grading job"),
}
EDITABLE = {
    "title",
    "kind",
    "status",
    "due_date",
    "late_until",
    "late_penalty",
    "max_submissions",
    "grading_policy",
    "feedback_policy",
    "settings",
}
# status transitions an instructor may make by PATCH (created -> released runs the release).
TRANSITIONS = {
    (AssignmentStatus.CREATED, AssignmentStatus.RELEASED),
    (AssignmentStatus.RELEASED, AssignmentStatus.COMPLETED),
    (AssignmentStatus.COMPLETED, AssignmentStatus.RELEASED),
}


def parse_datetime(body: dict[str, Any], key: str) -> datetime | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise api_error(400, f"Field {key!r} must be an ISO 8601 date-time string or null")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise api_error(400, f"Field {key!r} is not an ISO 8601 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        raise api_error(400, f"Field {key!r} needs a time zone, e.g. {value}Z")
    try:
        return parsed.astimezone(UTC)  # stored as UTC: 9999-12-31T23:00-05:00 is past year 9999
    except OverflowError:
        raise api_error(400, f"Field {key!r} is out of range: {value!r}") from None


def parse_settings(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise api_error(400, "Field 'settings' must be an object")
    for key, item in value.items():
        if key not in SETTINGS:
            raise api_error(400, f"Unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        types, meaning = SETTINGS[key]
        if item is None:
            continue
        bad = isinstance(item, bool) != (types == (bool,)) or not isinstance(item, types)
        if not bad and isinstance(item, int | float) and not isinstance(item, bool):
            bad = item <= 0 or not math.isfinite(item) or (key in ("memory", "disk") and item < 1)
        if not bad and isinstance(item, str):
            bad = not (0 < len(item) <= 255) or (
                key in ("memory", "cpu", "disk") and not QUANTITY_RE.match(item)
            )
        if not bad and key == "allowed_files":
            bad = not all(isinstance(p, str) and p for p in item)
        if bad:
            raise api_error(400, f"Setting {key!r} must be {meaning}")
    return {k: v for k, v in value.items() if v is not None}


def apply_fields(assignment: Assignment, body: dict[str, Any]) -> None:
    """Copy validated editable fields (other than status) from a request body."""
    if "title" in body:
        assignment.title = string_field(body, "title", nullable=True)
    for key in ("due_date", "late_until"):
        if key in body:
            setattr(assignment, key, parse_datetime(body, key))
    if "late_penalty" in body:
        value = body["late_penalty"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise api_error(400, "Field 'late_penalty' must be a number between 0 and 1")
        assignment.late_penalty = float(value)
    if "max_submissions" in body:
        value = body["max_submissions"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ID_MAX
        ):
            raise api_error(400, f"Field 'max_submissions' must be an integer from 1 to {ID_MAX}, or null")
        assignment.max_submissions = value
    for key, vocabulary in (
        ("kind", AssignmentKind),
        ("grading_policy", GradingPolicy),
        ("feedback_policy", FeedbackPolicy),
    ):
        if key in body:
            value = member_of(vocabulary, body[key])
            if value is None:
                raise api_error(400, f"Field {key!r} must be one of {choices(vocabulary)}")
            setattr(assignment, key, value)
    if "settings" in body:
        assignment.settings = parse_settings(body["settings"])
    if assignment.late_until and assignment.due_date and assignment.late_until < assignment.due_date:
        raise api_error(400, "late_until must not be before due_date")
    if assignment.late_until and not assignment.due_date:
        raise api_error(400, "late_until needs a due_date")


def submissions_used(db: Any, user_id: int, assignment_ids: list[int]) -> dict[int, int]:
    """Per assignment, how many submissions the user made (withdrawn ones too): one query for a page."""
    if not assignment_ids:
        return {}
    rows = db.execute(
        select(Submission.assignment_id, func.count())
        .where(Submission.user_id == user_id, Submission.assignment_id.in_(assignment_ids))
        .group_by(Submission.assignment_id)
    ).tuples()
    return dict(rows.all())


def extended_deadlines(db: Any, user_id: int, assignments: list[Assignment]) -> dict[int, Deadline]:
    """Per assignment, the student's effective deadline where an extension gives them one: one query."""
    by_id = {a.id: a for a in assignments}
    if not by_id:
        return {}
    rows = db.scalars(
        select(Extension).where(Extension.user_id == user_id, Extension.assignment_id.in_(list(by_id)))
    )
    return {e.assignment_id: deadline_of(by_id[e.assignment_id], e) for e in rows}


def caller_model(handler: APIHandler, assignment: Assignment, staff: bool) -> dict[str, Any]:
    """One assignment as the caller sees it, with the caller's `submissions_used` and, for a student,
    their own deadline (staff see the assignment's)."""
    used = submissions_used(handler.db, handler.me.id, [assignment.id]).get(assignment.id, 0)
    deadline = (
        None if staff else extended_deadlines(handler.db, handler.me.id, [assignment]).get(assignment.id)
    )
    return assignment_model(assignment, staff, used, deadline)


class AssignmentsHandler(APIHandler):
    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture) -> None:
        staff = self.permissions.is_staff(lecture.id)
        offset, limit = self.pagination()
        query = select(Assignment).where(Assignment.lecture_id == lecture.id)
        query = self.permissions.visible_assignments(query, lecture.id)
        total = self.db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = self.db.scalars(
            query.order_by(Assignment.created_at.desc(), Assignment.id.desc()).offset(offset).limit(limit)
        ).all()
        used = submissions_used(self.db, self.me.id, [a.id for a in rows])
        own = {} if staff else extended_deadlines(self.db, self.me.id, list(rows))
        models = [assignment_model(a, staff, used.get(a.id, 0), own.get(a.id)) for a in rows]
        self.write_page(models, total, offset, limit)

    @needs_role(RoleName.INSTRUCTOR)
    def post(self, lecture: Lecture) -> None:
        body = self.json_body()
        check_fields(body, EDITABLE - {"status"} | {"name"})
        name = slug_field(body, "name", "Assignment name")
        assignment = Assignment(lecture_id=lecture.id, name=name, settings={})
        apply_fields(assignment, body)
        self.db.add(assignment)
        try:
            self.db.commit()
        except IntegrityError:
            self.db.rollback()
            raise api_error(409, f"Assignment {name!r} already exists in lecture {lecture.code!r}") from None
        self.write_json(assignment_model(assignment, True), 201)


class AssignmentHandler(APIHandler):
    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        self.write_json(caller_model(self, assignment, self.permissions.is_staff(lecture.id)))

    @needs_role(RoleName.INSTRUCTOR)
    async def patch(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        body = self.json_body()
        check_fields(body, EDITABLE)
        if body.get("kind", assignment.kind) != assignment.kind and assignment.release_commit is not None:
            raise api_error(409, "The kind of a released assignment cannot change")
        # Check the fields on a copy: the release below takes a while, and the session's connection
        # goes back to the pool meanwhile, which commits (so nothing may be changed yet).
        apply_fields(Assignment(due_date=assignment.due_date, late_until=assignment.late_until), body)
        status = member_of(AssignmentStatus, body.get("status", assignment.status))
        if status is None:
            raise api_error(400, f"Field 'status' must be one of {choices(AssignmentStatus)}")
        if status != assignment.status and (assignment.status, status) not in TRANSITIONS:
            raise api_error(409, f"Assignment status cannot change from {assignment.status} to {status}")
        released = None
        if (
            status != assignment.status
            and status == AssignmentStatus.RELEASED
            and assignment.release_commit is None
        ):
            released = await self.release(assignment)
        due_date = assignment.due_date
        apply_fields(assignment, body)
        if assignment.due_date != due_date:
            recompute_assignment_lateness(self.db, assignment)
        if released is not None:
            released.apply_to(assignment)
        assignment.status = status
        self.db.commit()
        self.write_json(caller_model(self, assignment, True))

    async def release(self, assignment: Assignment) -> Released:
        if assignment.source_commit is None:
            raise api_error(409, "Upload the assignment's source files before releasing it")
        self.release_db()  # the conversion takes a while: hold no database connection meanwhile
        try:
            return await release_assignment(
                self.service, assignment.id, assignment.source_commit, assignment.kind
            )
        except ReleaseFailed as e:
            raise api_error(422, str(e)) from None

    @needs_role(RoleName.INSTRUCTOR)
    def delete(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        if self.db.scalar(select(func.count()).where(Submission.assignment_id == assignment.id)):
            raise api_error(
                409, f"Assignment {name!r} has submissions; mark it completed instead of deleting it"
            )
        self.db.delete(assignment)
        self.db.commit()
        self.set_status(204)
        self.finish()


handlers = [
    (r"lectures/([^/]+)/assignments", AssignmentsHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)", AssignmentHandler),
]

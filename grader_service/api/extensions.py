"""Per-student extensions: instructors give a student their own deadline; tutors can read them.

Granting, changing or removing one recomputes `late` of that student's submissions in the same
transaction (`scoring.recompute_lateness`), so their final scores follow at once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..grades import log_change
from ..orm import Assignment, Extension, Lecture, Submission, User, utcnow
from ..scoring import deadline_of, extension_of, recompute_lateness
from ..states import RoleName
from .assignments import parse_datetime
from .base import APIHandler, api_error, isoformat
from .lectures import check_fields
from .params import ID_MAX
from .permissions import needs_role

FIELDS = {"due_date", "late_until", "max_submissions"}


def extension_model(extension: Extension) -> dict[str, Any]:
    return {
        "user": extension.user.name,
        "display_name": extension.user.display_name,
        "assignment": extension.assignment.name,
        "due_date": isoformat(extension.due_date),
        "late_until": isoformat(extension.late_until),
        "max_submissions": extension.max_submissions,
        "created_at": isoformat(extension.created_at),
        "updated_at": isoformat(extension.updated_at),
    }


def deadline_model(extension: Extension) -> dict[str, Any]:
    """An extension's deadline, as the history records it."""
    return {
        "due_date": isoformat(extension.due_date),
        "late_until": isoformat(extension.late_until),
        "max_submissions": extension.max_submissions,
    }


def apply_body(extension: Extension, body: dict[str, Any]) -> None:
    """Validate a PUT body (the whole extension: absent optional fields become null) into `extension`."""
    check_fields(body, FIELDS)
    due = parse_datetime(body, "due_date")
    if due is None:
        raise api_error(400, "Field 'due_date' is required: an ISO 8601 date-time with a time zone")
    late_until = parse_datetime(body, "late_until")
    if late_until is not None and late_until < due:
        raise api_error(400, "Field 'late_until' must not be before 'due_date'")
    limit = body.get("max_submissions")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= ID_MAX
    ):
        raise api_error(400, f"Field 'max_submissions' must be an integer from 1 to {ID_MAX}, or null")
    extension.due_date, extension.late_until, extension.max_submissions = due, late_until, limit


class ExtensionsHandler(APIHandler):
    @needs_role(RoleName.TUTOR)
    def get(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        offset, limit = self.pagination()
        query = select(Extension).join(User, User.id == Extension.user_id)
        query = query.where(Extension.assignment_id == assignment.id)
        total = self.db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = self.db.scalars(query.order_by(User.name).offset(offset).limit(limit)).all()
        self.write_page([extension_model(e) for e in rows], total, offset, limit)


class ExtensionHandler(APIHandler):
    def student(self, lecture: Lecture, name: str) -> User:
        return self.roster_student(
            lecture, name, "extensions are for students (staff are bound by no deadline)"
        )

    @needs_role(RoleName.INSTRUCTOR)
    def put(self, lecture: Lecture, name: str, username: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        body = self.json_body()
        user = self.student(lecture, username)
        extension = extension_of(self.db, assignment.id, user.id)
        created = extension is None
        old = None if extension is None else deadline_model(extension)
        if extension is None:
            extension = Extension(assignment_id=assignment.id, user_id=user.id)
        apply_body(extension, body)
        extension.updated_at = utcnow()
        if created:
            self.db.add(extension)
        self.db.flush()
        self.log_changes(assignment, user.id, old, deadline_model(extension))
        self.commit_with_lateness(assignment, extension, user.id)
        self.db.refresh(extension)
        self.write_json(extension_model(extension), 201 if created else 200)

    @needs_role(RoleName.INSTRUCTOR)
    def delete(self, lecture: Lecture, name: str, username: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        user = self.student(lecture, username)
        extension = extension_of(self.db, assignment.id, user.id)
        if extension is None:
            raise api_error(404, f"User {username!r} has no extension for assignment {name!r}")
        self.log_changes(assignment, user.id, deadline_model(extension), None)
        self.db.delete(extension)
        self.commit_with_lateness(assignment, None, user.id)
        self.set_status(204)
        self.finish()

    def log_changes(
        self, assignment: Assignment, user_id: int, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        """One history row ("extension") per submission of the student's to the assignment, withdrawn
        ones too: the history is a submission's, and each one's lateness follows the change."""
        if old == new:
            return
        ids = self.db.scalars(
            select(Submission.id).where(
                Submission.assignment_id == assignment.id, Submission.user_id == user_id
            )
        )
        for submission_id in ids:
            log_change(self.db, submission_id, self.me, "extension", old, new)

    def commit_with_lateness(self, assignment: Assignment, extension: Extension | None, user_id: int) -> None:
        """Recompute the student's `late` against their new deadline and commit both together."""
        recompute_lateness(self.db, assignment, user_id, deadline_of(assignment, extension))
        try:
            self.db.commit()
        except IntegrityError:  # a concurrent PUT created the same extension first
            self.db.rollback()
            raise api_error(409, "The extension was changed concurrently; send the request again") from None


E = r"lectures/([^/]+)/assignments/([^/]+)/extensions"
handlers = [(E, ExtensionsHandler), (E + r"/([^/]+)", ExtensionHandler)]

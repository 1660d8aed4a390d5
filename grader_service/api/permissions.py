"""Who may do what: the one place where the API decides access.

Roles are per lecture and ordered student < tutor < instructor; a higher role can do
everything a lower one can. Admins can do everything everywhere. A role in one lecture
grants nothing in another. Students see released assignments and only their own
submissions; tutors read everything in their lecture and grade; instructors manage it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from ..orm import Assignment, Lecture, Role, Submission, User
from ..orm.role import role_rank
from .errors import APIError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class Permissions:
    """The caller's roles, loaded once per request."""

    def __init__(self, db: Session, user: User, admin: bool):
        self.user = user
        self.admin = admin
        rows = db.execute(select(Role.lecture_id, Role.role).where(Role.user_id == user.id)).all()
        self.roles: dict[int, str] = {lecture_id: role for lecture_id, role in rows}

    def role_in(self, lecture_id: int) -> str | None:
        return self.roles.get(lecture_id)

    def has(self, lecture_id: int, minimum: str) -> bool:
        return self.admin or role_rank(self.roles.get(lecture_id)) >= role_rank(minimum)

    def require(self, lecture: Lecture, minimum: str) -> None:
        if self.has(lecture.id, minimum):
            return
        have = self.roles.get(lecture.id)
        raise APIError(
            403,
            f"This needs the {minimum} role in lecture {lecture.code!r}; you have "
            + (f"the {have} role" if have else "no role there"),
        )

    def require_admin(self) -> None:
        if not self.admin:
            raise APIError(403, "Only admins can do this")

    def is_staff(self, lecture_id: int) -> bool:
        """Tutors, instructors and admins: they see unreleased assignments and all submissions."""
        return self.has(lecture_id, "tutor")

    def can_see_assignment(self, assignment: Assignment) -> bool:
        if self.is_staff(assignment.lecture_id):
            return True
        return assignment.lecture_id in self.roles and assignment.status != "created"

    def can_see_submission(self, submission: Submission) -> bool:
        if self.is_staff(submission.assignment.lecture_id):
            return True
        return submission.user_id == self.user.id

"""Who may do what, and who sees what: the one place where the API decides access.

Roles are per lecture and ordered student < tutor < instructor; a higher role can do
everything a lower one can. Admins can do everything everywhere. A role in one lecture
grants nothing in another. Students see released assignments and only their own
submissions; tutors read everything in their lecture and grade; instructors manage it.

A lecture (and everything under it) that the caller has no role in is "not found", exactly as
one that does not exist: codes cannot be probed. A role too low for an action is 403.

What a student sees of a grading result is decided by :class:`ResultView` alone, whatever the
representation (submission fields, gradebook, logs, feedback, the event stream): nothing of it
until the result is released, then the gradebook's student view (of every cell from the first
hidden test on only points, status, a built-in exception's name and the instructor's own
message: ``convert.visibility``), no raw log, and hidden-test code never (see ``redact``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..orm import Assignment, Lecture, Role, Submission, User
from ..orm.role import role_rank
from .errors import APIError
from .redact import redact_text, student_gradebook, student_log

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
        """403 for a role too low; for no role at all, 404 as if the lecture did not exist."""
        if self.has(lecture.id, minimum):
            return
        have = self.roles.get(lecture.id)
        if have is None:
            raise lecture_not_found(lecture.code)
        raise APIError(
            403, f"This needs the {minimum} role in lecture {lecture.code!r}; you have the {have} role"
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

    def result_view(self, submission: Submission) -> ResultView:
        """What this caller may see of the submission's grading result (they may see the submission)."""
        return ResultView(
            staff=self.is_staff(submission.assignment.lecture_id),
            assignment=submission.assignment,
            feedback_status=submission.feedback_status,
        )


def lecture_not_found(code: str) -> APIError:
    """The one answer for a lecture that does not exist and one the caller has no role in."""
    return APIError(404, f"Lecture {code!r} not found")


def results_released(feedback_policy: str, feedback_status: str) -> bool:
    """Whether students see a grading result: at once (policy 'immediate') or once released."""
    return feedback_policy == "immediate" or feedback_status == "released"


# Submission fields that are part of the grading result.
RESULT_FIELDS = ("score", "auto_score", "manual_score", "comment")
# Submission fields about the grading machinery (pods, images, retries): staff only.
STAFF_FIELDS = ("status_detail",)


@dataclass(frozen=True)
class ResultView:
    """The visibility rule for one submission's result, applied to each of its representations.

    Staff (tutors, instructors, admins) see everything. The submitting student sees the result
    (scores, the tutor's comment, gradebook, logs, feedback, scores in events) only once it is
    released, with hidden-test code redacted; before that, what is visible is that it was graded.
    The submitted files are the student's own work and always theirs to download.
    """

    staff: bool
    assignment: Assignment
    feedback_status: str

    @property
    def released(self) -> bool:
        return results_released(self.assignment.feedback_policy, self.feedback_status)

    @property
    def visible(self) -> bool:
        return self.staff or self.released

    def require_visible(self, what: str) -> None:
        if not self.visible:
            raise APIError(
                403,
                f"The {what} of this submission has not been released yet: the instructor releases the "
                f"results of assignment {self.assignment.name!r} (its feedback_policy is 'manual')",
            )

    def submission(self, model: dict[str, Any]) -> dict[str, Any]:
        model = dict(model, results_released=self.released)
        if not self.visible:
            model.update(dict.fromkeys(RESULT_FIELDS))
        if not self.staff:
            for key in STAFF_FIELDS:
                model.pop(key, None)
        return model

    def gradebook(self, gradebook: Any) -> Any:
        self.require_visible("gradebook")
        return gradebook if self.staff else student_gradebook(gradebook, self.assignment)

    def logs(self, text: str, failure: str | None = None) -> str:
        """The grading log; a student gets only `failure`, why the latest grading failed (if it did)."""
        self.require_visible("grading log")
        return text if self.staff else student_log(failure, self.assignment)

    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        """A status event as this caller may see it; an event of a new grading carries its feedback_status."""
        if self.staff:
            return event
        status = event.get("feedback_status", self.feedback_status)
        view = ResultView(staff=False, assignment=self.assignment, feedback_status=status)
        visible = {k: v for k, v in event.items() if k not in ("score", "reason", *STAFF_FIELDS)}
        visible["results_released"] = view.released
        if view.released:
            if "score" in event:
                visible["score"] = event["score"]
            if event.get("reason"):
                visible["reason"] = redact_text(event["reason"], self.assignment)
        return visible

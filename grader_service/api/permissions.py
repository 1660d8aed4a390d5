"""Who may do what, and who sees what: the one place where the API decides access.

Roles are per lecture and ordered student < tutor < instructor; a higher role can do
everything a lower one can. Admins can do everything everywhere. A role in one lecture
grants nothing in another. Students see released assignments and only their own
submissions; tutors read everything in their lecture and grade; instructors manage it.

Every handler method declares who may call it at all, with one of the decorators below (in the
manner of JupyterHub's ``@needs_scope``; a test fails for a routed method without one):
``@public``, ``@needs_login``, ``@needs_admin``, ``@needs_scrape_access`` (the metrics), or
``@needs_role(minimum)`` for a URL under
``lectures/<code>/``: it resolves the lecture from the path, loads the caller's roles (once per
request) and hands the method the `Lecture` in place of its code. Finer rules (which rows a
caller sees, whether they may submit, withdraw, download the source, see a result) are
:class:`Permissions` methods, so a handler asks rather than decides.

A lecture (and everything under it) that the caller has no role in is "not found", exactly as
one that does not exist: codes cannot be probed. A role too low for an action is 403.

What a student sees of a grading result is decided by :class:`ResultView` alone, whatever the
representation (submission fields, gradebook, logs, feedback, the event stream): nothing of it
until the result is released, then the gradebook's student view (of every cell from the first
hidden test on only points, status, a built-in exception's name and the instructor's own
message: ``convert.visibility``), no raw log, and hidden-test code never (see ``redact``).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, Final, Literal, ParamSpec, TypeVar

from sqlalchemy import Select, select

from ..auth.base import token_from_header
from ..orm import Assignment, Lecture, Role, Submission, User, utcnow
from ..states import AssignmentStatus, FeedbackPolicy, FeedbackStatus, LectureState, RoleName, role_rank
from .errors import APIError
from .redact import redact_text, student_gradebook, student_log

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .base import APIHandler

# Not a lecture role: `needs_role(ADMIN)` is for admins only, and answers others as `needs_role` does
# (404 to those without a role in the lecture, 403 to its members).
ADMIN: Final = "admin"
Level = Literal["public", "scrape", "login", "admin"] | RoleName
# Levels whose methods are reached without authentication having succeeded (auth_required = False).
UNAUTHENTICATED_LEVELS: Final = ("public", "scrape")
M = TypeVar("M", bound=Callable[..., Any])
H = TypeVar("H", bound="APIHandler")
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Access:
    """A handler method's declaration: who may call it at all."""

    level: Level
    # The method's first path argument is a lecture code, resolved to the `Lecture` it receives.
    lecture: bool = False


def access_of(method: Callable[..., Any]) -> Access | None:
    """The declaration of a handler method (None: undeclared, which the test suite refuses)."""
    return getattr(method, "__access__", None)


def _declare(access: Access, wrapper: M) -> M:
    wrapper.__access__ = access  # type: ignore[attr-defined]  # a function attribute, read by access_of
    return wrapper


def public(method: M) -> M:
    """Anyone, with or without credentials (health, the spec, the login routes)."""
    return _declare(Access("public"), method)


def needs_login(method: Callable[Concatenate[H, P], R]) -> Callable[Concatenate[H, P], R]:
    """Any authenticated caller; what they see is filtered row by row by :class:`Permissions`."""

    @functools.wraps(method)
    def wrapper(self: H, *args: P.args, **kwargs: P.kwargs) -> R:
        self.require_login()
        return method(self, *args, **kwargs)

    return _declare(Access("login"), wrapper)


def needs_admin(method: Callable[Concatenate[H, P], R]) -> Callable[Concatenate[H, P], R]:
    """Admins only, for what belongs to no lecture (creating lectures)."""

    @functools.wraps(method)
    def wrapper(self: H, *args: P.args, **kwargs: P.kwargs) -> R:
        self.require_login()
        self.permissions.require_admin()
        return method(self, *args, **kwargs)

    return _declare(Access("admin"), wrapper)


def scrape_token_matches(presented: str | None, configured: str) -> bool:
    """Whether `presented` is the configured scrape token, compared in constant time; never with none set."""
    if not configured or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), configured.encode())


def needs_scrape_access(method: Callable[Concatenate[H, P], R]) -> Callable[Concatenate[H, P], R]:
    """Admins, or a monitoring system presenting the scrape token an admin configured
    (`c.GraderService.metrics_token`). That token is nobody's login: it opens the metrics and
    nothing else, so a Prometheus server needs no user account. Without valid credentials 401,
    a non-admin user 403."""

    @functools.wraps(method)
    def wrapper(self: H, *args: P.args, **kwargs: P.kwargs) -> R:
        if not scrape_token_matches(token_from_header(self), self.service.metrics_token):
            if self.user is None or self.identity is None:
                raise APIError(
                    401,
                    "Authentication required: send 'Authorization: Bearer <token>' with an admin's token "
                    "or the scrape token (c.GraderService.metrics_token)",
                )
            if not self.permissions.admin:
                raise APIError(
                    403, "Only admins, or the scrape token (c.GraderService.metrics_token), can read metrics"
                )
        return method(self, *args, **kwargs)

    return _declare(Access("scrape"), wrapper)


def needs_role(
    minimum: RoleName | Literal["admin"],
) -> Callable[[Callable[Concatenate[H, Lecture, P], R]], Callable[Concatenate[H, str, P], R]]:
    """At least `minimum` in the lecture whose code is the first path argument (admins hold every role).

    The method receives the `Lecture` in place of the code. No role at all: 404, as for a lecture
    that does not exist; a role too low: 403. `ADMIN`: admins; members get 403, everyone else 404.
    """

    def decorate(method: Callable[Concatenate[H, Lecture, P], R]) -> Callable[Concatenate[H, str, P], R]:
        @functools.wraps(method)
        def wrapper(self: H, code: str, *args: P.args, **kwargs: P.kwargs) -> R:
            self.require_login()
            if minimum == ADMIN:
                lecture = self.lecture_or_404(code, RoleName.STUDENT)
                self.permissions.require_admin()
            else:
                lecture = self.lecture_or_404(code, RoleName(minimum))
            return method(self, lecture, *args, **kwargs)

        level: Level = "admin" if minimum == ADMIN else RoleName(minimum)
        return _declare(Access(level, lecture=True), wrapper)

    return decorate


class Permissions:
    """The caller's roles, loaded once per request, and every rule that depends on them."""

    def __init__(self, db: Session, user: User, admin: bool):
        self.user = user
        self.admin = admin
        rows = db.execute(select(Role.lecture_id, Role.role).where(Role.user_id == user.id)).all()
        self.roles: dict[int, RoleName] = {lecture_id: role for lecture_id, role in rows}

    def role_in(self, lecture_id: int) -> RoleName | None:
        return self.roles.get(lecture_id)

    def has(self, lecture_id: int, minimum: RoleName) -> bool:
        return self.admin or role_rank(self.roles.get(lecture_id)) >= role_rank(minimum)

    def require(self, lecture: Lecture, minimum: RoleName) -> None:
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
        return self.has(lecture_id, RoleName.TUTOR)

    # --- which rows a caller sees -------------------------------------------------------------

    def visible_lectures(self, query: Select[Any]) -> Select[Any]:
        """Admins see every lecture; everyone else the ones they hold a role in."""
        return query if self.admin else query.where(Lecture.id.in_(list(self.roles)))

    def visible_assignments(self, query: Select[Any], lecture_id: int) -> Select[Any]:
        """Students do not see assignments before they are released."""
        if self.is_staff(lecture_id):
            return query
        return query.where(Assignment.status != AssignmentStatus.CREATED)

    def visible_submissions(self, query: Select[Any], lecture_id: int) -> Select[Any]:
        """Students see only their own submissions."""
        return query if self.is_staff(lecture_id) else query.where(Submission.user_id == self.user.id)

    def may_see_assignment(self, assignment: Assignment) -> bool:
        if self.is_staff(assignment.lecture_id):
            return True
        return assignment.lecture_id in self.roles and assignment.status != AssignmentStatus.CREATED

    def may_see_submission(self, submission: Submission) -> bool:
        """Staff see every submission of their lecture; a member of it sees their own."""
        lecture_id = submission.assignment.lecture_id
        if self.is_staff(lecture_id):
            return True
        return lecture_id in self.roles and submission.user_id == self.user.id

    # --- what a caller may do ----------------------------------------------------------------

    def require_submit(self, lecture: Lecture, assignment: Assignment) -> None:
        """403 unless the lecture takes submissions and, for a student, the assignment is released."""
        if lecture.state == LectureState.COMPLETE:
            raise APIError(
                403,
                f"Lecture {lecture.code!r} is complete: it accepts no more submissions "
                "(tutors and instructors can still grade the ones it has)",
            )
        if assignment.status != AssignmentStatus.RELEASED and not self.is_staff(lecture.id):
            raise APIError(
                403, f"Assignment {assignment.name!r} is {assignment.status}; it does not accept submissions"
            )

    def bound_by_limits(self, lecture_id: int) -> bool:
        """Whether the deadline and the attempt limit apply: to students; staff may always submit."""
        return not self.is_staff(lecture_id)

    def require_withdraw(self, submission: Submission, due: datetime | None) -> None:
        """Instructors delete any submission; a student withdraws their own, before the deadline
        (`due`: their effective one, `scoring`)."""
        if self.has(submission.assignment.lecture_id, RoleName.INSTRUCTOR):
            return
        if submission.user_id != self.user.id:
            raise APIError(403, "Only instructors can delete other users' submissions")
        if due is not None and utcnow() > due:
            raise APIError(403, "Submissions can only be withdrawn before the deadline")

    def may_download_source(self, lecture_id: int) -> bool:
        """The source holds solutions and hidden tests: staff only."""
        return self.is_staff(lecture_id)

    def require_download_source(self, lecture_id: int) -> None:
        if not self.may_download_source(lecture_id):
            raise APIError(403, "Only tutors and instructors can download an assignment's source")

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
    return feedback_policy == FeedbackPolicy.IMMEDIATE or feedback_status == FeedbackStatus.RELEASED


# Submission fields that are part of the grading result.
RESULT_FIELDS = ("score", "final_score", "auto_score", "manual_score", "comment")
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

    def gradebook(self, gradebook: Any, due_date: datetime | None = None) -> Any:
        """`due_date`: the submitting student's own (a command assignment's tests may show more after it)."""
        self.require_visible("gradebook")
        return (
            gradebook
            if self.staff
            else student_gradebook(gradebook, self.assignment, self.released, due_date)
        )

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

"""Submissions: students submit and see their own; tutors see all and grade."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import defer, lazyload

from ..grades import log_change
from ..orm import Assignment, Lecture, Submission, User, utcnow
from ..scoring import Deadline, closed, deadline_of, lateness, student_deadline
from ..states import AssignmentKind, ManualStatus, RoleName, choices, member_of
from ..storage import git
from .base import USERNAME_RE, APIHandler, api_error
from .files import UploadMixin, send_zip
from .lectures import check_fields
from .permissions import needs_role
from .serialize import submission_model

# A list shows no gradebook or logs (the gradebook and logs endpoints do): not loading them keeps a
# page of a large course's submissions from parsing a hundred gradebooks. Every row's assignment is the
# one the handler holds already: taken from the session, not joined and parsed again on every row.
LIST_OPTIONS = (
    defer(Submission.gradebook, raiseload=True),
    defer(Submission.logs, raiseload=True),
    lazyload(Submission.assignment),
)


# The values before alembic 0006, still sent by older clients (`grader score set` sent "graded").
LEGACY_MANUAL_STATUS = {"graded": ManualStatus.DONE, "not_graded": ManualStatus.NEEDED}


def check_open(assignment: Assignment, deadline: Deadline) -> tuple[bool, float]:
    """Whether a submission now is late and by how many seconds; 403 once the student's deadline
    (and late window) has passed. `deadline` is the student's own (`scoring`)."""
    now = utcnow()
    if closed(deadline, now):
        assert deadline.closes_at is not None
        raise api_error(
            403,
            f"The deadline for {assignment.name!r} passed at {deadline.closes_at.isoformat()}; "
            "no more submissions are accepted",
        )
    return lateness(deadline, now)


class SubmissionsHandler(UploadMixin, APIHandler):
    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        offset, limit = self.pagination()
        query = select(Submission).where(
            Submission.assignment_id == assignment.id, Submission.deleted_at.is_(None)
        )
        query = self.permissions.visible_submissions(query, lecture.id)
        username = self.get_query_argument("user", None)
        if username is not None and self.permissions.is_staff(lecture.id):
            query = query.join(User, User.id == Submission.user_id).where(User.name == username)
        if self.bool_argument("latest"):
            latest = (
                select(func.max(Submission.id))
                .where(Submission.assignment_id == assignment.id, Submission.deleted_at.is_(None))
                .group_by(Submission.user_id)
            )
            query = query.where(Submission.id.in_(latest))
        total = self.db.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        page = query.order_by(Submission.id.desc()).offset(offset).limit(limit)
        rows = self.db.scalars(page.options(*LIST_OPTIONS)).all()
        self.write_page(
            [submission_model(s, self.permissions.result_view(s)) for s in rows], total, offset, limit
        )

    @needs_role(RoleName.STUDENT)
    async def post(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        self.permissions.require_submit(lecture, assignment)
        if assignment.release_commit is None:
            raise api_error(409, f"Assignment {name!r} has not been released yet")
        owner, deadline, limited = self.submitter(lecture, assignment)
        if limited:
            late, late_seconds = check_open(assignment, deadline)
        elif owner is not self.me:  # on behalf: late as the student's own would be, but never refused
            late, late_seconds = lateness(deadline, utcnow())
        else:
            late, late_seconds = False, 0.0
        filename = self.get_query_argument("filename", None)
        limits = self.upload_limits(assignment.settings.get("allowed_files"), command_submission(assignment))
        repo = self.service.layout.submission_repo(assignment.id, owner.id)
        async with self.extracted_upload(limits, filename) as files, self.service.repo_locks(repo):
            if deadline.max_submissions is not None and limited:
                self.require_attempt_left(assignment, owner, deadline.max_submissions)
            # Git works next: hold no database connection meanwhile. (The count stays true: this user's
            # submissions to this assignment all wait for the repository's lock.)
            self.release_db()
            # Between replicas the lock above does not hold: a lost race commits again (see there).
            message = f"submission by {self.me.name}"
            if owner is not self.me:
                message = f"submission for {owner.name} by {self.me.name}"
            commit, parent = await git.commit_on_branch(repo, files, message)
            # The branch moves first and the row is written after, with no await in between: an open
            # write transaction across an await would hold SQLite's write lock while other coroutines
            # on this event loop wait for it.
            try:
                if deadline.max_submissions is not None and limited:
                    # Again, in the transaction that adds the row, with the student's row locked:
                    # another replica (which the repository lock does not reach) may have taken
                    # the last attempt meanwhile. Refused here, the commit is moved back below.
                    self.require_attempt_left(assignment, owner, deadline.max_submissions, lock=True)
                submission = Submission(
                    assignment_id=assignment.id,
                    user_id=owner.id,
                    commit_hash=commit,
                    late=late,
                    late_seconds=late_seconds,
                    max_score=assignment.max_score,
                )
                self.db.add(submission)
                self.db.flush()
                if owner is not self.me:
                    log_change(self.db, submission.id, self.me, "submitted_on_behalf", None,
                               {"user": owner.name, "commit": commit, "late": late})  # fmt: skip
                self.service.on_submission(self.db, submission)
                self.db.commit()
            except Exception:
                self.db.rollback()
                try:
                    await git.revert_branch(repo, commit, parent)
                except git.GitError as e:
                    # Another replica committed on top meanwhile: the refused commit stays in the
                    # history, with no submission row naming it. The refusal is what the caller gets.
                    self.service.log.warning(
                        "Commit %s of a refused submission stays in %s: %s", commit, repo, e
                    )
                raise
        self.service.jobs_committed()
        self.write_json(submission_model(submission, self.permissions.result_view(submission)), 201)

    def require_attempt_left(
        self, assignment: Assignment, owner: User, limit: int, lock: bool = False
    ) -> None:
        """403 once the student has used `limit` submissions. With `lock`, first lock the student's
        user row (PostgreSQL; SQLite serialises writers anyway) until the transaction ends, so that
        two replicas cannot both take the last attempt."""
        if lock:
            self.db.execute(select(User.id).where(User.id == owner.id).with_for_update())
        # Soft-deleted submissions count too: deleting must not buy extra attempts.
        used = self.db.execute(
            select(func.count()).where(
                Submission.assignment_id == assignment.id, Submission.user_id == owner.id
            )
        ).scalar_one()
        if used >= limit:
            raise api_error(403, f"You have used all {limit} submissions for {assignment.name!r}")

    def submitter(self, lecture: Lecture, assignment: Assignment) -> tuple[User, Deadline, bool]:
        """Whose submission this is, their deadline, and whether it and the attempt limit apply.

        `?user=NAME` (instructors): on behalf of that student, after their deadline too; lateness is
        still judged by it. Students are bound by their own (an extension's, if any); staff
        submitting for themselves by none, and skip the extension lookup.
        """
        on_behalf = self.get_query_argument("user", None)
        if on_behalf is not None:
            self.permissions.require(lecture, RoleName.INSTRUCTOR)
            student = self.roster_student(lecture, on_behalf, "instructors submit on behalf of students only")
            return student, student_deadline(self.db, assignment, student.id), False
        if self.permissions.bound_by_limits(lecture.id):
            return self.me, student_deadline(self.db, assignment, self.me.id), True
        return self.me, deadline_of(assignment, None), False


class SubmissionHandler(APIHandler):
    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission = self.submission_or_404(self.assignment_or_404(lecture, name), submission_id)
        self.write_json(submission_model(submission, self.permissions.result_view(submission)))

    @needs_role(RoleName.TUTOR)
    def patch(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission = self.submission_or_404(self.assignment_or_404(lecture, name), submission_id)
        body = self.json_body()
        check_fields(body, {"manual_score", "comment", "manual_status"})
        before = {"manual_score": submission.manual_score, "manual_status": str(submission.manual_status)}
        if "manual_score" in body:
            score: Any = body["manual_score"]
            if score is not None:
                if isinstance(score, bool) or not isinstance(score, int | float) or score < 0:
                    raise api_error(400, "Field 'manual_score' must be a non-negative number or null")
                if submission.max_score is not None and score > submission.max_score:
                    raise api_error(
                        400, f"manual_score {score} exceeds the maximum of {submission.max_score}"
                    )
                score = float(score)
            submission.manual_score = score
        if "comment" in body:
            comment = body["comment"]
            if comment is not None and (not isinstance(comment, str) or len(comment) > 20000):
                raise api_error(400, "Field 'comment' must be a string of at most 20000 characters, or null")
            submission.comment = comment
        if "manual_status" in body:
            status = member_of(
                ManualStatus, LEGACY_MANUAL_STATUS.get(str(body["manual_status"]), body["manual_status"])
            )
            if status is None:
                raise api_error(400, f"Field 'manual_status' must be one of {choices(ManualStatus)}")
            submission.manual_status = status
        for field, old in before.items():  # the history (grades.py): total override and status
            new = getattr(submission, field)
            if new != old:
                log_change(
                    self.db, submission.id, self.me, field, old, str(new) if field == "manual_status" else new
                )
        self.db.commit()
        self.write_json(submission_model(submission, self.permissions.result_view(submission)))

    @needs_role(RoleName.STUDENT)
    def delete(self, lecture: Lecture, name: str, submission_id: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        submission = self.submission_or_404(assignment, submission_id)
        self.permissions.require_withdraw(
            submission, student_deadline(self.db, assignment, submission.user_id).due_date
        )
        submission.deleted_at = utcnow()
        self.db.commit()
        self.set_status(204)
        self.finish()


class SubmissionFilesHandler(APIHandler):
    @needs_role(RoleName.STUDENT)
    async def get(self, lecture: Lecture, name: str, submission_id: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        submission = self.submission_or_404(assignment, submission_id)
        repo = self.service.layout.submission_repo(assignment.id, submission.user_id)
        await send_zip(self, repo, submission.commit_hash, f"{name}-submission-{submission.id}.zip")


handlers = [
    (r"lectures/([^/]+)/assignments/([^/]+)/submissions", SubmissionsHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)/submissions/([^/]+)", SubmissionHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)/submissions/([^/]+)/files", SubmissionFilesHandler),
]

__all__ = ["USERNAME_RE", "handlers"]


def command_submission(assignment: Assignment) -> dict[str, Any] | None:
    """A command assignment's `submission` rules (grader.yaml's, kept in its skeleton at release)."""
    if assignment.kind != AssignmentKind.COMMAND:
        return None
    return (assignment.gradebook_skeleton or {}).get("submission")

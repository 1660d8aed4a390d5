"""Grading endpoints: regrade, grading runs, gradebook, logs, feedback, the grade table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ..autograding.queue import REGRADE_PRIORITY, enqueue
from ..grades import grades_of
from ..orm import GradingJob, GradingRun, Lecture, Submission, User
from ..scoring import final_score, graded_score, student_deadline
from ..states import (
    PENDING_JOB_STATES,
    FeedbackStatus,
    GradingPolicy,
    JobState,
    RoleName,
    RunScope,
    choices,
    member_of,
)
from ..storage.feedback import FeedbackUnavailable, feedback_pages
from .base import APIHandler, api_error, isoformat
from .csv_export import to_csv
from .grades import grade_model
from .lectures import check_fields
from .params import parse_id
from .permissions import ResultView, needs_role


def job_model(job: GradingJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "submission": job.submission_id,
        "state": job.state,
        "attempts": job.attempts,
        "executor": job.executor,
        "runner": job.runner_name,
        "created_at": isoformat(job.created_at),
        "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
        "error": job.error,
    }


class AutogradeHandler(APIHandler):
    @needs_role(RoleName.TUTOR)
    def post(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission = self.submission_or_404(self.assignment_or_404(lecture, name), submission_id)
        if submission.assignment.source_commit is None:
            raise api_error(409, "The assignment has no source to grade against")
        job = enqueue(self.db, submission)
        self.db.commit()
        self.service.jobs_committed()
        self.write_json(job_model(job), 202)


class GradingRunsHandler(APIHandler):
    @needs_role(RoleName.TUTOR)
    def post(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        body = self.json_body() if self.body else {}
        check_fields(body, {"scope"})
        scope = member_of(RunScope, body.get("scope", RunScope.LATEST))
        if scope is None:
            raise api_error(400, f"Field 'scope' must be one of {choices(RunScope)}")
        if assignment.source_commit is None:
            raise api_error(409, "The assignment has no source to grade against")
        query = select(Submission).where(
            Submission.assignment_id == assignment.id, Submission.deleted_at.is_(None)
        )
        if scope == RunScope.LATEST:
            latest = (
                select(func.max(Submission.id))
                .where(Submission.assignment_id == assignment.id, Submission.deleted_at.is_(None))
                .group_by(Submission.user_id)
            )
            query = query.where(Submission.id.in_(latest))
        run = GradingRun(assignment_id=assignment.id, created_by_id=self.me.id, scope=scope)
        self.db.add(run)
        self.db.flush()
        # Regrades queue behind fresh submissions, so a regrade-all never holds up students.
        for submission in self.db.scalars(query):
            enqueue(self.db, submission, priority=REGRADE_PRIORITY, run_id=run.id)
        self.db.commit()
        self.service.jobs_committed()
        self.write_json(run_model(self.db, run), 201)


class GradingRunHandler(APIHandler):
    @needs_role(RoleName.TUTOR)
    def get(self, lecture: Lecture, name: str, run_id: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        number = parse_id(run_id)
        run = self.db.get(GradingRun, number) if number is not None else None
        if run is None or run.assignment_id != assignment.id:
            raise api_error(404, f"Grading run {run_id} not found")
        self.write_json(run_model(self.db, run))


def run_model(db: Any, run: GradingRun) -> dict[str, Any]:
    counts = dict(
        db.execute(
            select(GradingJob.state, func.count())
            .where(GradingJob.run_id == run.id)
            .group_by(GradingJob.state)
        )
        .tuples()
        .all()
    )
    states = {state.value: counts.get(state, 0) for state in JobState}
    total = sum(states.values())
    return {
        "id": run.id,
        "scope": run.scope,
        "created_at": isoformat(run.created_at),
        "total": total,
        "counts": states,
        "done": not any(states[state] for state in PENDING_JOB_STATES),
    }


class SubmissionDetailHandler(APIHandler):
    """Base for the per-submission grading views: the submission, and what the caller may see of it."""

    def resolve(self, lecture: Lecture, name: str, submission_id: str) -> tuple[Submission, ResultView]:
        submission = self.submission_or_404(self.assignment_or_404(lecture, name), submission_id)
        return submission, self.permissions.result_view(submission)


class GradebookHandler(SubmissionDetailHandler):
    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission, view = self.resolve(lecture, name, submission_id)
        view.require_visible("gradebook")
        if submission.gradebook is None:
            raise api_error(404, f"Submission {submission_id} has not been graded ({submission.auto_status})")
        # A command assignment shows some tests' output after the student's own due date (an extension's).
        due = (
            None
            if view.staff
            else student_deadline(self.db, submission.assignment, submission.user_id).due_date
        )
        self.write_json(view.gradebook(submission.gradebook, due))


class LogsHandler(SubmissionDetailHandler):
    @needs_role(RoleName.STUDENT)
    def get(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission, view = self.resolve(lecture, name, submission_id)
        failure = None
        if not view.staff:
            latest = self.db.execute(
                select(GradingJob.state, GradingJob.error)
                .where(GradingJob.submission_id == submission.id)
                .order_by(GradingJob.id.desc())
                .limit(1)
            ).first()
            if latest is not None and latest.state == JobState.FAILED:
                failure = latest.error or "Grading failed."
        logs = view.logs(submission.logs or "", failure)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(logs)


class FeedbackHandler(SubmissionDetailHandler):
    @needs_role(RoleName.STUDENT)
    async def get(self, lecture: Lecture, name: str, submission_id: str) -> None:
        submission, view = self.resolve(lecture, name, submission_id)
        view.require_visible("feedback")
        if submission.feedback_status == FeedbackStatus.NONE:
            raise api_error(404, f"No feedback for submission {submission_id} yet ({submission.auto_status})")
        results = self.service.layout.results_dir(submission.id)
        grades = {g.grade_id: grade_model(g) for g in grades_of(self.db, submission.id)}
        version = submission.grades_version
        self.db.close()  # rendering may take a moment: hold no database connection meanwhile
        try:
            folder, pages = await feedback_pages(results, submission.id, grades, version)
        except FeedbackUnavailable as e:
            raise api_error(404, f"No feedback for submission {submission_id}: {e}") from None
        wanted = self.get_query_argument("notebook", None)
        if wanted is not None:
            pages = [p for p in pages if p.relative_to(folder).with_suffix(".ipynb").as_posix() == wanted]
        if not pages:
            raise api_error(404, "No feedback page" + (f" for notebook {wanted!r}" if wanted else ""))
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        # The page shows student output: never let it run script in the service's origin.
        self.set_header(
            "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        )
        self.finish(pages[0].read_bytes())


class FeedbackReleaseHandler(APIHandler):
    @needs_role(RoleName.INSTRUCTOR)
    def post(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        rows = self.db.scalars(
            select(Submission).where(
                Submission.assignment_id == assignment.id,
                Submission.feedback_status == FeedbackStatus.GENERATED,
            )
        ).all()
        for submission in rows:
            submission.feedback_status = FeedbackStatus.RELEASED
        self.db.commit()
        self.write_json({"released": len(rows)})


def counts_instead(policy: GradingPolicy, chosen: float | None, later: float | None) -> bool:
    """Whether a later submission (final score `later`) counts instead of the one chosen so far.

    Latest: always. Best: only a strictly higher final score, so the earliest of equals stays; no
    score counts as 0. The per-assignment and the whole-lecture exports both choose with this.
    """
    return policy == GradingPolicy.LATEST or (later or 0) > (chosen or 0)


class ScoresHandler(APIHandler):
    """One row per student: their latest or best submission (per the assignment), scored by `scoring`
    (`score` before, `final_score` after the late penalty) exactly as the submission responses are."""

    columns = (
        "user",
        "display_name",
        "submission",
        "submitted_at",
        "late",
        "late_seconds",
        "auto_status",
        "score",
        "max_score",
        "final_score",
    )

    @needs_role(RoleName.TUTOR)
    def get(self, lecture: Lecture, name: str) -> None:
        assignment = self.assignment_or_404(lecture, name)
        # Plain columns, not Submission objects: a course's every submission, without their gradebooks.
        rows = self.db.execute(
            select(
                User.name, User.display_name, Submission.id, Submission.submitted_at, Submission.late,
                Submission.late_seconds, Submission.auto_status,
                Submission.score, Submission.manual_score, Submission.max_score, Submission.cell_score,
            )
            .join(User, User.id == Submission.user_id)
            .where(Submission.assignment_id == assignment.id, Submission.deleted_at.is_(None))
            .order_by(User.name, Submission.id)
        ).tuples()  # fmt: skip
        chosen: dict[str, dict[str, Any]] = {}
        for (
            user,
            display_name,
            sid,
            submitted_at,
            late,
            late_seconds,
            auto_status,
            auto,
            manual,
            max_score,
            cells,
        ) in rows:
            score = graded_score(auto, manual, cells)
            final = final_score(auto, manual, late, assignment.late_penalty, cells)
            current = chosen.get(user)
            if current is None or counts_instead(assignment.grading_policy, current["final_score"], final):
                chosen[user] = {
                    "user": user, "display_name": display_name, "submission": sid,
                    "submitted_at": isoformat(submitted_at), "late": late, "late_seconds": late_seconds,
                    "auto_status": auto_status, "score": score, "max_score": max_score, "final_score": final,
                }  # fmt: skip
        table = list(chosen.values())
        if self.choice_argument("format", ("json", "csv"), "json") == "csv":
            self.set_header("Content-Type", "text/csv; charset=UTF-8")
            self.set_header("Content-Disposition", f'attachment; filename="{lecture.code}-{name}-scores.csv"')
            self.finish(to_csv(self.columns, table))
            return
        self.write_json(
            {
                "assignment": name,
                "policy": assignment.grading_policy,
                "late_penalty": assignment.late_penalty,
                "items": table,
            }
        )


S = r"lectures/([^/]+)/assignments/([^/]+)/submissions/([^/]+)"
handlers = [
    (S + "/autograde", AutogradeHandler),
    (S + "/gradebook", GradebookHandler),
    (S + "/logs", LogsHandler),
    (S + "/feedback", FeedbackHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)/grading-runs", GradingRunsHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)/grading-runs/([^/]+)", GradingRunHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)/feedback-release", FeedbackReleaseHandler),
    (r"lectures/([^/]+)/assignments/([^/]+)/scores", ScoresHandler),
]

"""The durable grading queue: GradingJob rows and every statement that reads or changes them.

- A submission and its first job are written in one transaction (`enqueue` runs inside it).
- A worker claims the best queued job: lowest priority number first (fresh submissions 0, regrade
  runs 1), then round-robin across users within an assignment (each user's n-th queued job
  before anyone's n+1-th), then oldest. On PostgreSQL the claim uses SELECT ... FOR UPDATE SKIP
  LOCKED, so several replicas can share the queue; on SQLite a compare-and-set UPDATE.
- A claimed job carries a lease that its worker renews while it runs. A job whose lease has
  expired (its process died) is re-queued, up to `max_attempts` claims; then it fails with the
  reason recorded.
- Results are written only if the job is still held by this worker (compare-and-set), so a job
  that was re-queued meanwhile can never be recorded twice.

`JobQueue` is one worker identity's handle on the queue. It needs a session factory, the data
layout (where a job's directory is) and the executor (its name, its per-job settings and runner
names); nothing here waits for grading. Every change of a submission's grading state is announced
in the transaction that makes it (`announce.py`), for the live status streams of every replica.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Result, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..grades import record_grades
from ..orm import Assignment, GradingJob, Lecture, Submission, User, utcnow
from ..states import AutoStatus, FeedbackStatus, JobState
from ..storage.layout import DataLayout
from .announce import announce
from .executor import AutogradeExecutor, GradingOutcome, GradingTask

FRESH_PRIORITY = 0
REGRADE_PRIORITY = 1


def enqueue(
    session: Session, submission: Submission, priority: int = FRESH_PRIORITY, run_id: int | None = None
) -> GradingJob:
    """Add a grading job for the submission to the session's transaction (the caller commits).

    A submission with a job already waiting keeps that one: grading it twice would change nothing.
    """
    waiting = session.scalars(
        select(GradingJob).where(
            GradingJob.submission_id == submission.id, GradingJob.state == JobState.QUEUED
        )
    ).first()
    if waiting is not None:
        waiting.priority = min(waiting.priority, priority)
        waiting.run_id = waiting.run_id or run_id
        return waiting
    return enqueue_new(session, submission, priority, run_id)


def enqueue_new(
    session: Session, submission: Submission, priority: int = FRESH_PRIORITY, run_id: int | None = None
) -> GradingJob:
    """Add the first grading job of a submission created in this transaction (nothing can wait yet:
    the query `enqueue` makes would be one more round trip on the submit path, for nothing)."""
    job = GradingJob(submission_id=submission.id, priority=priority, run_id=run_id, state=JobState.QUEUED)
    session.add(job)
    submission.auto_status = AutoStatus.QUEUED
    announce(session, submission.id, submission.assignment_id)
    return job


# One indexed query: health probes ask for this many times a second while the queue is busiest.
_QUEUE_STATS = select(
    func.count().filter(GradingJob.state == JobState.QUEUED),
    func.min(GradingJob.created_at).filter(GradingJob.state == JobState.QUEUED),
    func.count().filter(GradingJob.state == JobState.RUNNING),
).where(GradingJob.state.in_((JobState.QUEUED, JobState.RUNNING)))


def queue_stats(session: Session) -> dict[str, Any]:
    depth, oldest, running = session.execute(_QUEUE_STATS).one()
    age = (utcnow() - oldest.replace(tzinfo=utcnow().tzinfo)).total_seconds() if oldest else 0.0
    return {"queued": depth, "running": running, "oldest_queued_seconds": round(max(age, 0.0), 3)}


def new_worker_id() -> str:
    """host:pid:random, so that a restarted process can tell its predecessor's jobs from its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_candidates(session: Session, limit: int = 16) -> list[int]:
    """The best queued jobs, in claim order.

    A job's turn is its place among its user's queued jobs for the assignment plus the jobs of
    that user already running: a student whose burst is being graded waits behind everyone
    else's first submission, however early the burst arrived.
    """
    running = (
        select(Submission.assignment_id, Submission.user_id, func.count().label("n"))
        .join(GradingJob, GradingJob.submission_id == Submission.id)
        .where(GradingJob.state == JobState.RUNNING)
        .group_by(Submission.assignment_id, Submission.user_id)
        .subquery()
    )
    turn = (
        func.row_number()
        .over(partition_by=(Submission.assignment_id, Submission.user_id), order_by=GradingJob.id)
        .label("turn")
    )
    ranked = (
        select(GradingJob.id, GradingJob.priority, (turn + func.coalesce(running.c.n, 0)).label("turn"))
        .join(Submission, Submission.id == GradingJob.submission_id)
        .outerjoin(
            running,
            (running.c.assignment_id == Submission.assignment_id) & (running.c.user_id == Submission.user_id),
        )
        .where(GradingJob.state == JobState.QUEUED)
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.id).order_by(ranked.c.priority, ranked.c.turn, ranked.c.id).limit(limit)
    ).all()
    return [row[0] for row in rows]


def _rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE matched (`Session.execute` is typed as returning a `Result`; for an UPDATE
    it is a `CursorResult`)."""
    assert isinstance(result, CursorResult)
    return result.rowcount


@dataclass(frozen=True)
class Recorded:
    """What `JobQueue.record` wrote: the submission as committed, and whether the job waits for a retry."""

    submission: Submission
    retry: bool


class JobQueue:
    """Enqueue, claim, renew, record and re-queue grading jobs, as worker `worker_id`."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        layout: DataLayout,
        executor: AutogradeExecutor,
        *,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        log: logging.Logger | None = None,
    ):
        self.session_factory = session_factory
        self.layout = layout
        self.executor = executor
        self.worker_id = worker_id or new_worker_id()
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.log = log or logging.getLogger(__name__)
        bind = session_factory.kw["bind"]
        self.is_postgres = bind.dialect.name == "postgresql"

    # --- claiming ---------------------------------------------------------------------------------

    def claim(self) -> GradingTask | None:
        """Take the best queued job: mark it and its submission running, as ours; its task.

        One transaction, one commit: the claim, everything the worker needs to know about the job,
        and the submission's new status.
        """
        with self.session_factory() as session:
            job_id = self._claim_in(session)
            if job_id is None:
                return None  # closing the session rolls back whatever the attempt began
            task = self._task_of(session, job_id)
            assert task is not None  # just claimed, in this transaction
            session.execute(
                update(Submission)
                .where(Submission.id == task.submission_id)
                .values(auto_status=AutoStatus.RUNNING, status_detail=None)
            )
            session.execute(
                update(GradingJob)
                .where(GradingJob.id == job_id)
                .values(runner_name=self.executor.runner_name(task))
            )
            announce(session, task.submission_id, task.assignment_id)
            session.commit()
        return task

    def _claim_in(self, session: Session) -> int | None:
        """Mark the best queued job as ours, uncommitted; its id."""
        candidates = claim_candidates(session)
        if not candidates:
            return None
        values = dict(
            state=JobState.RUNNING,
            worker=self.worker_id,
            lease_expires_at=self._lease_end(),
            started_at=utcnow(),
            attempts=GradingJob.attempts + 1,
            executor=self.executor.name,
        )
        if self.is_postgres:
            locked = session.scalars(
                select(GradingJob.id)
                .where(GradingJob.id.in_(candidates), GradingJob.state == JobState.QUEUED)
                .with_for_update(skip_locked=True)
            ).all()
            if not locked:
                return None
            job_id = min(locked, key=candidates.index)
            session.execute(update(GradingJob).where(GradingJob.id == job_id).values(**values))
            return job_id
        for job_id in candidates:
            result = session.execute(
                update(GradingJob)
                .where(GradingJob.id == job_id, GradingJob.state == JobState.QUEUED)
                .values(**values)
            )
            if _rowcount(result) == 1:
                return job_id
        return None

    def load_task(self, job_id: int) -> GradingTask | None:
        with self.session_factory() as session:
            return self._task_of(session, job_id)

    def _task_of(self, session: Session, job_id: int) -> GradingTask | None:
        row = session.execute(
            select(GradingJob, Submission, Assignment, Lecture, User)
            .join(Submission, Submission.id == GradingJob.submission_id)
            .join(Assignment, Assignment.id == Submission.assignment_id)
            .join(Lecture, Lecture.id == Assignment.lecture_id)
            .join(User, User.id == Submission.user_id)
            .where(GradingJob.id == job_id)
        ).one_or_none()
        if row is None:
            return None
        job, submission, assignment, lecture, user = row
        return GradingTask(
            job_id=job.id,
            submission_id=submission.id,
            commit_hash=submission.commit_hash,
            lecture=lecture.code,
            assignment=assignment.name,
            user=user.name,
            job_dir=self.layout.job_dir(job.id),
            queued_at=job.created_at.timestamp(),
            limits=self.executor.job_limits(assignment.settings),
            assignment_id=assignment.id,
            user_id=user.id,
            source_commit=assignment.source_commit or "",
            kind=assignment.kind,
        )

    # --- while a job runs -------------------------------------------------------------------------

    def _lease_end(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_seconds)

    def renew_lease(self, job_id: int) -> None:
        """The heartbeat's write: the job stays ours for another `lease_seconds`."""
        with self.session_factory() as session:
            session.execute(
                update(GradingJob)
                .where(GradingJob.id == job_id, GradingJob.worker == self.worker_id)
                .values(lease_expires_at=self._lease_end())
            )
            session.commit()

    def record_status(self, task: GradingTask, detail: str | None) -> bool:
        """Store why a running job waits as its submission's status detail, if the job is still ours."""
        held = (
            select(GradingJob.id)
            .where(
                GradingJob.id == task.job_id,
                GradingJob.worker == self.worker_id,
                GradingJob.state == JobState.RUNNING,
            )
            .exists()
        )
        with self.session_factory() as session:
            result = session.execute(
                update(Submission)
                .where(Submission.id == task.submission_id, held)
                .values(status_detail=detail)
            )
            if _rowcount(result):
                announce(session, task.submission_id, task.assignment_id)
            session.commit()
        return bool(_rowcount(result))

    # --- results ----------------------------------------------------------------------------------

    def record(self, task: GradingTask, outcome: GradingOutcome) -> Recorded | None:
        """Write the outcome if the job is still ours; re-queue it if it failed and may be retried.

        None when the job was taken from this worker meanwhile: its result is discarded.
        """
        with self.session_factory() as session:
            job = session.get(GradingJob, task.job_id)
            if job is None or job.worker != self.worker_id or job.state != JobState.RUNNING:
                return None
            submission = job.submission
            retry = not outcome.graded and outcome.retryable and job.attempts < self.max_attempts
            if retry:
                job.state, job.worker, job.lease_expires_at = JobState.QUEUED, None, None
                job.error = outcome.reason
                submission.auto_status = AutoStatus.QUEUED
                submission.status_detail = f"Attempt {job.attempts} of {self.max_attempts} failed, queued to try again: {outcome.reason}"
            else:
                job.state = JobState.SUCCEEDED if outcome.graded else JobState.FAILED
                job.finished_at, job.lease_expires_at = utcnow(), None
                job.exit_reason = "graded" if outcome.graded else "failed"
                job.runner_seconds = outcome.runner_seconds
                job.error = outcome.reason
                if not self._newer_job_exists(session, job):
                    apply_outcome(submission, outcome)
                    if outcome.graded and outcome.gradebook is not None:
                        record_grades(session, submission, outcome.gradebook)
            announce(session, submission.id, submission.assignment_id)
            session.commit()
        return Recorded(submission, retry)

    @staticmethod
    def _newer_job_exists(session: Session, job: GradingJob) -> bool:
        """An older job finishing after a newer one was queued must not overwrite its result."""
        newer = session.scalar(
            select(func.count()).where(
                GradingJob.submission_id == job.submission_id,
                GradingJob.id > job.id,
                GradingJob.state.in_((JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)),
            )
        )
        return bool(newer)

    # --- crash safety -----------------------------------------------------------------------------

    def requeue_expired(self) -> int:
        """Jobs whose worker stopped renewing the lease go back to the queue (or fail for good)."""
        now = utcnow()
        with self.session_factory() as session:
            jobs = session.scalars(
                select(GradingJob).where(
                    GradingJob.state == JobState.RUNNING, GradingJob.lease_expires_at < now
                )
            ).all()
            for job in jobs:
                self._requeue_or_fail(session, job, f"worker {job.worker} stopped renewing its lease")
            session.commit()
            return len(jobs)

    def requeue_held(self, job_id: int, why: str) -> None:
        """Re-queue (or fail, at max_attempts) a job this worker holds; a job no longer ours is left alone."""
        with self.session_factory() as session:
            job = session.get(GradingJob, job_id)
            if job is not None and job.worker == self.worker_id and job.state == JobState.RUNNING:
                self._requeue_or_fail(session, job, why)
            session.commit()

    def _requeue_or_fail(self, session: Session, job: GradingJob, why: str) -> None:
        submission = job.submission
        announce(session, submission.id, submission.assignment_id)
        if job.attempts >= self.max_attempts:
            job.state, job.finished_at, job.exit_reason = JobState.FAILED, utcnow(), "attempts"
            job.error = f"Gave up after {job.attempts} attempts; last: {why}"
            submission.auto_status = AutoStatus.FAILED
            submission.logs = submission.status_detail = job.error
        else:
            job.state, job.worker, job.lease_expires_at, job.error = JobState.QUEUED, None, None, why
            submission.auto_status = AutoStatus.QUEUED
            submission.status_detail = (
                f"Attempt {job.attempts} of {self.max_attempts} stopped, queued again: {why}"
            )
        self.log.warning(
            "Grading job %d %s: %s", job.id, "failed" if job.state == JobState.FAILED else "re-queued", why
        )

    def release_held(self) -> None:
        """On shutdown: this worker's running jobs go back to the queue without using up an attempt."""
        with self.session_factory() as session:
            held = session.scalars(
                select(GradingJob).where(
                    GradingJob.worker == self.worker_id, GradingJob.state == JobState.RUNNING
                )
            ).all()
            for job in held:
                job.state, job.worker, job.lease_expires_at = JobState.QUEUED, None, None
                job.attempts -= 1
                submission = job.submission
                submission.auto_status = AutoStatus.QUEUED
                submission.status_detail = "Queued again: the service grading it stopped"
                announce(session, submission.id, submission.assignment_id)
            session.commit()

    def take_over_stale(
        self, is_dead: Callable[[str | None], bool]
    ) -> tuple[list[tuple[int, str | None]], set[int]]:
        """On start: hold every running job whose lease expired or whose worker `is_dead`, with a fresh lease.

        Returns those jobs as (id, runner name), for the executor to adopt, and the ids of all
        running jobs, whose processes or pods must be kept.
        """
        with self.session_factory() as session:
            running = session.scalars(select(GradingJob).where(GradingJob.state == JobState.RUNNING)).all()
            now = utcnow()
            stale = [
                job
                for job in running
                if (job.lease_expires_at is not None and job.lease_expires_at < now) or is_dead(job.worker)
            ]
            for job in stale:
                job.worker = self.worker_id
                job.lease_expires_at = self._lease_end()
            taken = [(job.id, job.runner_name) for job in stale]
            live = {job.id for job in running}
            session.commit()
        return taken, live

    def current_sources(self) -> set[tuple[int, str]]:
        """(assignment id, commit) of every assignment's current source: what the source cache keeps."""
        with self.session_factory() as session:
            rows = session.execute(
                select(Assignment.id, Assignment.source_commit).where(Assignment.source_commit.is_not(None))
            )
            return {(assignment_id, commit) for assignment_id, commit in rows if commit is not None}


def apply_outcome(submission: Submission, outcome: GradingOutcome) -> None:
    """The submission's status, score, gradebook and logs from a final grading outcome."""
    submission.logs = outcome.logs
    submission.status_detail = None if outcome.graded else outcome.reason
    if outcome.graded and outcome.gradebook is not None:
        submission.auto_status = AutoStatus.GRADED
        submission.gradebook = outcome.gradebook
        submission.score = float(outcome.gradebook.get("score", 0.0))
        submission.max_score = float(outcome.gradebook.get("max_score", submission.max_score or 0.0))
        submission.feedback_status = FeedbackStatus.GENERATED if outcome.feedback else FeedbackStatus.NONE
    else:
        submission.auto_status = AutoStatus.FAILED
        submission.logs = f"{outcome.reason}\n\n{outcome.logs}" if outcome.reason else outcome.logs


__all__ = [
    "FRESH_PRIORITY",
    "REGRADE_PRIORITY",
    "JobQueue",
    "Recorded",
    "claim_candidates",
    "enqueue",
    "enqueue_new",
    "new_worker_id",
    "queue_stats",
]

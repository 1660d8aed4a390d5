"""The durable grading queue: GradingJob rows, claimed by N workers, crash-safe.

- A submission and its first job are written in one transaction (`enqueue` runs inside it).
- Workers claim the best queued job: lowest priority number first (fresh submissions 0, regrade
  runs 1), then round-robin across users within an assignment (each user's n-th queued job
  before anyone's n+1-th), then oldest. On PostgreSQL the claim uses SELECT ... FOR UPDATE SKIP
  LOCKED, so several replicas can share the queue; on SQLite a compare-and-set UPDATE.
- A claimed job carries a lease that its worker renews while it runs. A job whose lease has
  expired (its process died) is re-queued, up to `max_attempts` claims; then it fails with the
  reason recorded. On start, running jobs are reconciled with the executor: adopted or re-queued.
- Results are written only if the job is still held by this worker (compare-and-set), so a job
  that was re-queued meanwhile can never be recorded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from traitlets import Bool, Float, Integer
from traitlets.config import LoggingConfigurable

from ..orm import Assignment, GradingJob, Lecture, Submission, User, utcnow
from ..storage import git
from .events import EventBus
from .executor import AutogradeExecutor, GradingOutcome, GradingTask

if TYPE_CHECKING:
    from ..app import GraderService

FRESH_PRIORITY = 0
REGRADE_PRIORITY = 1
FINAL_STATES = ("succeeded", "failed", "cancelled")


def enqueue(
    session: Session, submission: Submission, priority: int = FRESH_PRIORITY, run_id: int | None = None
) -> GradingJob:
    """Add a grading job for the submission to the session's transaction (the caller commits).

    A submission with a job already waiting keeps that one: grading it twice would change nothing.
    """
    waiting = session.scalars(
        select(GradingJob).where(GradingJob.submission_id == submission.id, GradingJob.state == "queued")
    ).first()
    if waiting is not None:
        waiting.priority = min(waiting.priority, priority)
        waiting.run_id = waiting.run_id or run_id
        return waiting
    job = GradingJob(submission_id=submission.id, priority=priority, run_id=run_id, state="queued")
    session.add(job)
    submission.auto_status = "queued"
    return job


# One indexed query: health probes ask for this many times a second while the queue is busiest.
_QUEUE_STATS = select(
    func.count().filter(GradingJob.state == "queued"),
    func.min(GradingJob.created_at).filter(GradingJob.state == "queued"),
    func.count().filter(GradingJob.state == "running"),
).where(GradingJob.state.in_(("queued", "running")))


def queue_stats(session: Session) -> dict[str, Any]:
    depth, oldest, running = session.execute(_QUEUE_STATS).one()
    age = (utcnow() - oldest.replace(tzinfo=utcnow().tzinfo)).total_seconds() if oldest else 0.0
    return {"queued": depth, "running": running, "oldest_queued_seconds": round(max(age, 0.0), 3)}


class Scheduler(LoggingConfigurable):
    """Claims queued jobs and runs them on the executor with `concurrency` workers."""

    concurrency = Integer(
        0, help="Jobs graded at once by this service process; 0 means one per CPU (os.cpu_count())."
    ).tag(config=True)
    lease_seconds = Float(
        30.0,
        help="A running job's claim expires this long after its worker's last heartbeat; then it is re-queued.",
    ).tag(config=True)
    max_attempts = Integer(3, help="Claims a job gets before it fails for good.").tag(config=True)
    poll_interval = Float(
        1.0,
        help="Seconds between looks for jobs queued by other replicas (local submissions wake workers at once).",
    ).tag(config=True)
    max_queue_length = Integer(
        5000,
        help="Above this many queued jobs, health reports the queue as backlogged. Submissions are always "
        "accepted and stored; grading just waits.",
    ).tag(config=True)
    keep_job_dirs = Bool(False, help="Keep job directories after grading (for debugging).").tag(config=True)

    @property
    def workers(self) -> int:
        return self.concurrency or os.cpu_count() or 1

    def __init__(self, service: GraderService, executor: AutogradeExecutor, events: EventBus, **kwargs: Any):
        super().__init__(**kwargs)
        self.service = service
        self.executor = executor
        self.events = events
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self.is_postgres = service.engine.dialect.name == "postgresql"
        executor.status_listener = self.record_status

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile, then start the workers, unless the executor refuses to grade here: then
        nothing is claimed and every queued job waits (the queue's upkeep still runs)."""
        await asyncio.to_thread(self._prune_source_cache)
        adoptions = await self.reconcile()
        workers = 0 if self.executor.refused is not None else self.workers
        self._tasks = [
            asyncio.create_task(self._worker(i), name=f"grader-worker-{i}") for i in range(workers)
        ]
        self._tasks.append(asyncio.create_task(self._reaper(), name="grader-reaper"))
        self._tasks.extend(adoptions)
        self.log.info(
            "Scheduler %s: %d worker(s), executor %s, sandbox %s",
            self.worker_id,
            workers,
            self.executor.name,
            self.executor.sandbox,
        )

    async def stop(self) -> None:
        """Stop claiming; jobs in progress are handed back to the queue without using up an attempt."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.executor.stop()
        with self.service.session_factory() as session:
            session.execute(
                update(GradingJob)
                .where(GradingJob.worker == self.worker_id, GradingJob.state == "running")
                .values(state="queued", worker=None, lease_expires_at=None, attempts=GradingJob.attempts - 1)
            )
            session.commit()

    def wake(self) -> None:
        self._wake.set()

    # --- claiming ---------------------------------------------------------------------------------

    def _candidates(self, session: Session, limit: int = 16) -> list[int]:
        """The best queued jobs, in claim order.

        A job's turn is its place among its user's queued jobs for the assignment plus the jobs of
        that user already running: a student whose burst is being graded waits behind everyone
        else's first submission, however early the burst arrived.
        """
        running = (
            select(Submission.assignment_id, Submission.user_id, func.count().label("n"))
            .join(GradingJob, GradingJob.submission_id == Submission.id)
            .where(GradingJob.state == "running")
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
                (running.c.assignment_id == Submission.assignment_id)
                & (running.c.user_id == Submission.user_id),
            )
            .where(GradingJob.state == "queued")
            .subquery()
        )
        rows = session.execute(
            select(ranked.c.id).order_by(ranked.c.priority, ranked.c.turn, ranked.c.id).limit(limit)
        ).all()
        return [row[0] for row in rows]

    def claim(self) -> GradingTask | None:
        """Take the best queued job: mark it and its submission running, as ours; its task.

        One transaction, one commit: the claim, everything the worker needs to know about the job,
        and the submission's new status.
        """
        with self.service.session_factory() as session:
            job_id = self._claim_in(session)
            if job_id is None:
                return None  # closing the session rolls back whatever the attempt began
            task = self._task_of(session, job_id)
            assert task is not None  # just claimed, in this transaction
            session.execute(
                update(Submission)
                .where(Submission.id == task.submission_id)
                .values(auto_status="running", status_detail=None)
            )
            session.execute(
                update(GradingJob)
                .where(GradingJob.id == job_id)
                .values(runner_name=self.executor.runner_name(task))
            )
            session.commit()
        self.events.publish(
            task.submission_id,
            task.settings["assignment_id"],
            {"submission": task.submission_id, "auto_status": "running", "job": task.job_id},
        )
        return task

    def _claim_in(self, session: Session) -> int | None:
        """Mark the best queued job as ours, uncommitted; its id."""
        candidates = self._candidates(session)
        if not candidates:
            return None
        lease = utcnow() + timedelta(seconds=self.lease_seconds)
        values = dict(
            state="running",
            worker=self.worker_id,
            lease_expires_at=lease,
            started_at=utcnow(),
            attempts=GradingJob.attempts + 1,
            executor=self.executor.name,
        )
        if self.is_postgres:
            locked = session.scalars(
                select(GradingJob.id)
                .where(GradingJob.id.in_(candidates), GradingJob.state == "queued")
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
                .where(GradingJob.id == job_id, GradingJob.state == "queued")
                .values(**values)
            )
            if result.rowcount == 1:
                return job_id
        return None

    # --- workers ----------------------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        while not self._stopping:
            try:
                task = self.claim()
            except Exception:
                self.log.exception("Claiming a grading job failed")
                task = None
            if task is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                continue
            self._wake.set()  # there may be more: let an idle sibling look too
            await self._process(task)

    async def _process(self, task: GradingTask) -> None:
        job_id = task.job_id
        heartbeat = asyncio.create_task(self._heartbeat(job_id))
        try:
            await self._stage(task)
            outcome = await self.executor.run(task)
            if outcome.graded:
                outcome = await self._keep_output(task, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.exception("Grading job %d failed in the service", job_id)
            outcome = GradingOutcome(False, reason=f"Internal error while grading: {e}", retryable=True)
        finally:
            heartbeat.cancel()
        self._record(task, outcome)
        if not self.keep_job_dirs:
            await asyncio.to_thread(shutil.rmtree, task.job_dir, True)

    def _load_task(self, job_id: int) -> GradingTask | None:
        with self.service.session_factory() as session:
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
            job_dir=self.service.layout.job_dir(job.id),
            settings={
                **self.executor.effective_settings(assignment.settings),
                "assignment_id": assignment.id,
                "user_id": user.id,
                "source_commit": assignment.source_commit,
            },
        )

    async def _stage(self, task: GradingTask) -> None:
        """`<job>/submission` from the submission's commit and `<job>/source` from the assignment's."""
        layout = self.service.layout
        assignment_id = task.settings["assignment_id"]
        source = await self._cached_source(assignment_id, task.settings["source_commit"])
        await asyncio.to_thread(_prepare_job_dir, task.job_dir, source)
        await git.export(
            layout.submission_repo(assignment_id, task.settings["user_id"]),
            task.commit_hash,
            task.job_dir / "submission",
        )
        await asyncio.to_thread(_open_to_sandbox, task.job_dir)

    def _prune_source_cache(self) -> None:
        """Drop cached sources that are no longer any assignment's current source."""
        cache_dir = self.service.layout.source_cache_dir()
        if not cache_dir.is_dir():
            return
        with self.service.session_factory() as session:
            current = {
                self.service.layout.source_cache(assignment_id, commit).name
                for assignment_id, commit in session.execute(
                    select(Assignment.id, Assignment.source_commit).where(
                        Assignment.source_commit.is_not(None)
                    )
                )
            }
        for entry in cache_dir.iterdir():
            if entry.name not in current:
                shutil.rmtree(entry, ignore_errors=True)

    async def _cached_source(self, assignment_id: int, commit: str) -> Path:
        """The source files at `commit`, exported from git once (every job of an assignment needs them)."""
        cache = self.service.layout.source_cache(assignment_id, commit)
        if cache.is_dir():
            return cache
        staging = cache.with_name(f"{cache.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        try:
            await git.export(self.service.layout.source_repo(assignment_id), commit, staging)
            try:
                staging.rename(cache)
            except OSError:
                if not cache.is_dir():
                    raise
                # Another worker was quicker: its copy is the same.
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        return cache

    async def _keep_output(self, task: GradingTask, outcome: GradingOutcome) -> GradingOutcome:
        """Keep the graded notebooks for feedback, which is rendered when first asked for.

        Rendering HTML costs as much as grading a small notebook; most feedback is read once or
        never, so it stays off the grading path.
        """
        results = self.service.layout.results_dir(task.submission_id)
        staging = results.with_name(f"{results.name}.job-{task.job_id}")
        await asyncio.to_thread(shutil.rmtree, staging, True)
        staging.mkdir(parents=True)
        (task.job_dir / "output").rename(staging / "output")
        await asyncio.to_thread(shutil.rmtree, results, True)
        staging.rename(results)
        outcome.feedback = True
        return outcome

    def _record(self, task: GradingTask, outcome: GradingOutcome) -> None:
        """Write the outcome if the job is still ours; decide on a retry if it failed."""
        now = utcnow()
        with self.service.session_factory() as session:
            job = session.get(GradingJob, task.job_id)
            if job is None or job.worker != self.worker_id or job.state != "running":
                self.log.warning("Job %d was taken from this worker; its result is discarded", task.job_id)
                return
            submission = session.get(Submission, task.submission_id)
            retry = not outcome.graded and outcome.retryable and job.attempts < self.max_attempts
            if retry:
                job.state, job.worker, job.lease_expires_at = "queued", None, None
                job.error = outcome.reason
                submission.auto_status = "queued"
                submission.status_detail = f"Attempt {job.attempts} of {self.max_attempts} failed, queued to try again: {outcome.reason}"
            else:
                job.state = "succeeded" if outcome.graded else "failed"
                job.finished_at, job.lease_expires_at = now, None
                job.exit_reason = "graded" if outcome.graded else "failed"
                job.runner_seconds = outcome.runner_seconds
                job.error = outcome.reason
                # An older job finishing after a newer one was queued must not overwrite its result.
                newer = session.scalar(
                    select(func.count()).where(
                        GradingJob.submission_id == submission.id,
                        GradingJob.id > job.id,
                        GradingJob.state.in_(("queued", "running", "succeeded")),
                    )
                )
                if not newer:
                    self._apply(submission, outcome)
            session.commit()
            state = submission.auto_status
        event = {"submission": task.submission_id, "auto_status": state, "job": task.job_id}
        if submission.status_detail:
            event["status_detail"] = submission.status_detail
        if state == "graded":
            event.update(
                score=submission.score,
                max_score=submission.max_score,
                feedback_status=submission.feedback_status,
            )
        elif state == "failed":
            event["reason"] = outcome.reason
        self.events.publish(task.submission_id, task.settings["assignment_id"], event)
        if retry:
            self.wake()

    def record_status(self, task: GradingTask, detail: str | None) -> None:
        """The executor's word on why a running job waits: the submission's status detail, and an event."""
        held = (
            select(GradingJob.id)
            .where(
                GradingJob.id == task.job_id,
                GradingJob.worker == self.worker_id,
                GradingJob.state == "running",
            )
            .exists()
        )
        with self.service.session_factory() as session:
            result = session.execute(
                update(Submission)
                .where(Submission.id == task.submission_id, held)
                .values(status_detail=detail)
            )
            session.commit()
        if result.rowcount:
            self.events.publish(
                task.submission_id,
                task.settings["assignment_id"],
                {
                    "submission": task.submission_id,
                    "auto_status": "running",
                    "job": task.job_id,
                    "status_detail": detail,
                },
            )

    @staticmethod
    def _apply(submission: Submission, outcome: GradingOutcome) -> None:
        submission.logs = outcome.logs
        submission.status_detail = None if outcome.graded else outcome.reason
        if outcome.graded and outcome.gradebook is not None:
            submission.auto_status = "graded"
            submission.gradebook = outcome.gradebook
            submission.score = float(outcome.gradebook.get("score", 0.0))
            submission.max_score = float(outcome.gradebook.get("max_score", submission.max_score or 0.0))
            submission.feedback_status = "generated" if outcome.feedback else "none"
        else:
            submission.auto_status = "failed"
            submission.logs = f"{outcome.reason}\n\n{outcome.logs}" if outcome.reason else outcome.logs

    # --- crash safety -----------------------------------------------------------------------------

    async def _heartbeat(self, job_id: int) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            with self.service.session_factory() as session:
                session.execute(
                    update(GradingJob)
                    .where(GradingJob.id == job_id, GradingJob.worker == self.worker_id)
                    .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_seconds))
                )
                session.commit()

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease_seconds / 3, 0.5))
            try:
                if self.requeue_expired():
                    self.wake()
            except Exception:
                self.log.exception("Re-queueing expired grading jobs failed")

    def requeue_expired(self) -> int:
        """Jobs whose worker stopped renewing the lease go back to the queue (or fail for good)."""
        now = utcnow()
        with self.service.session_factory() as session:
            jobs = session.scalars(
                select(GradingJob).where(GradingJob.state == "running", GradingJob.lease_expires_at < now)
            ).all()
            for job in jobs:
                self._requeue_or_fail(session, job, f"worker {job.worker} stopped renewing its lease")
            session.commit()
            return len(jobs)

    def _requeue_or_fail(self, session: Session, job: GradingJob, why: str) -> None:
        submission = session.get(Submission, job.submission_id)
        if job.attempts >= self.max_attempts:
            job.state, job.finished_at, job.exit_reason = "failed", utcnow(), "attempts"
            job.error = f"Gave up after {job.attempts} attempts; last: {why}"
            submission.auto_status = "failed"
            submission.logs = submission.status_detail = job.error
        else:
            job.state, job.worker, job.lease_expires_at, job.error = "queued", None, None, why
            submission.auto_status = "queued"
            submission.status_detail = (
                f"Attempt {job.attempts} of {self.max_attempts} stopped, queued again: {why}"
            )
        self.log.warning(
            "Grading job %d %s: %s", job.id, "failed" if job.state == "failed" else "re-queued", why
        )

    def _worker_is_dead(self, worker: str | None) -> bool:
        """A worker of this host whose process is gone (the service restarted): no need to wait out its lease."""
        host, _, rest = (worker or "").partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return worker != self.worker_id
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    async def reconcile(self) -> list[asyncio.Task[None]]:
        """On start: running jobs of dead workers are adopted by the executor or re-queued.

        Each stale job is taken over at once (this worker, a fresh lease), then adopted in the
        background: its pod may run for minutes more, and the service must not wait for that
        before it serves. Then the executor removes what belongs to no running job.
        """
        with self.service.session_factory() as session:
            running = session.scalars(select(GradingJob).where(GradingJob.state == "running")).all()
            now = utcnow()
            stale = [
                j
                for j in running
                if (j.lease_expires_at is not None and j.lease_expires_at < now)
                or self._worker_is_dead(j.worker)
            ]
            for job in stale:
                job.worker = self.worker_id
                job.lease_expires_at = now + timedelta(seconds=self.lease_seconds)
            stale_ids = [(j.id, j.runner_name) for j in stale]
            live = {j.id for j in running}
            session.commit()
        adoptions = [
            asyncio.create_task(self._adopt(job_id, runner_name), name=f"grader-adopt-{job_id}")
            for job_id, runner_name in stale_ids
        ]
        try:
            await self.executor.cleanup_orphans(live)
        except Exception:
            self.log.exception("Cleaning up after jobs that no longer run failed")
        return adoptions

    async def _adopt(self, job_id: int, runner_name: str | None) -> None:
        """Let the executor finish a job a previous process started; re-queue it if it cannot."""
        task = self._load_task(job_id)
        heartbeat = asyncio.create_task(self._heartbeat(job_id))
        try:
            outcome = await self.executor.reconcile(task, runner_name) if task else None
            if task is not None and outcome is not None and outcome.graded:
                outcome = await self._keep_output(task, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("Adopting grading job %d failed", job_id)
            outcome = None
        finally:
            heartbeat.cancel()
        if task is None or outcome is None:
            with self.service.session_factory() as session:
                job = session.get(GradingJob, job_id)
                if job is not None and job.worker == self.worker_id and job.state == "running":
                    self._requeue_or_fail(session, job, "the service restarted while it ran")
                session.commit()
            self.wake()
            return
        self._record(task, outcome)
        if not self.keep_job_dirs:
            await asyncio.to_thread(shutil.rmtree, task.job_dir, True)


def _prepare_job_dir(job_dir: Path, source: Path) -> None:
    shutil.rmtree(job_dir, ignore_errors=True)
    shutil.copytree(source, job_dir / "source")
    (job_dir / "submission").mkdir()
    (job_dir / "output").mkdir()


def _open_to_sandbox(job_dir: Path) -> None:
    """Readable and writable by the sandbox's unprivileged uid, nobody else's business.

    Links are left alone: chmod would change whatever they lead to, not the link.
    """
    for path in (job_dir, *job_dir.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o777 if path.is_dir() else 0o666)


__all__ = ["FINAL_STATES", "REGRADE_PRIORITY", "Scheduler", "enqueue", "queue_stats"]

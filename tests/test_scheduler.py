"""The queue's claim order and exclusivity, on SQLite and PostgreSQL (no grading involved).

Each test builds only what the queue needs: a session factory on a real database file or the
suite's PostgreSQL, a data layout and an executor (for its name and per-job settings); no app.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from grader_service import db
from grader_service.autograding.executor import GradingOutcome
from grader_service.autograding.local import LocalAutogradeExecutor
from grader_service.autograding.queue import REGRADE_PRIORITY, JobQueue, enqueue, queue_stats
from grader_service.orm import Assignment, GradingJob, Lecture, Submission, User, utcnow
from grader_service.storage import git
from grader_service.storage.layout import DataLayout
from grader_service.storage.staging import JobStager

from .postgres import create_database

_counter = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database for each test: queue order depends on everything in it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.sqlite'}"
    return create_database(
        request.getfixturevalue("postgres_admin_url"), f"queue_{next(_counter)}_{os.getpid()}"
    )


def sessions(db_url: str, migrate: bool = True) -> sessionmaker[Session]:
    """A session factory on the database, its schema brought to head by the migrations."""
    engine = db.make_engine(db_url)
    if migrate:
        db.upgrade(engine)
    return db.make_session_factory(engine)


def job_queue(factory: sessionmaker[Session], tmp_path: Path, **kwargs: object) -> JobQueue:
    return JobQueue(factory, DataLayout(tmp_path / "data"), LocalAutogradeExecutor(), **kwargs)


def submit(factory: sessionmaker[Session], user: str, priority: int = 0) -> int:
    with factory() as session:
        lecture = session.query(Lecture).filter_by(code="q").one_or_none()
        if lecture is None:
            lecture = Lecture(code="q", name="Q")
            session.add(lecture)
            session.flush()
            session.add(Assignment(lecture_id=lecture.id, name="a", settings={}))
            session.flush()
        assignment = session.query(Assignment).filter_by(lecture_id=lecture.id).one()
        owner = session.query(User).filter_by(name=user).one_or_none() or User(name=user)
        session.add(owner)
        session.flush()
        submission = Submission(assignment_id=assignment.id, user_id=owner.id, commit_hash="0" * 40)
        session.add(submission)
        session.flush()
        job = enqueue(session, submission, priority=priority)
        session.commit()
        return job.id


def expire_lease(factory: sessionmaker[Session], job_id: int) -> None:
    with factory() as session:
        session.get(GradingJob, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
        session.commit()


def test_fair_order_round_robin_and_regrades_last(db_url: str, tmp_path: Path) -> None:
    factory = sessions(db_url)
    regrade = submit(factory, "carol", priority=REGRADE_PRIORITY)  # oldest, but a regrade
    a1, a2, a3 = (submit(factory, "alice") for _ in range(3))  # alice's burst
    b1 = submit(factory, "bob")  # after the burst, still second in line
    with factory() as session:
        stats = queue_stats(session)
    assert stats["queued"] == 5 and stats["running"] == 0 and stats["oldest_queued_seconds"] >= 0
    queue = job_queue(factory, tmp_path)
    order = [task.job_id if (task := queue.claim()) else None for _ in range(6)]
    assert order == [a1, b1, a2, a3, regrade, None]
    with factory() as session:
        jobs = session.query(GradingJob).all()
        assert {j.state for j in jobs} == {"running"} and {j.attempts for j in jobs} == {1}
        assert {j.worker for j in jobs} == {queue.worker_id}
        # The claim's transaction also marks the submission running and names the job's runner.
        assert {j.submission.auto_status for j in jobs} == {"running"}
        assert all(j.runner_name for j in jobs)
        assert queue_stats(session)["running"] == 5


def test_running_jobs_of_a_user_count_against_their_turn(db_url: str, tmp_path: Path) -> None:
    """A user whose earlier job is being graded waits behind another user's first job, even an older queue entry."""
    factory = sessions(db_url)
    queue = job_queue(factory, tmp_path)
    first = submit(factory, "fay")
    assert queue.claim().job_id == first
    second = submit(factory, "fay")  # queued before gus's, but fay already has one running
    gus = submit(factory, "gus")
    assert [queue.claim().job_id, queue.claim().job_id] == [gus, second]


def test_enqueue_reuses_a_waiting_job(db_url: str, tmp_path: Path) -> None:
    factory = sessions(db_url)
    first = submit(factory, "dave", priority=REGRADE_PRIORITY)
    with factory() as session:
        submission = session.get(GradingJob, first).submission
        again = enqueue(session, submission)  # a tutor's regrade while the regrade run's job waits
        session.commit()
        assert again.id == first and again.priority == 0


def test_concurrent_claims_never_share_a_job(db_url: str, tmp_path: Path) -> None:
    """Two queues (two replicas, each its own engine) claiming at once: every job is claimed exactly once."""
    factory = sessions(db_url)
    ids = {submit(factory, f"u{i % 7}") for i in range(40)}
    claimed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def run(k: int) -> None:
        queue = job_queue(sessions(db_url, migrate=False), tmp_path)
        barrier.wait()
        while (task := queue.claim()) is not None:
            claimed[k].append(task.job_id)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed[0] + claimed[1]) == sorted(ids)
    assert not set(claimed[0]) & set(claimed[1])


def test_expired_lease_is_requeued_then_fails_after_max_attempts(db_url: str, tmp_path: Path) -> None:
    factory = sessions(db_url)
    job_id = submit(factory, "erin")
    queue = job_queue(factory, tmp_path, max_attempts=2)
    for attempt in (1, 2):
        assert queue.claim().job_id == job_id
        expire_lease(factory, job_id)
        assert queue.requeue_expired() == 1
        with factory() as session:
            job = session.get(GradingJob, job_id)
            assert job.attempts == attempt
            assert job.state == ("queued" if attempt == 1 else "failed")
    with factory() as session:
        job = session.get(GradingJob, job_id)
        assert "Gave up after 2 attempts" in job.error and job.submission.auto_status == "failed"


def test_result_of_a_job_taken_over_is_discarded(db_url: str, tmp_path: Path) -> None:
    """A worker whose lease expired and whose job another worker claimed cannot record over it."""
    factory = sessions(db_url)
    job_id = submit(factory, "hal")
    slow, quick = job_queue(factory, tmp_path), job_queue(factory, tmp_path)
    task = slow.claim()
    expire_lease(factory, job_id)
    assert slow.requeue_expired() == 1 and quick.claim().job_id == job_id
    gradebook = {"score": 1.0, "max_score": 2.0}

    assert slow.record(task, GradingOutcome(True, gradebook=gradebook)) is None
    with factory() as session:
        assert session.get(GradingJob, job_id).state == "running"
        assert session.get(GradingJob, job_id).submission.auto_status == "running"

    recorded = quick.record(task, GradingOutcome(True, gradebook=gradebook, feedback=True))
    assert recorded is not None and not recorded.retry
    assert (recorded.submission.auto_status, recorded.submission.score) == ("graded", 1.0)
    with factory() as session:
        job = session.get(GradingJob, job_id)
        assert (job.state, job.attempts, job.submission.feedback_status) == ("succeeded", 2, "generated")


def test_retryable_failure_is_requeued_until_max_attempts(db_url: str, tmp_path: Path) -> None:
    factory = sessions(db_url)
    job_id = submit(factory, "ida")
    queue = job_queue(factory, tmp_path, max_attempts=2)
    broken = GradingOutcome(False, reason="registry unreachable", retryable=True)
    first = queue.record(queue.claim(), broken)
    assert first.retry and first.submission.auto_status == "queued"
    assert "Attempt 1 of 2 failed" in first.submission.status_detail
    last = queue.record(queue.claim(), broken)
    assert not last.retry and last.submission.auto_status == "failed"
    with factory() as session:
        assert session.get(GradingJob, job_id).state == "failed"


def test_release_held_hands_jobs_back_without_an_attempt(db_url: str, tmp_path: Path) -> None:
    factory = sessions(db_url)
    job_id = submit(factory, "jo")
    queue, other = job_queue(factory, tmp_path), job_queue(factory, tmp_path)
    queue.claim()
    other.release_held()  # not its job
    with factory() as session:
        job = session.get(GradingJob, job_id)
        assert (job.state, job.submission.auto_status) == ("running", "running")
    queue.release_held()
    with factory() as session:
        job = session.get(GradingJob, job_id)
        assert (job.state, job.worker, job.attempts) == ("queued", None, 0)
        # the student sees it waiting again, not running on a worker that stopped
        assert job.submission.auto_status == "queued"
        assert "Queued again" in job.submission.status_detail


def test_source_cache_keeps_only_current_sources(tmp_path: Path) -> None:
    """Jobs copy the source from a per-commit cache; on start, entries no assignment uses are dropped."""
    factory = sessions(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    submit(factory, "ann")
    with factory() as session:
        assignment = session.query(Assignment).one()
        assignment.source_commit = "a" * 40
        session.commit()
        assignment_id = assignment.id
    layout = DataLayout(tmp_path / "data")
    current, stale = (
        layout.source_cache(assignment_id, "a" * 40),
        layout.source_cache(assignment_id, "b" * 40),
    )
    for entry in (current, stale, layout.source_cache(assignment_id + 1, "a" * 40)):
        entry.mkdir(parents=True)
        (entry / "notebook.ipynb").write_text("{}")

    JobStager(layout).prune_source_cache(job_queue(factory, tmp_path).current_sources())

    assert [p.name for p in layout.source_cache_dir().iterdir()] == [current.name]


def test_source_cache_filled_once_by_racing_workers(tmp_path: Path) -> None:
    """Workers that export the same source at once all get the one cached copy; no staging is left."""
    layout = DataLayout(tmp_path / "data")
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.ipynb").write_text("{}")
    repo = layout.source_repo(7)

    async def main() -> list[Path]:
        commit = await git.commit_directory(repo, files, "source", None)
        await git.update_branch(repo, commit, None)
        return await asyncio.gather(*(JobStager(layout).cached_source(7, commit) for _ in range(4)))

    caches = asyncio.run(main())

    assert len(set(caches)) == 1 and (caches[0] / "a.ipynb").read_text() == "{}"
    assert list(layout.source_cache_dir().iterdir()) == [caches[0]]

"""The queue's claim order and exclusivity, on SQLite and PostgreSQL (no grading involved)."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from pathlib import Path

import pytest

from grader_service.app import GraderService
from grader_service.autograding.events import EventBus
from grader_service.autograding.local import LocalAutogradeExecutor
from grader_service.autograding.scheduler import REGRADE_PRIORITY, Scheduler, enqueue, queue_stats
from grader_service.orm import Assignment, GradingJob, Lecture, Submission, User
from grader_service.storage import git

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


def make_service(db_url: str, tmp_path: Path) -> GraderService:
    service = GraderService(data_dir=str(tmp_path / "data"), db_url=db_url, upgrade_db=True)
    service.init_db()
    return service


def scheduler(service: GraderService) -> Scheduler:
    return Scheduler(service, LocalAutogradeExecutor(), EventBus())


def submit(service: GraderService, user: str, priority: int = 0) -> int:
    with service.session_factory() as session:
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


def test_fair_order_round_robin_and_regrades_last(db_url: str, tmp_path: Path) -> None:
    service = make_service(db_url, tmp_path)
    regrade = submit(service, "carol", priority=REGRADE_PRIORITY)  # oldest, but a regrade
    a1, a2, a3 = (submit(service, "alice") for _ in range(3))  # alice's burst
    b1 = submit(service, "bob")  # after the burst, still second in line
    with service.session_factory() as session:
        stats = queue_stats(session)
    assert stats["queued"] == 5 and stats["running"] == 0 and stats["oldest_queued_seconds"] >= 0
    s = scheduler(service)
    order = [task.job_id if (task := s.claim()) else None for _ in range(6)]
    assert order == [a1, b1, a2, a3, regrade, None]
    with service.session_factory() as session:
        jobs = session.query(GradingJob).all()
        assert {j.state for j in jobs} == {"running"} and {j.attempts for j in jobs} == {1}
        assert {j.worker for j in jobs} == {s.worker_id}
        # The claim's transaction also marks the submission running and names the job's runner.
        assert {j.submission.auto_status for j in jobs} == {"running"}
        assert all(j.runner_name for j in jobs)


def test_enqueue_reuses_a_waiting_job(db_url: str, tmp_path: Path) -> None:
    service = make_service(db_url, tmp_path)
    first = submit(service, "dave", priority=REGRADE_PRIORITY)
    with service.session_factory() as session:
        submission = session.get(GradingJob, first).submission
        again = enqueue(session, submission)  # a tutor's regrade while the regrade run's job waits
        session.commit()
        assert again.id == first and again.priority == 0


def test_concurrent_claims_never_share_a_job(db_url: str, tmp_path: Path) -> None:
    """Two schedulers (two replicas) claiming at once: every job is claimed exactly once."""
    service = make_service(db_url, tmp_path)
    ids = {submit(service, f"u{i % 7}") for i in range(40)}
    claimed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def run(k: int) -> None:
        other = make_service(db_url, tmp_path)
        s = scheduler(other)
        barrier.wait()
        while (task := s.claim()) is not None:
            claimed[k].append(task.job_id)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed[0] + claimed[1]) == sorted(ids)
    assert not set(claimed[0]) & set(claimed[1])


def test_expired_lease_is_requeued_then_fails_after_max_attempts(db_url: str, tmp_path: Path) -> None:
    from datetime import timedelta

    from grader_service.orm import utcnow

    service = make_service(db_url, tmp_path)
    job_id = submit(service, "erin")
    s = scheduler(service)
    s.max_attempts = 2
    for attempt in (1, 2):
        assert s.claim().job_id == job_id
        with service.session_factory() as session:
            session.get(GradingJob, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
            session.commit()
        assert s.requeue_expired() == 1
        with service.session_factory() as session:
            job = session.get(GradingJob, job_id)
            assert job.attempts == attempt
            assert job.state == ("queued" if attempt == 1 else "failed")
    with service.session_factory() as session:
        job = session.get(GradingJob, job_id)
        assert "Gave up after 2 attempts" in job.error and job.submission.auto_status == "failed"


def test_source_cache_keeps_only_current_sources(tmp_path: Path) -> None:
    """Jobs copy the source from a per-commit cache; on start, entries no assignment uses are dropped."""
    service = make_service(f"sqlite:///{tmp_path / 'cache.sqlite'}", tmp_path)
    submit(service, "ann")
    with service.session_factory() as session:
        assignment = session.query(Assignment).one()
        assignment.source_commit = "a" * 40
        session.commit()
        assignment_id = assignment.id
    layout = service.layout
    current, stale = (
        layout.source_cache(assignment_id, "a" * 40),
        layout.source_cache(assignment_id, "b" * 40),
    )
    for entry in (current, stale, layout.source_cache(assignment_id + 1, "a" * 40)):
        entry.mkdir(parents=True)
        (entry / "notebook.ipynb").write_text("{}")

    scheduler(service)._prune_source_cache()

    assert [p.name for p in layout.source_cache_dir().iterdir()] == [current.name]


def test_source_cache_filled_once_by_racing_workers(tmp_path: Path) -> None:
    """Workers that export the same source at once all get the one cached copy; no staging is left."""
    service = make_service(f"sqlite:///{tmp_path / 'cache.sqlite'}", tmp_path)
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.ipynb").write_text("{}")
    repo = service.layout.source_repo(7)

    async def main() -> list[Path]:
        commit = await git.commit_directory(repo, files, "source", None)
        await git.update_branch(repo, commit, None)
        return await asyncio.gather(*(scheduler(service)._cached_source(7, commit) for _ in range(4)))

    caches = asyncio.run(main())

    assert len(set(caches)) == 1 and (caches[0] / "a.ipynb").read_text() == "{}"
    assert list(service.layout.source_cache_dir().iterdir()) == [caches[0]]

"""One attempt to grade a submission. This table is the grading queue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..states import JobState, RunScope
from .base import Base, Vocabulary, one_of, utcnow
from .submission import Submission


class GradingJob(Base):
    __tablename__ = "grading_jobs"
    __table_args__ = (
        Index("ix_grading_jobs_state_created", "state", "created_at"),
        one_of("state", JobState),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    state: Mapped[JobState] = mapped_column(Vocabulary(JobState), default=JobState.QUEUED)
    # Lower runs first; regrade runs get a higher number so fresh submissions overtake them.
    priority: Mapped[int] = mapped_column(default=0)
    executor: Mapped[str | None] = mapped_column(String(64))
    # Which service process holds the job, and until when its claim is valid.
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    # The process or pod that runs the grading.
    runner_name: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("grading_runs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Seconds the grading process or pod itself ran; the rest of started..finished is service overhead.
    runner_seconds: Mapped[float | None]
    exit_reason: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)

    submission: Mapped[Submission] = relationship(lazy="joined")


class GradingRun(Base):
    """A batch regrade started by a tutor: groups the jobs it enqueued."""

    __tablename__ = "grading_runs"
    __table_args__ = (one_of("scope", RunScope),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    scope: Mapped[RunScope] = mapped_column(Vocabulary(RunScope), default=RunScope.LATEST)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

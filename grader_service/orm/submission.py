"""One submission: a git commit of a student's files, and what grading made of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..states import AutoStatus, FeedbackStatus, ManualStatus
from .assignment import Assignment
from .base import Base, Vocabulary, one_of, utcnow
from .user import User


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        # Lists of large courses (alembic 0004): an assignment's submissions newest first; one student's,
        # and the latest of each student (max(id) grouped by user), from the index alone.
        Index("ix_submissions_by_assignment", "assignment_id", "id"),
        Index("ix_submissions_by_assignment_user", "assignment_id", "user_id", "id"),
        one_of("auto_status", AutoStatus),
        one_of("manual_status", ManualStatus),
        one_of("feedback_status", FeedbackStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="RESTRICT"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    commit_hash: Mapped[str] = mapped_column(String(64))
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    late: Mapped[bool] = mapped_column(default=False)
    late_seconds: Mapped[float] = mapped_column(default=0.0)
    auto_status: Mapped[AutoStatus] = mapped_column(Vocabulary(AutoStatus), default=AutoStatus.NOT_QUEUED)
    manual_status: Mapped[ManualStatus] = mapped_column(
        Vocabulary(ManualStatus), default=ManualStatus.NOT_NEEDED
    )
    # Sum over the per-cell grades (`grades` table) of manual-if-set-else-auto points plus extra
    # credit, kept in the transaction that changes them (`grades.py`); null for a submission without.
    cell_score: Mapped[float | None]
    # Bumped by every change to the per-cell grades: a compare-and-set guard against lost updates.
    grades_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # score is what grading computed; manual_score, when set by a tutor, overrides it.
    score: Mapped[float | None]
    manual_score: Mapped[float | None]
    max_score: Mapped[float | None]
    comment: Mapped[str | None] = mapped_column(Text)
    gradebook: Mapped[dict[str, Any] | None]
    logs: Mapped[str | None] = mapped_column(Text)
    feedback_status: Mapped[FeedbackStatus] = mapped_column(
        Vocabulary(FeedbackStatus), default=FeedbackStatus.NONE
    )
    # Why auto_status is what it is, for staff: what a running job waits for (an image pull, a
    # node), why a queued one is being retried, why a failed one failed. Cleared when graded.
    status_detail: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[datetime | None]

    assignment: Mapped[Assignment] = relationship(lazy="joined")
    user: Mapped[User] = relationship(lazy="joined")

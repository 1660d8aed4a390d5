"""Per-cell grades of a submission, and the append-only record of every change to a grade."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..states import GradeKind
from .base import Base, Vocabulary, one_of, utcnow


class Grade(Base):
    """One graded cell of one submission: what grading gave it, and what a person made of it.

    `auto_points` is grading's (null for a cell only a person can grade); `manual_points`, when set,
    replaces it; `extra_credit` is added on top. A regrade replaces `auto_points` and keeps the rest.
    The unique (submission_id, grade_id) index also serves a submission's list of grades.
    """

    __tablename__ = "grades"
    __table_args__ = (UniqueConstraint("submission_id", "grade_id"), one_of("kind", GradeKind))

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    grade_id: Mapped[str] = mapped_column(String(255))
    notebook: Mapped[str] = mapped_column(String(255))
    kind: Mapped[GradeKind] = mapped_column(Vocabulary(GradeKind))
    auto_points: Mapped[float | None]
    manual_points: Mapped[float | None]
    extra_credit: Mapped[float] = mapped_column(default=0.0)
    max_points: Mapped[float]
    comment: Mapped[str | None] = mapped_column(Text)
    needs_manual: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class GradeChange(Base):
    """One change to a submission's grading, kept for good: no code updates or deletes a row, and
    triggers (alembic 0006) refuse UPDATE and DELETE (and TRUNCATE, on PostgreSQL).

    `what` is a grade_id, or one of "manual_score", "extension", "regrade", "submitted_on_behalf";
    `old` and `new` are JSON text.
    """

    __tablename__ = "grade_changes"
    __table_args__ = (Index("ix_grade_changes_by_submission", "submission_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="RESTRICT"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    user_name: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    what: Mapped[str] = mapped_column(String(255))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)

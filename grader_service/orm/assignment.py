"""An assignment of a lecture: source notebooks, the released student version, policies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..states import AssignmentKind, AssignmentStatus, FeedbackPolicy, GradingPolicy
from .base import Base, Vocabulary, one_of, utcnow
from .lecture import Lecture


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("lecture_id", "name"),
        one_of("status", AssignmentStatus),
        one_of("kind", AssignmentKind),
        one_of("grading_policy", GradingPolicy),
        one_of("feedback_policy", FeedbackPolicy),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    lecture_id: Mapped[int] = mapped_column(ForeignKey("lectures.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[AssignmentStatus] = mapped_column(
        Vocabulary(AssignmentStatus), default=AssignmentStatus.CREATED
    )
    # notebook: nbgrader notebooks; command: stages of grader.yaml (grader_service.command).
    kind: Mapped[AssignmentKind] = mapped_column(
        Vocabulary(AssignmentKind),
        default=AssignmentKind.NOTEBOOK,
        server_default=AssignmentKind.NOTEBOOK.value,
    )
    due_date: Mapped[datetime | None]
    # Submissions after due_date and up to late_until are accepted and flagged late.
    late_until: Mapped[datetime | None]
    # Fraction of the score deducted from a late submission in the grade table (0 = none).
    late_penalty: Mapped[float] = mapped_column(default=0.0)
    max_submissions: Mapped[int | None]
    grading_policy: Mapped[GradingPolicy] = mapped_column(
        Vocabulary(GradingPolicy), default=GradingPolicy.LATEST
    )
    feedback_policy: Mapped[FeedbackPolicy] = mapped_column(
        Vocabulary(FeedbackPolicy), default=FeedbackPolicy.MANUAL
    )
    # Executor overrides: cell_timeout, timeout, memory, cpu, image, allowed_files.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Git commit of the uploaded source in the assignment's source repository.
    source_commit: Mapped[str | None] = mapped_column(String(64))
    # Git commit of the student version produced by release (what students download).
    release_commit: Mapped[str | None] = mapped_column(String(64))
    # The gradebook skeleton produced by release: grade ids and max points per notebook.
    gradebook_skeleton: Mapped[dict[str, Any] | None]
    max_score: Mapped[float | None]
    # Lines of hidden-test code, so they can be kept out of what students see ({"lines": [...]}).
    hidden_tests: Mapped[dict[str, Any] | None]
    released_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lecture: Mapped[Lecture] = relationship(lazy="joined")

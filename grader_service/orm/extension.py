"""A per-student extension of one assignment: their own deadline, late window and attempt limit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .assignment import Assignment
from .base import Base, utcnow
from .user import User


class Extension(Base):
    """Replaces the assignment's `due_date`, `late_until` and `max_submissions` for one student.

    `late_until` and `max_submissions` are the student's own values when set; when null the
    extension gives no late window and leaves the assignment's attempt limit in force.
    """

    __tablename__ = "extensions"
    __table_args__ = (UniqueConstraint("assignment_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    due_date: Mapped[datetime]
    late_until: Mapped[datetime | None]
    max_submissions: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")
    assignment: Mapped[Assignment] = relationship(lazy="joined")

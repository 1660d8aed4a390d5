"""A course; the unit of permissions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ..states import LectureState
from .base import Base, Vocabulary, one_of, utcnow


class Lecture(Base):
    __tablename__ = "lectures"
    __table_args__ = (one_of("state", LectureState),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    state: Mapped[LectureState] = mapped_column(Vocabulary(LectureState), default=LectureState.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

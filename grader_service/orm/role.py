"""A user's role in one lecture. A role in one lecture grants nothing in another."""

from __future__ import annotations

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..states import RoleName, RoleSource
from .base import Base, Vocabulary, one_of
from .lecture import Lecture
from .user import User


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (one_of("role", RoleName), one_of("source", RoleSource))

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # Indexed on its own for a lecture's roster: the primary key starts with user_id.
    lecture_id: Mapped[int] = mapped_column(
        ForeignKey("lectures.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[RoleName] = mapped_column(Vocabulary(RoleName))
    source: Mapped[RoleSource] = mapped_column(Vocabulary(RoleSource, length=8), default=RoleSource.API)

    user: Mapped[User] = relationship(lazy="joined")
    lecture: Mapped[Lecture] = relationship(lazy="joined")

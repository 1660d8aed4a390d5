"""A user's role in one lecture. A role in one lecture grants nothing in another."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base
from .lecture import Lecture
from .user import User

# Ordered from least to most privileged: a higher role can do everything a lower one can.
ROLES = ("student", "tutor", "instructor")
# Where a role came from: granted through the API, or mirrored from a JupyterHub group.
ROLE_SOURCES = ("api", "hub")


def role_rank(role: str | None) -> int:
    """0 for no role, then 1..3 in the order of ROLES."""
    return ROLES.index(role) + 1 if role in ROLES else 0


class Role(Base):
    __tablename__ = "roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    lecture_id: Mapped[int] = mapped_column(ForeignKey("lectures.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(8), default="api")

    user: Mapped[User] = relationship(lazy="joined")
    lecture: Mapped[Lecture] = relationship(lazy="joined")

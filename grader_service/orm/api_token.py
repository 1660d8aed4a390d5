"""An API token for standalone mode. Only a hash is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow
from .user import User

# The prefix is stored in clear to find the row and to let `token list` show which token is which.
PREFIX_LENGTH = 8


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so a fast unsalted hash is safe (as JupyterHub does for long tokens)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_hex(32)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(PREFIX_LENGTH), index=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True)
    # Standalone admins are marked on the token: `token create --admin`.
    admin: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")

"""Standalone authentication with the service's own API tokens (`grader-service token create`)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from traitlets import Float

from ..orm import ApiToken, utcnow
from ..orm.api_token import PREFIX_LENGTH, hash_token
from .base import Authenticator, Identity, token_from_header

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from tornado.web import RequestHandler


class TokenAuthenticator(Authenticator):
    """`Authorization: token <t>` checked against hashed tokens in the database."""

    last_used_resolution = Float(
        60.0,
        help="Seconds between updates of a token's last_used_at; avoids a write on every request.",
    ).tag(config=True)

    async def authenticate(self, handler: RequestHandler, session: Session) -> Identity | None:
        token = token_from_header(handler)
        if not token:
            return None
        row = session.scalars(
            select(ApiToken).where(
                ApiToken.prefix == token[:PREFIX_LENGTH], ApiToken.hashed == hash_token(token)
            )
        ).one_or_none()
        now = utcnow()
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            return None
        if row.last_used_at is None or now - row.last_used_at > timedelta(seconds=self.last_used_resolution):
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
            session.commit()
        return Identity(
            name=row.user.name, admin=row.admin, display_name=row.user.display_name, user_id=row.user.id
        )

"""The caller's own identity and roles."""

from __future__ import annotations

from sqlalchemy import select

from ..orm import Lecture, Role
from .base import APIHandler
from .permissions import needs_login
from .serialize import user_model


class UserHandler(APIHandler):
    @needs_login
    def get(self) -> None:
        rows = self.db.execute(
            select(Lecture.code, Role.role)
            .join(Role, Role.lecture_id == Lecture.id)
            .where(Role.user_id == self.me.id)
        ).all()
        self.write_json(
            user_model(self.me, roles=dict(rows), admin=self.identity is not None and self.identity.admin)
        )


handlers = [(r"user", UserHandler)]

"""Liveness and readiness: no authentication, cheap, and honest about the database."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__
from .base import APIHandler


class HealthHandler(APIHandler):
    auth_required = False

    async def prepare(self) -> None:
        # Skip authentication entirely: probes carry no credentials and must stay cheap.
        self._chunks, self._received = [], 0

    def get(self) -> None:
        try:
            self.db.execute(text("SELECT 1"))
            database = "ok"
        except SQLAlchemyError as e:
            self.service.log.error("Health check: database unavailable: %s", e)
            database = "unavailable"
        status = 200 if database == "ok" else 503
        self.set_status(status)
        self.finish(
            {"status": "ok" if status == 200 else "degraded", "version": __version__, "database": database}
        )


handlers = [(r"health", HealthHandler)]

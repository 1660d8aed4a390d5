"""Liveness and readiness: no authentication, cheap, and honest about the database, the queue and
whether this process grades (and in which sandbox).

`health` is the readiness check: 503 while the database is unreachable (or every connection is
busy), so a load balancer sends requests to another replica. `health/live` is the liveness check:
it answers as long as the event loop runs, without the database, so losing the database takes a
replica out of rotation but never gets it restarted (a restart would not bring the database back).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa_exc

from .. import __version__
from ..autograding.queue import queue_stats
from .base import APIHandler
from .permissions import public


class HealthHandler(APIHandler):
    auth_required = False
    authenticates = False  # probes carry no credentials and must stay cheap

    @public
    def get(self) -> None:
        queue = None
        try:
            queue = queue_stats(self.db)  # a query: it also proves the database answers
            database = "ok"
        except sa_exc.TimeoutError:
            # It never waits for a connection: busy is an answer too (the gate keeps one for this).
            self.service.log.warning("Health check: every database connection is in use")
            database = "busy"
        except sa_exc.SQLAlchemyError as e:
            self.service.log.error("Health check: database unavailable: %s", e)
            database = "unavailable"
        status = 200 if database == "ok" else 503
        body: dict[str, Any] = {
            "status": "ok" if status == 200 else "degraded",
            "version": __version__,
            "database": database,
        }
        scheduler = self.service.scheduler
        if queue is not None:
            queue["backlogged"] = scheduler is not None and queue["queued"] > scheduler.max_queue_length
            body["queue"] = queue
        if scheduler is not None:
            executor = scheduler.executor
            body["executor"] = executor.name
            body["sandbox"] = executor.sandbox
            body["grading"] = self.service.grading and executor.refused is None
            if executor.refused is not None:
                # Serving, so still 200 (submissions are taken and kept), but not what was meant.
                body["status"] = "degraded"
                body["grading_reason"] = executor.refused.reason
                body["grading_fix"] = executor.refused.fix
            elif not self.service.grading:
                body["grading_reason"] = "this process only serves the API (c.GraderService.grading = False)"
        self.set_status(status)
        self.finish(body)


class LivenessHandler(APIHandler):
    auth_required = False
    authenticates = False

    @public
    def get(self) -> None:
        self.finish({"status": "ok", "version": __version__})


handlers = [(r"health", HealthHandler), (r"health/live", LivenessHandler)]

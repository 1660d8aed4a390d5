"""Prometheus metrics of this process (`grader_service.metrics`), in the text exposition format.

For admins, and for a monitoring system with the scrape token an admin configured
(`c.GraderService.metrics_token`). A request with that token is not authenticated as a user:
no hub round trip and no database wait per scrape. Queue figures come from one query at
scrape time (the one `/health` runs), counters from this process's own registry.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from ..autograding.queue import queue_stats
from ..metrics import CONTENT_TYPE
from .base import APIHandler
from .errors import api_error
from .permissions import needs_scrape_access, scrape_token_matches, token_from_header


class MetricsHandler(APIHandler):
    auth_required = False  # the scrape token is no user's; needs_scrape_access decides

    async def prepare(self) -> None:
        if scrape_token_matches(token_from_header(self), self.service.metrics_token):
            self.authenticates = False  # the token is checked again, in constant time, by the decorator
        await super().prepare()

    @needs_scrape_access
    def get(self) -> None:
        service = self.service
        try:
            queue = queue_stats(self.db)
        except sa_exc.TimeoutError:
            raise self.database_busy() from None
        except sa_exc.SQLAlchemyError as e:
            service.log.error("Metrics: database unavailable: %s", e)
            raise api_error(
                503, "The database is unavailable; metrics need it for the queue figures"
            ) from None
        pool = service.engine.pool
        in_use = pool.checkedout() if hasattr(pool, "checkedout") else 0  # this scrape's own included
        self.release_db()
        streams = service.events.subscriber_count if service.events is not None else 0
        service.metrics.refresh(queue, streams, in_use, service.db_gate.capacity)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(service.metrics.exposition())


handlers = [(r"metrics", MetricsHandler)]

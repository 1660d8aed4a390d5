"""One LISTEN connection per replica (PostgreSQL): every replica hears every state change.

The connection is psycopg's async connection, waiting on `notifies()`: no polling, and the event
loop is never blocked. Between waits (every `ping_interval` seconds) a `SELECT 1` proves the
connection alive; a connection that fails is replaced with backoff, and the feed then replays the
current state of every subscribed stream since the last moment the old connection was known to be
alive, so nothing announced meanwhile is missed (duplicates are harmless: events are states).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import psycopg
from sqlalchemy.engine import URL

from ..orm import utcnow
from .announce import CHANNEL, parse
from .events import EventFeed

# A change committed shortly before the last proof of life may still have been on its way.
REPLAY_MARGIN = timedelta(seconds=5)


def conninfo(url: URL) -> str:
    """libpq's connection string for a SQLAlchemy PostgreSQL URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresListener:
    """LISTEN on the announcement channel; announced ids go to the feed."""

    def __init__(
        self,
        dsn: str,
        feed: EventFeed,
        log: logging.Logger | None = None,
        ping_interval: float = 10.0,
        connect_timeout: int = 5,
    ):
        self.dsn = dsn
        self.feed = feed
        self.log = log or logging.getLogger(__name__)
        self.ping_interval = ping_interval
        self.connect_timeout = connect_timeout
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._alive_at: datetime | None = None  # the last moment a connection was known to be alive

    async def start(self, wait: float = 5.0) -> None:
        """Start listening; wait (a bounded time) for the first connection, so that changes made once
        the service serves are heard."""
        self._task = asyncio.create_task(self._run(), name="grader-event-listener")
        try:
            await asyncio.wait_for(self.connected.wait(), wait)
        except TimeoutError:
            self.log.warning("Event listener not connected yet; live events start once it is")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=self.connect_timeout
                )
            except psycopg.Error as e:
                self.log.warning("Event listener cannot connect (retrying in %.1f s): %s", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            try:
                await self._listen(conn)
            except psycopg.Error as e:
                self.log.warning("Event listener lost its connection, reconnecting: %s", e)
            finally:
                self.connected.clear()
                await _close(conn)

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(f"LISTEN {CHANNEL}")
        self.connected.set()
        if self._alive_at is not None:
            # Listening again: whatever was announced since the old connection's last sign of life
            # may be lost. The current state of every subscribed stream is sent again.
            self.log.info("Event listener reconnected; sending the current state of every stream")
            self.feed.replay(self._alive_at - REPLAY_MARGIN)
        while True:
            self._alive_at = utcnow()
            async for notify in conn.notifies(timeout=self.ping_interval):
                ids = parse(notify.payload)
                if ids is not None:
                    self.feed.changed({ids[0]: ids[1]})
            await conn.execute("SELECT 1")


async def _close(conn: psycopg.AsyncConnection) -> None:
    with contextlib.suppress(TimeoutError, psycopg.Error, OSError):
        await asyncio.wait_for(conn.close(), 2.0)


__all__ = ["PostgresListener", "conninfo"]

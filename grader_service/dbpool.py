"""Waiting for a pooled database connection without blocking the event loop.

SQLAlchemy's pool is synchronous. A checkout from an exhausted pool would wait on a lock, and on the
event loop that wait stops every request, the health check and grading at once. So the engine's pool
never waits (`db.make_engine` sets `pool_timeout=0`: an exhausted pool raises at once), and request
handlers wait here instead, asynchronously and for a bounded time, before they use the database.

Handlers do not hold a connection while they wait on a client or on slow work (they end their
transaction first), so the pool runs short only under real load. A few connections stay outside the
gate's reach: the scheduler and the health check use the database without awaiting anything in between,
so they need one connection at a time and always find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

# Connections the gate leaves to the scheduler and the health check (one would do: they never await
# while holding one), and to work in threads.
RESERVED = 2


class ConnectionGate:
    """Lets request handlers wait until the pool has a connection for them."""

    def __init__(self, engine: Engine, capacity: int):
        self.pool = engine.pool
        self.capacity = capacity
        self.limit = max(1, capacity - RESERVED)
        self._freed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._waiting = 0
        event.listen(engine, "checkin", self._on_checkin)

    def has_room(self) -> bool:
        if not isinstance(self.pool, QueuePool):
            # An in-memory SQLite database: SQLAlchemy's pool for it holds one connection per thread
            # and counts none; there is nothing to wait for.
            return True
        return self.pool.checkedout() < self.limit

    async def wait(self, timeout: float) -> bool:
        """True once a handler may use the database; False if none came free within `timeout` seconds."""
        if self.has_room():
            return True
        loop = asyncio.get_running_loop()
        if self._freed is None:
            self._freed, self._loop, self._loop_thread = asyncio.Event(), loop, threading.get_ident()
        deadline = loop.time() + timeout
        self._waiting += 1
        try:
            # Every waiter wakes on each check-in and looks again: the first to run takes the room.
            while not self.has_room():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), remaining)
            return True
        finally:
            self._waiting -= 1

    def _on_checkin(self, _dbapi_connection: Any, _record: Any) -> None:
        if not self._waiting or self._freed is None or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._freed.set()
        else:
            self._loop.call_soon_threadsafe(self._freed.set)

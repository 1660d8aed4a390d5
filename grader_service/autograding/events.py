"""In-process publish/subscribe of submission state changes, for the live status stream.

The scheduler publishes every state change; each Server-Sent-Events connection subscribes to
one submission or one assignment. Nothing is polled: a subscriber's queue wakes it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

# A slow client must not make the service hold unbounded events for it.
MAX_PENDING = 256
# Put in every subscriber's queue when the service stops: streams end instead of holding shutdown.
CLOSED: dict[str, Any] = {}


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[tuple[str, int], set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self.closed = False

    def subscribe(self, kind: str, key: int) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_PENDING)
        if self.closed:
            # A client that reconnected over a kept-alive connection while the service stops: it
            # gets the current state, then the stream ends, and it reconnects to a live process.
            queue.put_nowait(CLOSED)
        self._subscribers[(kind, key)].add(queue)
        return queue

    def unsubscribe(self, kind: str, key: int, queue: asyncio.Queue[dict[str, Any]]) -> None:
        subscribers = self._subscribers.get((kind, key))
        if subscribers is not None:
            subscribers.discard(queue)
            if not subscribers:
                del self._subscribers[(kind, key)]

    def close(self) -> None:
        """End every stream (the service is stopping), now and from now on; clients reconnect."""
        self.closed = True
        for subscribers in self._subscribers.values():
            for queue in subscribers:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(CLOSED)

    def publish(self, submission_id: int, assignment_id: int, event: dict[str, Any]) -> None:
        for key in (("submission", submission_id), ("assignment", assignment_id)):
            for queue in self._subscribers.get(key, ()):
                if queue.full():
                    queue.get_nowait()  # drop the oldest: the newest state is what matters
                queue.put_nowait(event)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

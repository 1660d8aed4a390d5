"""Live submission state for the status stream: the in-process bus and the feed that fills it.

A change of a submission's grading state is *announced* inside the transaction that makes it
(`announce.py`): by ids only, so a rolled-back change is never announced. The `EventFeed` turns
announced ids into events by reading the committed state, one read at a time and in order, and
publishes them on this process's `EventBus`; each Server-Sent-Events connection subscribes to one
submission or one assignment there. On SQLite (one process) announcements reach the feed when
their transaction commits; on PostgreSQL every replica's feed hears them through its own LISTEN
connection (`listener.py`), its own announcements included. Nothing is polled.

Events are states, not deltas: a subscriber may see a state twice, or miss an intermediate one
that was already replaced when it was read, but never an older state after a newer one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ..orm import GradingJob, Submission
from ..states import PENDING_AUTO_STATUSES, AutoStatus

# A slow client must not make the service hold unbounded events for it.
MAX_PENDING = 256
# Put in every subscriber's queue when the service stops: streams end instead of holding shutdown.
CLOSED: dict[str, Any] = {}

Key = tuple[str, int]


class EventBus:
    """Subscribers by stream; every read of states the feed starts gets the next generation.

    A subscriber remembers the generation when it subscribed: an event read in an earlier (or the
    same) generation may have been read before the subscriber's own first look at the state, so it
    is not delivered to it; `publish` tells the feed, which reads that submission again.
    """

    def __init__(self) -> None:
        self._subscribers: dict[Key, dict[asyncio.Queue[dict[str, Any]], int]] = {}
        self.generation = 0
        self.closed = False

    def subscribe(self, kind: str, key: int) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_PENDING)
        if self.closed:
            # A client that reconnected over a kept-alive connection while the service stops: it
            # gets the current state, then the stream ends, and it reconnects to a live process.
            queue.put_nowait(CLOSED)
        self._subscribers.setdefault((kind, key), {})[queue] = self.generation
        return queue

    def unsubscribe(self, kind: str, key: int, queue: asyncio.Queue[dict[str, Any]]) -> None:
        subscribers = self._subscribers.get((kind, key))
        if subscribers is not None:
            subscribers.pop(queue, None)
            if not subscribers:
                del self._subscribers[(kind, key)]

    def close(self) -> None:
        """End every stream (the service is stopping), now and from now on; clients reconnect."""
        self.closed = True
        for subscribers in self._subscribers.values():
            for queue in subscribers:
                _put(queue, CLOSED)

    def begin_read(self) -> int:
        """The generation of a read of states about to start."""
        self.generation += 1
        return self.generation

    def publish(self, submission_id: int, assignment_id: int, event: dict[str, Any], generation: int) -> bool:
        """Deliver a state read in `generation`; False if a subscriber was too new to be sure of it."""
        complete = True
        for key in (("submission", submission_id), ("assignment", assignment_id)):
            for queue, since in self._subscribers.get(key, {}).items():
                if generation > since:
                    _put(queue, event)
                else:
                    complete = False
        return complete

    def subscribed(self, kind: str) -> set[int]:
        return {key for k, key in self._subscribers if k == kind}

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())


def _put(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()  # drop the oldest: the newest state is what matters
    queue.put_nowait(event)


# --- reading states ---------------------------------------------------------------------------------


def state_event(submission: Submission, job_id: int | None) -> dict[str, Any]:
    """A submission's committed grading state as a status event (staff's view; `ResultView.event` narrows it)."""
    event: dict[str, Any] = {"submission": submission.id, "auto_status": submission.auto_status}
    if job_id is not None:
        event["job"] = job_id
    if submission.status_detail:
        event["status_detail"] = submission.status_detail
    if submission.auto_status == AutoStatus.GRADED:
        event.update(
            score=submission.score,
            max_score=submission.max_score,
            feedback_status=submission.feedback_status,
        )
    elif submission.auto_status == AutoStatus.FAILED:
        event["reason"] = submission.status_detail
    return event


def stream_filter(assignment_ids: Iterable[int], since: datetime | None) -> Any:
    """Which submissions of an assignment stream a (re)connecting client needs: the pending ones, and
    those whose grading started or ended since `since`."""
    wanted: ColumnElement[bool] = Submission.auto_status.in_(PENDING_AUTO_STATUSES)
    if since is not None:
        changed = (
            select(GradingJob.id)
            .where(
                GradingJob.submission_id == Submission.id,
                or_(GradingJob.started_at >= since, GradingJob.finished_at >= since),
            )
            .exists()
        )
        wanted = or_(wanted, changed)
    return Submission.assignment_id.in_(list(assignment_ids)) & Submission.deleted_at.is_(None) & wanted


def read_states(session: Session, where: Any) -> list[tuple[int, int, dict[str, Any]]]:
    """(submission id, assignment id, event) of every submission matching `where`, in id order."""
    submissions = session.scalars(select(Submission).where(where).order_by(Submission.id)).all()
    ids = [s.id for s in submissions]
    jobs = (
        dict(
            session.execute(
                select(GradingJob.submission_id, func.max(GradingJob.id))
                .where(GradingJob.submission_id.in_(ids))
                .group_by(GradingJob.submission_id)
            ).all()
        )
        if ids
        else {}
    )
    return [(s.id, s.assignment_id, state_event(s, jobs.get(s.id))) for s in submissions]


@dataclass
class _Pending:
    submissions: dict[int, int] = field(default_factory=dict)  # submission id -> assignment id
    replay_since: datetime | None = None
    replay: bool = False


class EventFeed:
    """Reads the committed state of announced submissions and publishes it on the bus.

    One task reads, one batch at a time: a later read never yields an older state than an earlier
    one. Reads run in a thread (a query must not stop the event loop). A feed that may have missed
    announcements (its LISTEN connection was lost) `replay`s: it reads the current state of every
    subscribed stream again.
    """

    def __init__(
        self,
        bus: EventBus,
        session_factory: sessionmaker[Session],
        log: logging.Logger | None = None,
        on_queued: Callable[[], None] | None = None,
    ):
        self.bus = bus
        self.session_factory = session_factory
        self.log = log or logging.getLogger(__name__)
        self.on_queued = on_queued  # called when a submission is (re)queued: workers look at once
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()
        self._task = asyncio.create_task(self._run(), name="grader-event-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def changed(self, submissions: Mapping[int, int]) -> None:
        """These submissions' states changed (submission id -> assignment id); from any thread."""
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() == self._thread:
            self._add(submissions)
        else:
            self._loop.call_soon_threadsafe(self._add, dict(submissions))

    def replay(self, since: datetime | None) -> None:
        """Announcements since `since` may have been missed: send every subscribed stream's state again."""
        pending = self._pending
        if pending.replay and pending.replay_since is not None:
            since = pending.replay_since if since is None else min(since, pending.replay_since)
        pending.replay, pending.replay_since = True, since
        self._wake.set()

    def _add(self, submissions: Mapping[int, int]) -> None:
        self._pending.submissions.update(submissions)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, _Pending()
            if not batch.submissions and not batch.replay:
                continue
            try:
                await self._read_and_publish(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Reading the state of changed submissions failed; trying again")
                self._merge_back(batch)
                await asyncio.sleep(1.0)

    def _merge_back(self, batch: _Pending) -> None:
        self._add({**batch.submissions, **self._pending.submissions})
        if batch.replay:
            self.replay(batch.replay_since)

    async def _read_and_publish(self, batch: _Pending) -> None:
        where: ColumnElement[bool] = Submission.id.in_(list(batch.submissions))
        if batch.replay:
            where = or_(
                where,
                Submission.id.in_(list(self.bus.subscribed("submission"))),
                stream_filter(self.bus.subscribed("assignment"), batch.replay_since),
            )
        generation = self.bus.begin_read()
        states = await asyncio.to_thread(self._read, where)
        again: dict[int, int] = {}
        for submission_id, assignment_id, event in states:
            if not self.bus.publish(submission_id, assignment_id, event, generation):
                again[submission_id] = assignment_id
            if event["auto_status"] == AutoStatus.QUEUED and self.on_queued is not None:
                self.on_queued()
        if again:
            self._add(again)

    def _read(self, where: Any) -> list[tuple[int, int, dict[str, Any]]]:
        with self.session_factory() as session:
            return read_states(session, where)


__all__ = ["CLOSED", "EventBus", "EventFeed", "read_states", "state_event", "stream_filter"]

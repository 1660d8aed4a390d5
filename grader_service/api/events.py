"""Live grading status as Server-Sent Events: queued -> running -> graded, without polling.

`GET events?submission=ID` streams one submission's state changes (students: their own) and
ends after a final state; `GET events?lecture=CODE&assignment=NAME` streams every submission of
an assignment (tutors) until the client disconnects.

A stream opens with the current state: the submission's, or every pending submission of the
assignment. Each event has an `id:` (milliseconds since the epoch when it was sent); a client that
reconnects with `Last-Event-ID` (to this replica or another) gets, besides the pending ones, the
current state of every submission whose grading started or ended since then, so a dropped
connection loses nothing. Events come from `autograding/events.py`'s bus, which hears the changes
of every replica.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from tornado.iostream import StreamClosedError

from ..autograding.events import CLOSED, read_states, stream_filter
from ..orm import Assignment, Submission
from ..states import AutoStatus, RoleName, member_of
from .base import APIHandler, api_error
from .params import ID_MAX
from .permissions import ResultView, needs_login

KEEPALIVE_SECONDS = 15.0
# How long a browser's EventSource waits before reconnecting (the SSE `retry:` field).
RETRY_MILLISECONDS = 1000
# Replayed changes reach back this much before Last-Event-ID: event ids come from one replica's
# clock, grading timestamps from another's, and an event is sent a moment after its change.
REPLAY_MARGIN_SECONDS = 5.0


class EventsHandler(APIHandler):
    _last_id = 0

    # Which stream, and so which rule, comes from the query: a submission the caller may see
    # (`Permissions.may_see_submission`), or an assignment of a lecture they are staff in.
    @needs_login
    async def get(self) -> None:
        self._view: ResultView | None = None  # None: the caller is staff and sees every event whole
        since = self._last_event_id()
        events = self.service.events
        if events is None:
            raise api_error(503, "Grading is not running in this service process")
        # Subscribe before reading the current state, with no await in between: a change published
        # meanwhile is then sent twice (harmless, events are states) rather than lost.
        if self.get_query_argument("submission", None) is not None:
            submission_id = self.int_argument("submission", 0, minimum=1, maximum=ID_MAX)
            kind, key = "submission", self._submission_or_404(submission_id).id
        else:
            kind, key = "assignment", self._assignment_or_404().id
        # End the transaction the checks above read in: the current state must come from a snapshot
        # taken after subscribing (a transaction may keep its first one), or a change published in
        # between would be neither in it nor in the queue.
        self.db.commit()
        queue = events.subscribe(kind, key)
        try:
            initial = self._current(kind, key, since)
            # The database session is not needed while streaming: release its connection now.
            self.db.close()
            self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
            self.set_header("X-Accel-Buffering", "no")
            self.write(f"retry: {RETRY_MILLISECONDS}\n\n")
            await self.flush()  # the client knows the stream is open, even before a first event
            for event in initial:
                await self._send(event)
            if kind == "submission" and initial and _final(initial[-1]):
                return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    self.write(": keep-alive\n\n")
                    await self.flush()
                    continue
                if event is CLOSED:
                    return  # the service is stopping: the client reconnects (to it or another replica)
                await self._send(event)
                if kind == "submission" and _final(event):
                    return
        except StreamClosedError:
            pass
        finally:
            events.unsubscribe(kind, key, queue)

    async def _send(self, event: dict[str, Any]) -> None:
        if self._view is not None:
            event = self._view.event(event)
        # Ids never go backwards within a stream, even if the clock does.
        self._last_id = max(self._last_id, time.time_ns() // 1_000_000)
        self.write(f"id: {self._last_id}\nevent: status\ndata: {json.dumps(event)}\n\n")
        await self.flush()

    def _last_event_id(self) -> datetime | None:
        raw = self.request.headers.get("Last-Event-ID")
        if raw is None or raw == "":
            return None
        if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
            raise api_error(400, f"Last-Event-ID must be an event id this service sent, got {raw[:40]!r}")
        return datetime.fromtimestamp(int(raw) / 1000 - REPLAY_MARGIN_SECONDS, UTC)

    def _submission_or_404(self, submission_id: int) -> Submission:
        submission = self.db.get(Submission, submission_id)
        if (
            submission is None
            or submission.deleted_at is not None
            or not self.permissions.may_see_submission(submission)
        ):
            raise api_error(404, f"Submission {submission_id} not found")
        self._view = self.permissions.result_view(submission)
        return submission

    def _assignment_or_404(self) -> Assignment:
        code = self.get_query_argument("lecture", None)
        name = self.get_query_argument("assignment", None)
        if not code or not name:
            raise api_error(400, "Give ?submission=ID, or ?lecture=CODE&assignment=NAME")
        lecture = self.lecture_or_404(code, RoleName.TUTOR)
        return self.assignment_or_404(lecture, name)

    def _current(self, kind: str, key: int, since: datetime | None) -> list[dict[str, Any]]:
        """The state a (re)connecting client starts from."""
        where = Submission.id == key if kind == "submission" else stream_filter([key], since)
        return [event for _, _, event in read_states(self.db, where)]


def _final(event: dict[str, Any]) -> bool:
    status = member_of(AutoStatus, event.get("auto_status"))
    return status is not None and status.final


handlers = [(r"events", EventsHandler)]

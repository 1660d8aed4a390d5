"""Live grading status as Server-Sent Events: queued -> running -> graded, without polling.

`GET events?submission=ID` streams one submission's state changes (students: their own) and
ends after a final state; `GET events?lecture=CODE&assignment=NAME` streams every submission of
an assignment (tutors) until the client disconnects.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import select
from tornado.iostream import StreamClosedError

from ..orm import Submission
from .base import APIHandler, api_error
from .params import ID_MAX
from .permissions import ResultView

KEEPALIVE_SECONDS = 15.0
FINAL = ("graded", "failed")


class EventsHandler(APIHandler):
    async def get(self) -> None:
        self._view: ResultView | None = None  # None: the caller is staff and sees every event whole
        if self.get_query_argument("submission", None) is not None:
            submission_id = self.int_argument("submission", 0, minimum=1, maximum=ID_MAX)
            kind, key, assignment_id, initial = self._submission_stream(submission_id)
        else:
            kind, key, assignment_id, initial = self._assignment_stream()
        events = self.service.events
        if events is None:
            raise api_error(503, "Grading is not running in this service process")
        queue = events.subscribe(kind, key)
        # The database session is not needed while streaming: release its connection now.
        self.db.close()
        self.lasts_until_the_client_leaves()
        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("X-Accel-Buffering", "no")
        try:
            for event in initial:
                await self._send(event)
            if kind == "submission" and initial and initial[-1]["auto_status"] in FINAL:
                return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    self.write(": keep-alive\n\n")
                    await self.flush()
                    continue
                await self._send(event)
                if kind == "submission" and event.get("auto_status") in FINAL:
                    return
        except StreamClosedError:
            pass
        finally:
            events.unsubscribe(kind, key, queue)

    async def _send(self, event: dict[str, Any]) -> None:
        if self._view is not None:
            event = self._view.event(event)
        self.write(f"event: status\ndata: {json.dumps(event)}\n\n")
        await self.flush()

    def _submission_stream(self, submission_id: int) -> tuple[str, int, int, list[dict[str, Any]]]:
        submission = self.db.get(Submission, submission_id)
        if (
            submission is None
            or submission.deleted_at is not None
            or not (
                self.permissions.has(submission.assignment.lecture_id, "student")
                and self.permissions.can_see_submission(submission)
            )
        ):
            raise api_error(404, f"Submission {submission_id} not found")
        self._view = self.permissions.result_view(submission)
        return "submission", submission.id, submission.assignment_id, [_state(submission)]

    def _assignment_stream(self) -> tuple[str, int, int, list[dict[str, Any]]]:
        code = self.get_query_argument("lecture", None)
        name = self.get_query_argument("assignment", None)
        if not code or not name:
            raise api_error(400, "Give ?submission=ID, or ?lecture=CODE&assignment=NAME")
        lecture = self.lecture_or_404(code, "tutor")
        assignment = self.assignment_or_404(lecture, name)
        pending = self.db.scalars(
            select(Submission).where(
                Submission.assignment_id == assignment.id, Submission.auto_status.in_(("queued", "running"))
            )
        ).all()
        return "assignment", assignment.id, assignment.id, [_state(s) for s in pending]


def _state(submission: Submission) -> dict[str, Any]:
    event: dict[str, Any] = {"submission": submission.id, "auto_status": submission.auto_status}
    if submission.auto_status == "graded":
        event.update(score=submission.score, max_score=submission.max_score)
    return event


handlers = [(r"events", EventsHandler)]

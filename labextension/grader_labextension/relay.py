"""`GET grader/events`: the service's grading-status stream, relayed to the browser's EventSource.

An EventSource cannot send an Authorization header, and the browser must never hold a service
token, so the Jupyter server opens the stream to the service with its own credentials and passes
the frames on unchanged (`id:`, `event:`, `data:`, `retry:`). One upstream connection per open
browser stream: it opens when the browser connects and closes as soon as the browser goes away.
When the service ends its stream (a final state, or a restart) the relay ends the browser's; the
EventSource reconnects with Last-Event-ID, which goes upstream, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import tornado.web
from httpx_sse import ServerSentEvent
from tornado.iostream import StreamClosedError

from grader_client.errors import APIError, ConnectionFailed

from .base import GraderHandler
from .errors import Refusal

# The service's keep-alive comments are not frames the client passes on: the relay sends its own.
KEEPALIVE_SECONDS = 15.0


def sse_frame(sse: ServerSentEvent) -> str:
    """One frame as the service sent it (httpx-sse split it into its fields)."""
    lines = []
    if sse.id:
        lines.append(f"id: {sse.id}")
    if sse.retry is not None:
        lines.append(f"retry: {sse.retry}")
    if sse.data or sse.event != "message":
        if sse.event != "message":
            lines.append(f"event: {sse.event}")
        lines.extend(f"data: {line}" for line in sse.data.split("\n"))
    return "\n".join(lines) + "\n\n"


class EventsRelayHandler(GraderHandler):
    _gone: asyncio.Event | None = None

    def on_connection_close(self) -> None:
        if self._gone is not None:
            self._gone.set()

    @tornado.web.authenticated
    async def get(self) -> None:
        self._gone = asyncio.Event()
        query = self.stream_query()
        last_event_id = self.request.headers.get("Last-Event-ID") or None
        # Refusals and an unreachable service are answered as JSON errors (the EventSource then stops);
        # once the stream runs, the service ending it or failing ends the browser's stream.
        try:
            async with self.grader.client().event_stream(**query, last_event_id=last_event_id) as frames:
                self.grader.open_streams += 1
                try:
                    self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
                    self.set_header("Cache-Control", "no-cache")
                    self.set_header("X-Accel-Buffering", "no")
                    await self.flush()
                    await self.relay(frames)
                finally:
                    self.grader.open_streams -= 1
        except (APIError, ConnectionFailed, StreamClosedError) as e:
            if not self._headers_written:
                raise
            self.log.info("grader: event stream ended: %s", e or type(e).__name__)
        if not self._finished:
            self.finish(set_content_type="text/event-stream; charset=UTF-8")

    def stream_query(self) -> dict[str, object]:
        submission = self.get_query_argument("submission", None)
        if submission is not None:
            if not submission.isascii() or not submission.isdigit() or not 0 < int(submission) < 2**63:
                raise Refusal(400, f"Query 'submission' must be a submission id, got {submission[:40]!r}")
            return {"submission": int(submission)}
        lecture = self.get_query_argument("lecture", None)
        assignment = self.get_query_argument("assignment", None)
        if not lecture or not assignment:
            raise Refusal(400, "Give ?submission=ID, or ?lecture=CODE&assignment=NAME")
        return {"lecture": lecture, "assignment": assignment}

    async def relay(self, frames: AsyncIterator[ServerSentEvent]) -> None:
        """Copy frames until the service ends the stream or the browser goes away."""
        assert self._gone is not None
        pump = asyncio.ensure_future(self.pump(frames))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {pump, gone}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if pump in done or gone in done:
                    break
                try:
                    self.write(": keep-alive\n\n")
                    await self.flush()
                except StreamClosedError:
                    break
        finally:
            for task in (pump, gone):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamClosedError):
                await pump  # an upstream failure propagates: get() ends the stream
            gone.cancel()

    async def pump(self, frames: AsyncIterator[ServerSentEvent]) -> None:
        async for sse in frames:
            self.write(sse_frame(sse))
            await self.flush()

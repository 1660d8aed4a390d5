"""AsyncGraderClient against the real service: one shared instance, concurrent calls, event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest

from grader_client import AsyncGraderClient, errors, models

from .conftest import EXAMPLES, Course

T = TypeVar("T")
SOLVED = EXAMPLES / "submission" / "basics.ipynb"


def slow_notebook(seconds: float) -> bytes:
    """The solved notebook with a first cell that sleeps: grading takes at least `seconds`."""
    notebook = json.loads(SOLVED.read_text())
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": f"import time\ntime.sleep({seconds})",
    }
    notebook["cells"].insert(0, cell)
    return json.dumps(notebook).encode()


def test_one_instance_serves_concurrent_tasks(course: Course) -> None:
    async def main() -> None:
        async with course.async_client("tutor", page_size=1) as client:
            me, lecture, assignments, roles = await asyncio.gather(
                client.whoami(),
                client.lecture("intro"),
                _collect(client.assignments("intro")),
                _collect(client.roles("intro")),
            )
            assert me.name == "tut" and lecture.role == "tutor"
            assert "basics" in [a.name for a in assignments]
            assert {r.user for r in roles} >= {"ins", "tut", "alice", "bob"}
            with pytest.raises(errors.Forbidden, match="instructor role"):
                await client.set_role("intro", "alice", "tutor")
        assert client._http.is_closed

    asyncio.run(main())


async def _collect(iterator: AsyncIterator[T]) -> list[T]:
    return [item async for item in iterator]


def test_submit_and_follow_events(course: Course) -> None:
    async def main() -> None:
        async with course.async_client("student") as alice, course.async_client("tutor") as tutor:
            submission = await alice.submit("intro", "basics", SOLVED)
            states = [e.auto_status async for e in alice.events(submission=submission.id)]
            assert states[-1] == "graded" and set(states) <= {"queued", "running", "graded"}
            graded = await alice.wait("intro", "basics", submission.id)
            assert graded.finished and graded.results_released is False  # basics: manual release
            assert (await tutor.submission("intro", "basics", submission.id)).score == 10.0
            book = await tutor.gradebook("intro", "basics", submission.id)
            assert isinstance(book, models.Gradebook) and book.score == 10.0

    asyncio.run(main())


def test_assignment_stream_replays_what_changed_while_disconnected(course: Course, tmp_path: Path) -> None:
    """Last-Event-ID: a tutor who reconnects gets the grading that ended while they were away."""

    async def main() -> None:
        async with course.async_client("tutor") as tutor, course.async_client("other") as bob:
            first = await bob.submit("intro", "basics", SOLVED)
            stream = tutor.events(lecture="intro", assignment="basics")
            seen = await anext(stream)  # connected: the pending submission's current state
            assert seen.submission == first.id and seen.id
            await stream.aclose()  # disconnected
            missed = tmp_path / "missed.ipynb"
            missed.write_bytes(SOLVED.read_bytes())
            second = await bob.submit("intro", "basics", missed)
            await bob.wait("intro", "basics", second.id)
            # Reconnect as the client does after a drop: the graded submission comes first, although
            # it is no longer pending (a fresh connection shows only pending ones).
            replay = await asyncio.wait_for(_first_events(tutor, seen.id, until=second.id), 30)
            assert [e.auto_status for e in replay if e.submission == second.id] == ["graded"]

    asyncio.run(main())


async def _first_events(
    client: AsyncGraderClient, last_event_id: str, until: int
) -> list[models.StatusEvent]:
    """Open the stream as a reconnect would (Last-Event-ID set) and read until `until` shows up."""
    events = []
    async with client.event_stream(
        lecture="intro", assignment="basics", last_event_id=last_event_id
    ) as frames:
        async for sse in frames:
            if sse.event == "status":
                event = models.StatusEvent.from_json(json.loads(sse.data))
                events.append(event)
                if event.submission == until:
                    return events
    raise AssertionError(f"stream ended without submission {until}: {events}")


def test_a_bad_last_event_id_is_refused(course: Course) -> None:
    import httpx

    r = httpx.get(
        course.svc.api + "events",
        params={"lecture": "intro", "assignment": "basics"},
        headers={"Authorization": f"token {course.tokens['tutor']}", "Last-Event-ID": "yesterday"},
    )
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["message"]


def test_event_stream_refusals_come_before_any_frame(course: Course) -> None:
    """`event_stream()` (for relays) raises the service's refusal on opening, and never reconnects."""

    async def main() -> None:
        async with course.async_client("tutor") as client:
            with pytest.raises(errors.BadRequest, match="Last-Event-ID"):
                async with client.event_stream(lecture="intro", assignment="basics", last_event_id="x"):
                    raise AssertionError("opened")
            with pytest.raises(errors.NotFound):
                async with client.event_stream(submission=10**9):
                    raise AssertionError("opened")
            async with client.event_stream(lecture="intro", assignment="basics") as frames:
                first = await anext(frames)
                assert first.retry == 1000  # the service's frames as sent

    asyncio.run(main())

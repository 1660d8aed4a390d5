"""The SSE relay: frames pass unchanged, one upstream stream per browser stream, closed with it."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EXAMPLES
from .proxy import CountingProxy
from .sse import Stream

SOLUTION = EXAMPLES / "submission" / "basics.ipynb"


async def wait_graded(api, assignment: str, submission: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = await api("GET", f"lectures/intro/assignments/{assignment}/submissions/{submission}")
        assert status == 200, body
        if body["auto_status"] in ("graded", "failed"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"submission {submission} not graded in {timeout} s")


async def submit_solution(api, root: Path, assignment: str, folder: str) -> dict:
    (root / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(SOLUTION, root / folder / "basics.ipynb")
    status, submission = await api(
        "POST", f"lectures/intro/assignments/{assignment}/submissions", {"path": folder}
    )
    assert status == 201, submission
    return submission


@pytest.fixture
def proxy(svc) -> Iterator[CountingProxy]:
    proxy = CountingProxy(svc.port)
    yield proxy
    proxy.close()


async def until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_upstream_streams_follow_browser_streams_and_close_with_them(
    api, login, proxy, jp_http_port, jp_base_url, jp_auth_header, jp_serverapp
) -> None:
    """Each open browser stream holds exactly one upstream stream; closing the browser's closes it."""
    login("tut", url=proxy.url)
    path = f"{jp_base_url}grader/events?lecture=intro&assignment=basics"
    browsers = [await Stream.open(jp_http_port, path, jp_auth_header) for _ in range(3)]
    assert [b.status for b in browsers] == [200, 200, 200]
    assert await until(lambda: proxy.event_streams() == 3), proxy.event_streams()
    connection = jp_serverapp.web_app.settings["grader_labextension_connection"]
    assert connection.open_streams == 3
    browsers[0].close()
    await until(lambda: connection.open_streams == 2)
    assert connection.open_streams == 2
    assert await until(lambda: proxy.event_streams() == 2), proxy.event_streams()
    for browser in browsers[1:]:
        browser.close()
    assert await until(lambda: proxy.event_streams() == 0), proxy.event_streams()
    assert connection.open_streams == 0


async def test_a_tutor_stream_relays_the_service_frames(
    api, login, course, jp_root_dir, jp_http_port, jp_base_url, jp_auth_header
) -> None:
    """An assignment's stream: the service's retry, ids and status events, passed on unchanged."""
    login("tut")
    stream = await Stream.open(
        jp_http_port, f"{jp_base_url}grader/events?lecture=intro&assignment=basics", jp_auth_header
    )
    assert stream.status == 200
    frames = stream.frames()
    first = await anext(frames)
    assert first.retry == 1000  # the service's reconnect delay, relayed
    with course.client("bob") as bob:
        (jp_root_dir / "bob").mkdir()
        shutil.copy(SOLUTION, jp_root_dir / "bob" / "basics.ipynb")
        submitted = bob.submit("intro", "basics", jp_root_dir / "bob")
    seen = []
    async for frame in frames:
        assert frame.event == "status" and frame.id
        event = frame.json()
        if event["submission"] == submitted.id:
            seen.append(event["auto_status"])
            if event["auto_status"] == "graded":
                assert event["score"] == event["max_score"]
                break
    stream.close()
    assert seen[-1] == "graded"


async def test_last_event_id_goes_upstream(api, login, jp_http_port, jp_base_url, jp_auth_header) -> None:
    """The browser's Last-Event-ID reaches the service: a malformed one is the service's 400."""
    login("tut")
    path = f"{jp_base_url}grader/events?lecture=intro&assignment=basics"
    stream = await Stream.open(jp_http_port, path, {**jp_auth_header, "Last-Event-ID": "not-an-id"})
    assert stream.status == 400
    assert stream.error()["message"].startswith("Last-Event-ID must be an event id this service sent")
    stream = await Stream.open(jp_http_port, path, {**jp_auth_header, "Last-Event-ID": "1700000000000"})
    assert stream.status == 200
    stream.close()


async def test_manual_policy_says_graded_without_the_score(
    api, login, jp_root_dir, jp_http_port, jp_base_url, jp_auth_header
) -> None:
    """Under manual feedback the student learns grading finished, and that results come later."""
    login("bob")
    submission = await submit_solution(api, jp_root_dir, "held", "held-work")
    stream = await Stream.open(
        jp_http_port, f"{jp_base_url}grader/events?submission={submission['id']}", jp_auth_header
    )
    assert stream.status == 200
    events = [f.json() async for f in stream.frames() if f.event == "status"]
    stream.close()
    final = events[-1]
    assert final["auto_status"] == "graded"
    assert final.get("score") is None and final.get("results_released") is False
    status, body = await api("GET", f"lectures/intro/assignments/held/submissions/{submission['id']}")
    assert status == 200 and body["score"] is None and body["results_released"] is False


async def test_stream_refusals_are_json_errors(api, login, jp_http_port, jp_base_url, jp_auth_header) -> None:
    """A student cannot follow another assignment's stream or someone else's submission."""
    login("alice")
    for query, status, words in (
        ("lecture=intro&assignment=basics", 403, "tutor"),
        ("submission=999999", 404, "Submission 999999 not found"),
        ("submission=abc", 400, "submission id"),
        ("submission=-1", 400, "submission id"),
        ("", 400, "?submission=ID"),
    ):
        stream = await Stream.open(jp_http_port, f"{jp_base_url}grader/events?{query}", jp_auth_header)
        assert stream.status == status, (query, stream.body)
        error = stream.error()
        assert error["status"] == status and words in error["message"], (query, error)
        stream.close()

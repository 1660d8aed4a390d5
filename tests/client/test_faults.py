"""Network faults, simulated with respx (the service itself is never mocked for behaviour)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import respx

from grader_client import AsyncGraderClient, GraderClient, errors

URL = "http://grader.test/"
API = URL + "api/v1/"


def sse(*events: tuple[str, str]) -> bytes:
    return b"".join(f"id: {i}\nevent: status\ndata: {d}\n\n".encode() for i, d in events)


class Dropped(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends `data`, then loses the connection."""

    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def stream_headers() -> dict[str, str]:
    return {"Content-Type": "text/event-stream"}


RUNNING = '{"submission": 7, "auto_status": "running", "job": 3}'
GRADED = '{"submission": 7, "auto_status": "graded", "job": 3, "score": 10.0, "max_score": 10.0}'


def dropped_then_resumed(requests: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(200, headers=stream_headers(), stream=Dropped(sse(("100", RUNNING))))
        return httpx.Response(200, headers=stream_headers(), content=sse(("105", GRADED)))

    return answer


def test_dropped_event_stream_reconnects_with_last_event_id() -> None:
    requests: list[httpx.Request] = []
    with respx.mock(base_url=API) as mock:
        mock.get("events").mock(side_effect=dropped_then_resumed(requests))
        with GraderClient(URL, "t") as client:
            events = list(client.events(submission=7))
    assert [e.auto_status for e in events] == ["running", "graded"]
    assert events[-1].score == 10.0 and events[-1].id == "105"
    assert "Last-Event-ID" not in requests[0].headers
    assert requests[1].headers["Last-Event-ID"] == "100"
    assert requests[1].url.params["submission"] == "7"


def test_dropped_event_stream_reconnects_async() -> None:
    requests: list[httpx.Request] = []

    async def main() -> list[str]:
        async with AsyncGraderClient(URL, "t") as client:
            return [e.auto_status async for e in client.events(submission=7)]

    with respx.mock(base_url=API) as mock:
        mock.get("events").mock(side_effect=dropped_then_resumed(requests))
        assert asyncio.run(main()) == ["running", "graded"]
    assert requests[1].headers["Last-Event-ID"] == "100"


def test_stream_ended_by_the_service_is_resumed() -> None:
    """A clean end before the final state (the service stopping) is not the end of the subscription."""
    answers = iter(
        [
            httpx.Response(200, headers=stream_headers(), content=sse(("1", RUNNING))),
            httpx.Response(200, headers=stream_headers(), content=sse(("2", GRADED))),
        ]
    )
    with respx.mock(base_url=API) as mock:
        route = mock.get("events").mock(side_effect=lambda request: next(answers))
        with GraderClient(URL, "t") as client:
            assert [e.auto_status for e in client.events(submission=7)] == ["running", "graded"]
    assert route.call_count == 2


def test_server_errors_are_retried_but_refusals_are_not() -> None:
    answers = iter(
        [
            httpx.Response(503, json={"error": "Service Unavailable", "message": "restarting"}),
            httpx.ConnectError("connection refused"),
            httpx.Response(200, headers=stream_headers(), content=sse(("2", GRADED))),
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    with respx.mock(base_url=API) as mock:
        mock.get("events").mock(side_effect=answer)
        with GraderClient(URL, "t") as client:
            assert [e.auto_status for e in client.events(submission=7)] == ["graded"]
    with respx.mock(base_url=API) as mock:
        route = mock.get("events").respond(
            404, json={"error": "Not Found", "message": "Submission 7 not found"}
        )
        with GraderClient(URL, "t") as client, pytest.raises(errors.NotFound, match="Submission 7 not found"):
            list(client.events(submission=7))
        assert route.call_count == 1


def test_reconnecting_gives_up_after_reconnect_timeout() -> None:
    with respx.mock(base_url=API) as mock:
        route = mock.get("events").mock(side_effect=httpx.ConnectError("connection refused"))
        with GraderClient(URL, "t", reconnect_timeout=0.5) as client:
            started = time.monotonic()
            with pytest.raises(errors.ConnectionFailed, match="Cannot reach http://grader.test/") as caught:
                list(client.events(submission=7))
    assert caught.value.exit_code == 3
    assert 0.5 <= time.monotonic() - started < 10 and route.call_count >= 3


def test_timeouts_and_unreachable_service_raise_connection_errors() -> None:
    with respx.mock(base_url=API) as mock:
        mock.get("user").mock(side_effect=httpx.ReadTimeout("timed out"))
        with GraderClient(URL, "t", timeout=0.1) as client, pytest.raises(errors.RequestTimeout) as caught:
            client.whoami()
    assert "did not answer in time" in str(caught.value) and caught.value.exit_code == 3
    with respx.mock(base_url=API) as mock:
        mock.get("user").mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
        with (
            GraderClient(URL, "t") as client,
            pytest.raises(errors.ConnectionFailed, match="Connection refused"),
        ):
            client.whoami()


def test_an_error_page_from_a_proxy_still_gives_a_clear_error() -> None:
    with respx.mock(base_url=API) as mock:
        mock.get("user").respond(502, text="<html>Bad Gateway</html>\n<body>nginx</body>")
        with GraderClient(URL, "t") as client, pytest.raises(errors.ServerError) as caught:
            client.whoami()
    assert caught.value.status == 502 and str(caught.value) == "Bad Gateway: <html>Bad Gateway</html>"
    assert caught.value.exit_code == 3


def test_health_of_a_degraded_service_is_an_answer_not_an_error() -> None:
    with respx.mock(base_url=API) as mock:
        mock.get("health").respond(503, json={"status": "degraded", "database": "unavailable"})
        with GraderClient(URL, "t") as client:
            health = client.health()
    assert not health.ok and health.database == "unavailable"


def test_grader_health_exits_1_when_degraded_and_3_when_unreachable() -> None:
    from click.testing import CliRunner

    from grader_client.cli import cli

    with respx.mock(base_url=API) as mock:
        mock.get("health").respond(503, json={"status": "degraded", "database": "unavailable"})
        result = CliRunner().invoke(cli, ["--url", URL, "health"])
    assert result.exit_code == 1 and "degraded" in result.stdout
    with respx.mock(base_url=API) as mock:
        mock.get("health").mock(side_effect=httpx.ConnectTimeout("timed out"))
        result = CliRunner().invoke(cli, ["--url", URL, "health"])
    assert (
        result.exit_code == 3
        and result.stderr == "grader: http://grader.test/ did not answer in time (ConnectTimeout)\n"
    )

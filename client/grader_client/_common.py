"""What the synchronous and the asynchronous client share: setup, error mapping, event bookkeeping."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import httpx

from . import __version__, operations
from .config import Credentials, resolve_credentials
from .errors import ConnectionFailed, RequestTimeout, ServerError, error_for_status
from .models import StatusEvent

if TYPE_CHECKING:
    from httpx_sse import ServerSentEvent

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 5.0
# The service sends a keep-alive comment every 15 s: this much silence means the connection is dead.
DEFAULT_EVENT_TIMEOUT = 45.0
DEFAULT_RECONNECT_TIMEOUT = 120.0
DEFAULT_PAGE_SIZE = 500


def client_options(
    url: str | None,
    token: str | None,
    credentials: Credentials | None,
    timeout: float | httpx.Timeout | None,
    connect_timeout: float,
) -> tuple[Credentials, dict[str, Any]]:
    """Credentials resolved, and the keyword arguments for httpx.Client / httpx.AsyncClient."""
    if credentials is None:
        credentials = resolve_credentials(url, token)
    headers = {"User-Agent": f"grader-client/{__version__}", "Accept": "application/json"}
    if credentials.token:
        headers["Authorization"] = f"token {credentials.token}"
    if not isinstance(timeout, httpx.Timeout):
        timeout = httpx.Timeout(DEFAULT_TIMEOUT if timeout is None else timeout, connect=connect_timeout)
    options: dict[str, Any] = {"base_url": credentials.api_url, "headers": headers, "timeout": timeout}
    if credentials.api_url.startswith("http://"):
        # httpx builds a TLS context (parsing the whole CA bundle, 50-150 ms) for every new client,
        # even one that only speaks plain HTTP, which never uses it. Redirects are not followed, so
        # this client never reaches an https:// URL; https services keep full verification.
        options["verify"] = False
    return credentials, options


def request_kwargs(call: operations.Call[Any]) -> dict[str, Any]:
    return {
        "params": call.query,
        "json": call.json,
        "content": call.content,
        "headers": call.headers,
    }


def transport_error(error: httpx.TransportError, url: str) -> ConnectionFailed:
    """A network failure as this package's error, with the URL and what happened."""
    if isinstance(error, httpx.TimeoutException):
        return RequestTimeout(f"{url} did not answer in time ({type(error).__name__})", url)
    reason = str(error) or type(error).__name__
    return ConnectionFailed(f"Cannot reach {url}: {reason}", url)


def check(response: httpx.Response, call: operations.Call[Any] | None = None) -> None:
    """Raise the matching APIError unless the status is a success (or one the call accepts)."""
    status = response.status_code
    if status < 400 or (call is not None and status in call.accept):
        return
    error, message, body = _error_body(response)
    raise error_for_status(status, error, message, body)


def _error_body(response: httpx.Response) -> tuple[str, str, Any]:
    reason = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip().splitlines()
        return reason, (text[0][:200] if text else reason), None
    if isinstance(body, dict):
        return str(body.get("error") or reason), str(body.get("message") or reason), body
    return reason, reason, body


class EventStream:
    """Reconnect bookkeeping for one subscription to `GET events`, shared by both clients.

    Remembers the last event id (sent back as Last-Event-ID, so the service replays the current state
    of what changed), ends a submission's stream at its final state, and spaces reconnects with an
    exponential backoff; after `reconnect_timeout` seconds without a working connection it gives up.
    """

    def __init__(self, submission: int | None, reconnect_timeout: float):
        self.submission = submission
        self.reconnect_timeout = reconnect_timeout
        self.last_event_id: str | None = None
        self.finished = False
        self.server_retry: float | None = None
        self._retry = Retry(reconnect_timeout)

    def opened(self) -> None:
        """A connection was accepted: the backoff starts over at the next failure."""
        self._retry.reset()

    def accept(self, sse: ServerSentEvent) -> StatusEvent | None:
        if sse.retry is not None:
            self.server_retry = sse.retry / 1000
        if sse.id:
            self.last_event_id = sse.id
        if sse.event != "status":
            return None
        data = json.loads(sse.data)
        event = StatusEvent.from_json({**data, "id": sse.id or None})
        if self.submission is not None and event.submission == self.submission and event.finished:
            self.finished = True
        return event

    def retry_delay(self, error: Exception | None) -> float:
        """Seconds to wait before reconnecting; raises once reconnecting has failed for too long.

        `error` is None when the service ended the stream cleanly (a restart, a replica going away).
        """
        if error is None:
            return self.server_retry if self.server_retry is not None else 0.2
        return self._retry.delay(error)


class Retry:
    """Exponential backoff (0.2 s doubling up to 5 s) until `timeout` seconds of failures, then the error."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.failures = 0
        self.since: float | None = None

    def reset(self) -> None:
        self.failures = 0
        self.since = None

    def delay(self, error: Exception) -> float:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        elif now - self.since > self.timeout:
            if isinstance(error, ConnectionFailed | ServerError):
                raise error
            raise ConnectionFailed(f"Gave up after {self.timeout:g} s: {error}")
        self.failures += 1
        return min(0.1 * 2**self.failures, 5.0)

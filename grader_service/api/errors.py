"""The API's error type: a status and a message for the client, answered as JSON."""

from __future__ import annotations

from http import HTTPStatus

from tornado import web


class APIError(web.HTTPError):
    """An HTTP error whose message is meant for the client and returned as JSON."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(status, reason=HTTPStatus(status).phrase)
        self.message = message
        # Seconds after which a retry may succeed, sent as Retry-After (429, 503).
        self.retry_after = retry_after


def api_error(status: int, message: str, retry_after: int | None = None) -> APIError:
    return APIError(status, message, retry_after)

"""One exception hierarchy for everything the client can run into.

`APIError` and its subclasses carry the service's answer (status, `error`, `message`), so a caller can
catch `Forbidden` and print its message as is. The `exit_code` of each class is what the `grader`
command exits with: 1 the service refused, 2 a usage or input error, 3 the service cannot be reached or
failed.
"""

from __future__ import annotations

from typing import Any


class GraderError(Exception):
    """Base of every error this package raises."""

    exit_code = 1


class UsageError(GraderError):
    """Bad input found before anything was sent (a missing file, a malformed roster, no credentials)."""

    exit_code = 2


class ConfigError(UsageError):
    """Credentials or configuration files are missing, malformed or unsafe."""


class ConnectionFailed(GraderError):
    """The service could not be reached, or the connection broke."""

    exit_code = 3

    def __init__(self, message: str, url: str | None = None):
        super().__init__(message)
        self.url = url


class RequestTimeout(ConnectionFailed):
    """The service did not answer in time."""


class APIError(GraderError):
    """The service answered with an error status; `message` is the service's own explanation."""

    status: int = 0

    def __init__(self, status: int, error: str, message: str, body: Any = None):
        super().__init__(f"{error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.body = body


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401


class Forbidden(APIError):
    status = 403


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class PayloadTooLarge(APIError):
    status = 413


class UnsupportedMediaType(APIError):
    status = 415


class Unprocessable(APIError):
    status = 422


class TooManyRequests(APIError):
    status = 429


class ServerError(APIError):
    """5xx: the service failed (its log has the details)."""

    status = 500
    exit_code = 3


class ServiceUnavailable(ServerError):
    status = 503


_BY_STATUS: dict[int, type[APIError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        TooManyRequests,
        ServiceUnavailable,
    )
}


def error_for_status(status: int, error: str, message: str, body: Any = None) -> APIError:
    """The most specific error class for an HTTP status."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    exc = cls(status, error, message, body)
    exc.status = status
    return exc

"""What the browser gets when something fails: `{"message": ..., "status": N}`, never a traceback.

The service's refusals pass through with its status and message unchanged, so a student reads the
service's own reason ("You have used all 3 submissions ..."). Failures to reach the service are 503
with the URL and the reason; local checks (paths, overwrites) raise `Refusal`.
"""

from __future__ import annotations

from typing import Any

from grader_client.errors import APIError, ConfigError, ConnectionFailed, GraderError, UsageError


class Refusal(Exception):
    """A request this extension turns down itself, with the status, the message and extra fields."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def not_configured_message(error: ConfigError) -> str:
    return (
        f"The grader service is not configured for this Jupyter server: {error}. "
        "Set GRADER_URL (and GRADER_TOKEN, or run under JupyterHub) in the server's environment."
    )


def unreachable_message(url: str, error: ConnectionFailed) -> str:
    reason = str(error).removeprefix(f"Cannot reach {url}: ").removeprefix(f"{url} ")
    return f"The grader service at {url} is not reachable: {reason}"


def error_reply(error: BaseException, url: str | None) -> tuple[int, dict[str, Any]] | None:
    """(status, body) for an error the browser should read, or None for a bug (logged, 500)."""
    if isinstance(error, Refusal):
        return error.status, {"message": error.message, "status": error.status, **error.extra}
    if isinstance(error, APIError):
        return error.status, {"message": error.message, "status": error.status}
    if isinstance(error, ConfigError):
        return 503, {"message": not_configured_message(error), "status": 503}
    if isinstance(error, ConnectionFailed):
        where = error.url or url or "(unknown URL)"
        return 503, {"message": unreachable_message(where, error), "status": 503}
    if isinstance(error, UsageError | GraderError):
        # Found by the client before sending: a folder with no notebook, a file it cannot read.
        return 400, {"message": str(error), "status": 400}
    return None

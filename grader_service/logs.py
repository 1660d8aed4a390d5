"""Log lines for people and for log collectors, and the request id that ties them to a response.

With `--log-format json` (`c.GraderService.log_output = "json"`) every line on stderr is one JSON
object: `time`, `level`, `logger`, `message`, and when known `request_id` and `submission_id`
(plus `exception` with the traceback). Log collectors (Loki, Fluent Bit, Elasticsearch) then need
no parsing rules, and a multi-line traceback stays one record.

A request's id is taken from its `X-Request-ID` header when that is well formed (a proxy or the
caller chose it, so their logs and ours name the same request), else generated; the response
carries it back in `X-Request-ID`. Ids live in context variables: a tornado handler runs in its
own asyncio task, and a grading job in its worker's, so concurrent requests and jobs never see
each other's ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
# What a caller may choose as a request id: printable, no spaces or quotes, short. Anything else
# (a header injection attempt, a megabyte of text) is replaced by a generated id.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}\Z")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
submission_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("submission_id", default=None)

LOG_OUTPUTS = ("text", "json")


def choose_request_id(incoming: str | None) -> str:
    """The caller's id if it is well formed, else a new random one (32 hex digits)."""
    if incoming is not None and REQUEST_ID_RE.match(incoming):
        return incoming
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), default=str, ensure_ascii=False)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON fields of a record: the fixed ones, then the ids in effect where it was logged."""
    fields: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    rid = getattr(record, "request_id", None) or request_id.get()
    if rid is not None:
        fields["request_id"] = rid
    sid = getattr(record, "submission_id", None) or submission_id.get()
    if sid is not None:
        fields["submission_id"] = sid
    if record.exc_info:
        fields["exception"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        fields["exception"] = record.exc_text
    return fields


def json_logging_config(config: dict[str, Any], level: str | int) -> dict[str, Any]:
    """traitlets' logging config changed to write JSON lines, from every logger.

    Besides the application's own logger, the root logger gets the same handler: tornado's,
    SQLAlchemy's and the kubernetes client's records then come out as JSON too, rather than as
    plain text among the JSON lines.
    """
    config["formatters"]["console"] = {"()": f"{__name__}.JsonFormatter"}
    if "console" in config.get("handlers", {}):
        config["root"] = {"handlers": ["console"], "level": logging.getLevelName(level)}
    return config


__all__ = [
    "LOG_OUTPUTS",
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "choose_request_id",
    "json_logging_config",
    "record_fields",
    "request_id",
    "submission_id",
]

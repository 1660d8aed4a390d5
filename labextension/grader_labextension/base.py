"""The base of every handler: the shared connection, the Lab root, JSON bodies and error replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler

from .connection import GraderConnection
from .errors import Refusal, error_reply

SETTINGS_KEY = "grader_labextension_connection"


class GraderHandler(APIHandler):
    @property
    def grader(self) -> GraderConnection:
        return self.settings[SETTINGS_KEY]

    @property
    def root(self) -> Path:
        """The Lab root: where the file browser starts, and what paths from the browser are relative to."""
        return Path(self.contents_manager.root_dir)

    def json_body(self, allowed: set[str]) -> dict[str, Any]:
        """The request's JSON object ({} when empty); 400 for anything else or an unknown field."""
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise Refusal(400, "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise Refusal(400, "The request body must be a JSON object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise Refusal(
                400, f"Unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        return body

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        reply = error_reply(exc_info[1], self.grader.url) if exc_info else None
        if reply is None:
            super().write_error(status_code, **kwargs)
            return
        status, body = reply
        self.set_status(status)
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Refusals are answers, not failures: one log line, no traceback."""
        if value is not None and error_reply(value, self.grader.url) is not None:
            self.log.info("grader: %s %s -> %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

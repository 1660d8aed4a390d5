"""The base handler: JSON in and out, authentication, body limits, errors, pagination.

Every API handler derives from :class:`APIHandler`. Bodies are streamed so that an oversized
or unauthenticated upload is refused from its headers, before the service reads it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from tornado import web

from .. import safejson
from ..orm import Assignment, Lecture, Submission, User
from .errors import APIError, api_error
from .params import ID_MAX, INT64_MAX, InvalidInteger, parse_id, parse_integer
from .permissions import Permissions, lecture_not_found

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..app import GraderService
    from ..auth import Identity

# \Z, not $: "$" also matches before a final newline.
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?\Z")
USERNAME_RE = re.compile(r"^[^\s/\\\x00-\x1f]{1,255}\Z")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
JSON_BODY_LIMIT = 1024 * 1024


_ID_HINT = f": ids are whole numbers from 1 to {ID_MAX}, written with the digits 0-9"


def isoformat(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@web.stream_request_body
class APIHandler(web.RequestHandler):
    """JSON API base. Subclasses set `auth_required` and `body_limit` as needed."""

    auth_required = True
    # None: use the application's max_request_size (uploads); otherwise a cap for JSON bodies.
    body_limit: int | None = JSON_BODY_LIMIT

    identity: Identity | None = None
    user: User | None = None

    @property
    def service(self) -> GraderService:
        return self.settings["grader_service"]

    @property
    def db(self) -> Session:
        if not hasattr(self, "_db"):
            self._db = self.service.session_factory()
        return self._db

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    # --- request lifecycle -------------------------------------------------------------------

    def check_xsrf_cookie(self) -> None:
        """Tornado calls this before `prepare`, when the caller is not known yet; we check later."""

    async def prepare(self) -> None:
        self.service.requests_in_flight += 1
        self._counted = True
        self._chunks: list[bytes] = []
        self._received = 0
        limit = self.effective_body_limit
        length = self.request.headers.get("Content-Length")
        if length is not None:
            if not re.fullmatch(r"[0-9]{1,20}", length, re.ASCII):
                raise api_error(400, "Invalid Content-Length header")
            if int(length) > limit:
                raise api_error(413, f"Request body of {length} bytes exceeds the limit of {limit} bytes")
        self.request.connection.set_max_body_size(limit)
        identity = await self.service.authenticator.authenticate(self, self.db)
        if identity is not None:
            self.identity = identity
            self.user = self.service.record_identity(self.db, identity)
            if identity.via == "cookie" and self.request.method not in ("GET", "HEAD", "OPTIONS"):
                web.RequestHandler.check_xsrf_cookie(self)
        elif self.auth_required:
            login = self.service.authenticator.login_url(self)
            hint = f", or log in at {login}" if login else ""
            raise api_error(401, f"Authentication required: send 'Authorization: token <token>'{hint}")
        self._prepared = True

    @property
    def effective_body_limit(self) -> int:
        return self.body_limit if self.body_limit is not None else self.service.max_request_size

    def data_received(self, chunk: bytes) -> None:
        # A chunked body has no Content-Length to check up front: stop keeping it past the limit.
        self._received += len(chunk)
        if self._received <= self.effective_body_limit:
            self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        if self._received > self.effective_body_limit:
            raise api_error(413, f"Request body exceeds the limit of {self.effective_body_limit} bytes")
        if not hasattr(self, "_body"):
            self._body = b"".join(self._chunks)
            self._chunks = []
        return self._body

    def on_finish(self) -> None:
        if hasattr(self, "_db"):
            self._db.close()
        if getattr(self, "_counted", False):
            self.service.requests_in_flight -= 1

    # --- JSON --------------------------------------------------------------------------------

    def json_body(self) -> dict[str, Any]:
        if not self.body:
            raise api_error(400, "Request body is empty; expected a JSON object")
        try:
            value = safejson.loads(self.body, safejson.MAX_BODY_DEPTH, strict=True)
        except safejson.JSONError as e:
            raise api_error(400, f"Request body is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise api_error(400, "Request body must be a JSON object")
        return value

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(value, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason = self._reason
        message = reason
        if isinstance(exc, APIError):
            message = exc.message
        elif status_code >= 500:
            message = "Internal server error; the details are in the service's log"
        elif status_code == 403 and "_xsrf" in str(exc):
            message = (
                "XSRF check failed: cookie-authenticated requests must send the _xsrf cookie's value "
                "in an X-XSRFToken header"
            )
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            # tornado's own refusals (a malformed query string, invalid UTF-8 in the URL): say which.
            message = exc.log_message % exc.args if exc.args else exc.log_message
        # Refused in prepare(): tornado has not read the body and will close the connection. Say so,
        # or a keep-alive client's next request on that connection dies with a reset.
        if not getattr(self, "_prepared", False) and (
            self.request.headers.get("Content-Length", "0") != "0"
            or "Transfer-Encoding" in self.request.headers
        ):
            self.set_header("Connection", "close")
        if status_code == 405:
            allowed = self.allowed_methods()
            self.set_header("Allow", ", ".join(allowed))
            message = f"{self.request.method} is not allowed here; allowed: {', '.join(allowed)}"
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": reason, "message": message}))

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The HTTP methods this handler implements (for 405's Allow header)."""
        return [
            method
            for method in cls.SUPPORTED_METHODS
            if getattr(cls, method.lower(), None) is not getattr(web.RequestHandler, method.lower(), None)
        ]

    def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001 - tornado's signature
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return  # expected client errors are answered, not logged as tracebacks
        super().log_exception(typ, value, tb)

    # --- pagination --------------------------------------------------------------------------

    def pagination(self) -> tuple[int, int]:
        offset = self.int_argument("offset", 0, minimum=0)
        limit = self.int_argument("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        return offset, limit

    def int_argument(self, name: str, default: int, minimum: int = 0, maximum: int = INT64_MAX) -> int:
        raw = self.get_query_argument(name, None, strip=False)
        if raw is None:
            return default
        try:
            return parse_integer(raw, minimum, maximum)
        except InvalidInteger as e:
            raise api_error(400, f"Query argument {name!r} {e}") from None

    def choice_argument(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
        raw = self.get_query_argument(name, None, strip=False)
        if raw is None:
            return default
        if raw not in choices:
            raise api_error(
                400, f"Query argument {name!r} must be one of {', '.join(choices)}, got {raw[:40]!r}"
            )
        return raw

    def bool_argument(self, name: str, default: bool = False) -> bool:
        raw = self.get_query_argument(name, None, strip=False)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise api_error(400, f"Query argument {name!r} must be true or false, got {raw!r}")

    def write_page(self, items: list[Any], total: int, offset: int, limit: int) -> None:
        self.write_json({"items": items, "offset": offset, "limit": limit, "total": total})

    # --- lookups with permissions ------------------------------------------------------------

    @property
    def permissions(self) -> Permissions:
        if not hasattr(self, "_permissions"):
            assert self.user is not None and self.identity is not None
            self._permissions = Permissions(self.db, self.user, self.identity.admin)
        return self._permissions

    def lecture_or_404(self, code: str, minimum: str = "student") -> Lecture:
        """The lecture, if the caller holds at least `minimum` in it (admins hold everything).

        Without any role in it, the caller is told it does not exist, as for a missing one.
        """
        if not SLUG_RE.match(code):
            raise lecture_not_found(code)
        lecture = self.db.scalars(select(Lecture).where(Lecture.code == code)).one_or_none()
        if lecture is None:
            raise lecture_not_found(code)
        self.permissions.require(lecture, minimum)
        return lecture

    def assignment_or_404(self, lecture: Lecture, name: str) -> Assignment:
        assignment = None
        if SLUG_RE.match(name):
            assignment = self.db.scalars(
                select(Assignment).where(Assignment.lecture_id == lecture.id, Assignment.name == name)
            ).one_or_none()
        if assignment is None or not self.permissions.can_see_assignment(assignment):
            raise api_error(404, f"Assignment {name!r} not found in lecture {lecture.code!r}")
        return assignment

    def submission_or_404(self, assignment: Assignment, submission_id: str) -> Submission:
        """Students find only their own submissions; anyone else's id is simply not found."""
        submission = None
        number = parse_id(submission_id)
        if number is not None:
            submission = self.db.get(Submission, number)
        if (
            submission is None
            or submission.assignment_id != assignment.id
            or submission.deleted_at is not None
            or not self.permissions.can_see_submission(submission)
        ):
            raise api_error(404, f"Submission {submission_id} not found" + _ID_HINT * (number is None))
        return submission


class NotFoundHandler(APIHandler):
    """Unknown URLs get a JSON 404, never an HTML page."""

    auth_required = False

    async def prepare(self) -> None:
        raise api_error(404, f"No API endpoint at {self.request.path}")


__all__ = ["SLUG_RE", "USERNAME_RE", "APIError", "APIHandler", "NotFoundHandler", "api_error", "isoformat"]

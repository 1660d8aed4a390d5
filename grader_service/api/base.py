"""The base handler: JSON in and out, authentication, request bodies and their limits, errors.

Every API handler derives from :class:`APIHandler`. A request goes through three steps:

1. `prepare()`, as soon as the headers are in: the body's size from its headers, a bounded wait for a
   database connection (`dbpool`), authentication, the per-user upload cap. A request that brings a body
   then ends its database transaction, so no pooled connection waits while the client sends the body.
2. The body, streamed into a `RequestBody` (memory while small, then an unnamed temporary file), which
   must keep arriving at `body_min_rate` once its first `body_timeout` seconds are over (else 408).
3. The handler's method (get, post, ...), once the body is complete.

A refusal in step 1 of a request that brings a body is answered at once with `Connection: close`
(tornado does not read a body nobody wants, so the connection cannot be used again). A refusal of a
request without a body is answered in step 3, which keeps a keep-alive connection usable.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from tornado import web
from tornado.http1connection import HTTP1Connection

from .. import logs, safejson
from ..httpserver import RETRY_AFTER_SECONDS
from ..orm import Assignment, Lecture, Role, Submission, User
from ..states import RoleName
from .body import RequestBody
from .errors import APIError, api_error
from .params import ID_MAX, INT64_MAX, InvalidInteger, parse_id, parse_integer
from .permissions import Permissions, lecture_not_found

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from ..app import GraderService
    from ..auth import Identity

# \Z, not $: "$" also matches before a final newline.
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?\Z")
USERNAME_RE = re.compile(r"^[^\s/\\\x00-\x1f]{1,255}\Z")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
JSON_BODY_LIMIT = 1024 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


_ID_HINT = f": ids are whole numbers from 1 to {ID_MAX}, written with the digits 0-9"


def isoformat(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@web.stream_request_body
class APIHandler(web.RequestHandler):
    """JSON API base. Subclasses set `auth_required`, `authenticates` and `body_limit` as needed."""

    auth_required = True
    # False: no authentication and no database wait before the method (health, the spec, 404s).
    authenticates = True
    # None: use the application's max_request_size (an upload); otherwise a cap for JSON bodies.
    body_limit: int | None = JSON_BODY_LIMIT

    identity: Identity | None = None
    user: User | None = None

    _request_body: RequestBody | None = None
    _body_expected = False
    _body_complete = False
    _body_timer: asyncio.TimerHandle | None = None
    _refusal: web.HTTPError | None = None
    _in_flight = False
    _upload_of: int | None = None
    _connection_closed = False
    _request_id: str | None = None

    @property
    def service(self) -> GraderService:
        return self.settings["grader_service"]

    @property
    def db(self) -> Session:
        if not hasattr(self, "_db"):
            self._db = self.service.session_factory()
        return self._db

    def release_db(self) -> None:
        """End the session's transaction, so that its pooled connection goes back before a long wait.

        Call it before waiting on a client or on slow work (git, a conversion). Rows already loaded stay
        usable (sessions do not expire them on commit); the next query takes a connection again.
        """
        db = getattr(self, "_db", None)
        if db is None or not db.in_transaction():
            return
        if db.new or db.dirty or db.deleted:
            raise RuntimeError("release_db() would commit unsaved changes; commit or roll back first")
        db.commit()

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        self.set_header(logs.REQUEST_ID_HEADER, self.request_id)

    @property
    def request_id(self) -> str:
        """This request's id: the caller's X-Request-ID if well formed, else a new one (`logs`)."""
        if self._request_id is None:
            self._request_id = logs.choose_request_id(self.request.headers.get(logs.REQUEST_ID_HEADER))
        return self._request_id

    # --- request lifecycle -------------------------------------------------------------------

    def check_xsrf_cookie(self) -> None:
        """Tornado calls this before `prepare`, when the caller is not known yet; we check later."""

    async def prepare(self) -> None:
        logs.request_id.set(self.request_id)  # this request's task: its log lines carry the id
        service = self.service
        service.requests_in_flight += 1
        self._in_flight = True
        self._route_method_after_body()
        headers = self.request.headers
        chunked = "Transfer-Encoding" in headers
        length = headers.get("Content-Length")
        if length is not None and not re.fullmatch(r"[0-9]{1,20}", length, re.ASCII):
            self._body_expected = True  # of unknown length: the connection cannot be used again
            raise api_error(400, "Invalid Content-Length header")
        self._body_expected = chunked or bool(length and int(length) > 0)
        limit = self.effective_body_limit
        if length is not None and int(length) > limit:
            self.refuse(api_error(413, f"Request body of {length} bytes exceeds the limit of {limit} bytes"))
            return
        if self._body_expected:
            self._request_body = RequestBody(limit, service.body_spool_size, service.layout.tmp_dir())
            # Tornado answers a chunked body past its own limit with a bare 400 and no body; with none,
            # data_received answers 413 in JSON. Its body timeout is only a backstop for the minimum rate.
            connection = self.request.connection
            assert isinstance(connection, HTTP1Connection)  # the server speaks HTTP/1 only (httpserver.py)
            connection.set_max_body_size(limit if not chunked else sys.maxsize)
            connection.set_body_timeout(service.body_timeout + 2 * limit / service.body_min_rate)
        if self.authenticates:
            try:
                await self._authenticate()
            except web.HTTPError as e:
                self.refuse(e)
            except sa_exc.TimeoutError:
                self.refuse(self.database_busy())
        if self._connection_closed:
            self._end_request()  # the client left while we waited; tornado will not call on_finish
        elif self._body_expected and self._refusal is None:
            self._start_body_clock()

    async def _authenticate(self) -> None:
        service = self.service
        if not await service.db_gate.wait(service.db_wait_timeout):
            raise self.database_busy()
        identity = await service.authenticator.authenticate(self, self.db)
        if identity is not None:
            self.identity = identity
            self.user = service.record_identity(self.db, identity)
            if identity.via == "cookie" and self.request.method not in SAFE_METHODS:
                web.RequestHandler.check_xsrf_cookie(self)
        elif self.auth_required:
            raise self.login_required()
        if self._body_expected:
            # The client may take its time with the body: hold no database connection meanwhile.
            self.release_db()
            if self.body_limit is None and self.user is not None:
                self._count_upload(self.user.id)

    def login_required(self) -> APIError:
        login = self.service.authenticator.login_url(self)
        hint = f", or log in at {login}" if login else ""
        return api_error(401, f"Authentication required: send 'Authorization: token <token>'{hint}")

    def require_login(self) -> None:
        """401 unless the request is authenticated (a handler with `auth_required` has checked already)."""
        if self.user is None or self.identity is None:
            raise self.login_required()

    def _count_upload(self, user_id: int) -> None:
        service = self.service
        running = service.uploads_in_flight.get(user_id, 0)
        if running >= service.max_uploads_per_user:
            raise api_error(
                429,
                f"You have {running} uploads in progress, the most one user may have at once "
                f"(c.GraderService.max_uploads_per_user = {service.max_uploads_per_user}); "
                "send this one when one of them is done",
                retry_after=RETRY_AFTER_SECONDS,
            )
        service.uploads_in_flight[user_id] = running + 1
        self._upload_of = user_id

    def refuse(self, error: web.HTTPError) -> None:
        """Answer `error`: now if a body is on its way (the connection then closes), else once the empty
        body is read, which keeps the client's keep-alive connection usable."""
        if self._body_expected:
            raise error
        self._refusal = error

    def _route_method_after_body(self) -> None:
        """Have tornado's call of the handler's method (made once the body is in) go through
        `_run_method` first: an instance attribute shadows the class's method of that name."""
        verb = self.request.method.lower()
        method = getattr(self, verb)

        async def after_body(*args: Any, **kwargs: Any) -> None:
            await self._run_method(method, args, kwargs)

        setattr(self, verb, after_body)

    async def _run_method(self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> None:
        self._body_complete = True
        self._stop_body_clock()
        if self._refusal is not None:
            raise self._refusal
        # The connection was given back while the body arrived: wait for one again, without blocking.
        waited = self._body_expected and self.authenticates
        if waited and not await self.service.db_gate.wait(self.service.db_wait_timeout):
            raise self.database_busy()
        result = method(*args, **kwargs)
        if result is not None:
            await result

    def database_busy(self) -> APIError:
        capacity = self.service.db_gate.capacity
        return api_error(
            503,
            f"The database is busy: all {capacity} connections are in use; retry in a moment",
            retry_after=RETRY_AFTER_SECONDS,
        )

    @property
    def effective_body_limit(self) -> int:
        return self.body_limit if self.body_limit is not None else self.service.max_request_size

    def data_received(self, chunk: bytes) -> None:
        body = self._request_body
        if body is None or self._finished:
            return
        body.write(chunk)
        if body.exceeded:
            # Only a chunked body, which has no Content-Length to check up front, gets here.
            self._stop_body_clock()
            self.answer(api_error(413, f"Request body exceeds the limit of {body.limit} bytes"))

    def _start_body_clock(self) -> None:
        loop = asyncio.get_running_loop()
        self._body_started = loop.time()
        self._body_timer = loop.call_at(self._body_started + self.service.body_timeout, self._check_body_rate)

    def _stop_body_clock(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body_rate(self) -> None:
        """A body gets `body_timeout` seconds plus one second per `body_min_rate` bytes that arrive."""
        self._body_timer = None
        if self._body_complete or self._finished or self._request_body is None:
            return
        service = self.service
        loop = asyncio.get_running_loop()
        received = self._request_body.size
        deadline = self._body_started + service.body_timeout + received / service.body_min_rate
        if loop.time() < deadline:
            self._body_timer = loop.call_at(deadline, self._check_body_rate)
            return
        self.answer(
            api_error(
                408,
                f"The request body arrived too slowly: {received} bytes in "
                f"{loop.time() - self._body_started:.0f} s. A body may take {service.body_timeout:g} s plus "
                f"1 s for every {service.body_min_rate} bytes (c.GraderService.body_timeout, body_min_rate)",
            )
        )

    def answer(self, error: web.HTTPError) -> None:
        """Send `error` from outside the handler's method (a timer, a body chunk)."""
        self.send_error(error.status_code, exc_info=(type(error), error, None))

    @property
    def body(self) -> bytes:
        """The whole request body (a JSON body: small)."""
        if not hasattr(self, "_body"):
            self._body = self._request_body.read() if self._request_body is not None else b""
        return self._body

    def body_file(self) -> Any:
        """The request body from its first byte, as a seekable binary file (an upload: maybe large)."""
        return self._request_body.file() if self._request_body is not None else io.BytesIO()

    def on_finish(self) -> None:
        self._end_request()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._connection_closed = True
        if not self._body_complete:
            # Gone before the body was in: tornado will not run the method, nor call on_finish.
            # (Once the method runs, it finishes on its own and on_finish cleans up.)
            self._end_request()

    def _end_request(self) -> None:
        """Give back everything the request held; safe to call more than once."""
        self._stop_body_clock()
        if self._upload_of is not None:
            uploads = self.service.uploads_in_flight
            uploads[self._upload_of] -= 1
            if uploads[self._upload_of] <= 0:
                del uploads[self._upload_of]
            self._upload_of = None
        body, self._request_body = self._request_body, None
        if body is not None and body.on_disk:
            asyncio.get_running_loop().run_in_executor(None, body.close)  # off the event loop
        elif body is not None:
            body.close()
        if hasattr(self, "_db"):
            self._db.close()
        if self._in_flight:
            self.service.requests_in_flight -= 1
            self._in_flight = False

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
        if isinstance(exc, sa_exc.TimeoutError):
            # The pool ran dry between the gate and a query: busy, not broken.
            exc = self.database_busy()
            status_code = exc.status_code
            self.set_status(status_code, exc.reason)
        reason = self._reason
        message = reason
        if isinstance(exc, APIError):
            message = exc.message
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(exc.retry_after))
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
        if not self._body_complete:
            # Answered before the request was read to its end: tornado closes the connection after this
            # response rather than read a body nobody wants. Say so, or a keep-alive client's next
            # request on this connection fails.
            self.set_header("Connection", "close")
            self._forget_body()
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

    def _forget_body(self) -> None:
        """Tell tornado that no body follows a request answered before its body was read.

        Tornado reads the framing from these very headers once prepare() is over: without this it would
        judge a body nobody wants, and answer one too long or malformed with a second, bare 400 after
        ours. (A body it has started to read already is read and dropped until the connection closes.)
        """
        headers = self.request.headers
        if "Transfer-Encoding" in headers or "Content-Length" in headers:
            headers.pop("Transfer-Encoding", None)
            headers["Content-Length"] = "0"

    def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001 - tornado's signature
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return  # expected client errors are answered, not logged as tracebacks
        if isinstance(value, APIError | sa_exc.TimeoutError):
            # Deliberate answers (database busy, the hub unreachable): one line, no traceback.
            message = value.message if isinstance(value, APIError) else str(value)
            self.service.log.warning("%s %s: %s", self.request.method, self.request.uri, message)
            return
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
    def me(self) -> User:
        """The caller, in a method declared with `needs_login`, `needs_admin` or `needs_role`."""
        if self.user is None:
            raise self.login_required()
        return self.user

    @property
    def permissions(self) -> Permissions:
        if not hasattr(self, "_permissions"):
            assert self.user is not None and self.identity is not None
            self._permissions = Permissions(self.db, self.user, self.identity.admin)
        return self._permissions

    def lecture_or_404(self, code: str, minimum: RoleName = RoleName.STUDENT) -> Lecture:
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
        if assignment is None or not self.permissions.may_see_assignment(assignment):
            raise api_error(404, f"Assignment {name!r} not found in lecture {lecture.code!r}")
        return assignment

    def roster_student(self, lecture: Lecture, name: str, staff_refused: str) -> User:
        """The student `name` of the lecture: 404 for anyone not on its roster, 400 for its staff
        (`staff_refused` says why the request is for students only)."""
        if not USERNAME_RE.match(name):
            raise api_error(400, f"Invalid user name {name!r}")
        user = self.db.scalars(select(User).where(User.name == name)).one_or_none()
        role = self.db.get(Role, (user.id, lecture.id)) if user is not None else None
        if user is None or role is None:
            raise api_error(404, f"User {name!r} is not on the roster of lecture {lecture.code!r}")
        if role.role != RoleName.STUDENT:
            raise api_error(
                400, f"User {name!r} is a {role.role} in lecture {lecture.code!r}: {staff_refused}"
            )
        return user

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
            or not self.permissions.may_see_submission(submission)
        ):
            raise api_error(404, f"Submission {submission_id} not found" + _ID_HINT * (number is None))
        logs.submission_id.set(submission.id)
        return submission


class NotFoundHandler(APIHandler):
    """Unknown URLs get a JSON 404, never an HTML page."""

    auth_required = False
    authenticates = False

    async def prepare(self) -> None:
        await super().prepare()
        self.refuse(api_error(404, f"No API endpoint at {self.request.path}"))


__all__ = ["SLUG_RE", "USERNAME_RE", "APIError", "APIHandler", "NotFoundHandler", "api_error", "isoformat"]

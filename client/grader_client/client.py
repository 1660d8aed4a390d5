"""`GraderClient`: the synchronous client, one method per operation of the service's API.

    with GraderClient() as client:                 # credentials as `grader` finds them
        submission = client.submit("intro", "basics", "basics.ipynb")
        for event in client.events(submission=submission.id):
            print(event.auto_status)

Errors are `grader_client.errors` exceptions; list methods iterate over every page.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from . import _common, models, operations, uploads
from .config import Credentials
from .errors import ConnectionFailed, ServerError
from .operations import UNSET, Call, Page

T = TypeVar("T")


class GraderClient:
    """A connection to one grader-service. Thread-safe for concurrent calls (one httpx.Client)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        credentials: Credentials | None = None,
        timeout: float | httpx.Timeout | None = None,
        connect_timeout: float = _common.DEFAULT_CONNECT_TIMEOUT,
        event_timeout: float = _common.DEFAULT_EVENT_TIMEOUT,
        reconnect_timeout: float = _common.DEFAULT_RECONNECT_TIMEOUT,
        page_size: int = _common.DEFAULT_PAGE_SIZE,
        transport: httpx.BaseTransport | None = None,
    ):
        self.credentials, options = _common.client_options(url, token, credentials, timeout, connect_timeout)
        self.event_timeout = event_timeout
        self.reconnect_timeout = reconnect_timeout
        self.page_size = page_size
        self._http = httpx.Client(transport=transport, **options)

    @property
    def url(self) -> str:
        return self.credentials.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GraderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.url, **_common.request_kwargs(call))
        except httpx.TransportError as e:
            raise _common.transport_error(e, self.url) from None
        _common.check(response, call)
        return call.parse(response)

    def _paginate(self, build: Callable[[int, int], Call[Page[T]]]) -> Iterator[T]:
        offset = 0
        while True:
            page = self._send(build(offset, self.page_size))
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    # --- service -----------------------------------------------------------------------------

    def health(self) -> models.Health:
        """The service's health; a degraded service answers too (`Health.ok` is False)."""
        return self._send(operations.get_health())

    def liveness(self) -> dict[str, Any]:
        """Whether the process serves (`{"status": "ok", "version": ...}`), without asking the database."""
        return self._send(operations.get_liveness())

    def metrics(self) -> str:
        """This process's Prometheus metrics (text format); for admins, or with the scrape token."""
        return self._send(operations.get_metrics())

    def openapi(self) -> str:
        """The service's OpenAPI description (YAML text)."""
        return self._send(operations.get_openapi())

    def whoami(self) -> models.User:
        """The caller: name, admin flag and role per lecture."""
        return self._send(operations.get_user())

    # --- lectures and roles ------------------------------------------------------------------

    def lectures(self, state: str | None = None) -> Iterator[models.Lecture]:
        """Lectures the caller has a role in (admins: all), optionally only `active` or `complete`."""
        return self._paginate(lambda o, n: operations.list_lectures(state, offset=o, limit=n))

    def create_lecture(self, code: str, name: str | None = None, state: str | None = None) -> models.Lecture:
        return self._send(operations.create_lecture(code, name, state))

    def lecture(self, code: str) -> models.Lecture:
        return self._send(operations.get_lecture(code))

    def update_lecture(self, code: str, *, name: str = UNSET, state: str = UNSET) -> models.Lecture:
        return self._send(operations.update_lecture(code, name=name, state=state))

    def delete_lecture(self, code: str) -> None:
        return self._send(operations.delete_lecture(code))

    def roles(self, lecture: str, role: str | None = None) -> Iterator[models.Role]:
        return self._paginate(lambda o, n: operations.list_roles(lecture, role, offset=o, limit=n))

    def set_role(self, lecture: str, user: str, role: str) -> models.Role:
        """Grant or change `user`'s role (student, tutor, instructor); unknown users are created."""
        return self._send(operations.set_role(lecture, user, role))

    def remove_role(self, lecture: str, user: str) -> None:
        return self._send(operations.delete_role(lecture, user))

    # --- assignments -------------------------------------------------------------------------

    def assignments(self, lecture: str) -> Iterator[models.Assignment]:
        return self._paginate(lambda o, n: operations.list_assignments(lecture, offset=o, limit=n))

    def create_assignment(
        self,
        lecture: str,
        name: str,
        *,
        title: str | None = UNSET,
        kind: str = UNSET,
        due_date: datetime | str | None = UNSET,
        late_until: datetime | str | None = UNSET,
        late_penalty: float = UNSET,
        max_submissions: int | None = UNSET,
        grading_policy: str = UNSET,
        feedback_policy: str = UNSET,
        settings: dict[str, Any] = UNSET,
    ) -> models.Assignment:
        return self._send(
            operations.create_assignment(
                lecture,
                name,
                title=title,
                kind=kind,
                due_date=due_date,
                late_until=late_until,
                late_penalty=late_penalty,
                max_submissions=max_submissions,
                grading_policy=grading_policy,
                feedback_policy=feedback_policy,
                settings=settings,
            )
        )

    def assignment(self, lecture: str, name: str) -> models.Assignment:
        return self._send(operations.get_assignment(lecture, name))

    def update_assignment(
        self,
        lecture: str,
        name: str,
        *,
        status: str = UNSET,
        title: str | None = UNSET,
        kind: str = UNSET,
        due_date: datetime | str | None = UNSET,
        late_until: datetime | str | None = UNSET,
        late_penalty: float = UNSET,
        max_submissions: int | None = UNSET,
        grading_policy: str = UNSET,
        feedback_policy: str = UNSET,
        settings: dict[str, Any] = UNSET,
    ) -> models.Assignment:
        """Change the given fields; `status="released"` releases the assignment to the students."""
        return self._send(
            operations.update_assignment(
                lecture,
                name,
                status=status,
                title=title,
                kind=kind,
                due_date=due_date,
                late_until=late_until,
                late_penalty=late_penalty,
                max_submissions=max_submissions,
                grading_policy=grading_policy,
                feedback_policy=feedback_policy,
                settings=settings,
            )
        )

    def release_assignment(self, lecture: str, name: str) -> models.Assignment:
        return self.update_assignment(lecture, name, status="released")

    def delete_assignment(self, lecture: str, name: str) -> None:
        return self._send(operations.delete_assignment(lecture, name))

    def download_assignment(self, lecture: str, name: str, version: str | None = None) -> bytes:
        """The assignment as zip bytes: the student version, or (staff, by default) the source."""
        return self._send(operations.download_assignment(lecture, name, version))

    def upload_assignment(self, lecture: str, name: str, path: Path | str) -> models.Assignment:
        """Upload the source: a directory (zipped here), a .zip file or one notebook."""
        upload = self._pack(lecture, name, path)
        return self._send(
            operations.upload_assignment(lecture, name, upload.data, upload.content_type, upload.filename)
        )

    # --- submissions -------------------------------------------------------------------------

    def submissions(
        self, lecture: str, assignment: str, *, user: str | None = None, latest: bool = False
    ) -> Iterator[models.Submission]:
        """Newest first; students get their own, tutors everyone's (or one `user`'s)."""
        return self._paginate(
            lambda o, n: operations.list_submissions(lecture, assignment, user, latest, offset=o, limit=n)
        )

    def submit(
        self, lecture: str, assignment: str, path: Path | str, user: str | None = None
    ) -> models.Submission:
        """Submit a notebook, a directory (zipped here) or a .zip file; `user`: on behalf of that
        student (instructors, after the deadline too)."""
        upload = self._pack(lecture, assignment, path)
        return self._send(
            operations.create_submission(
                lecture, assignment, upload.data, upload.content_type, upload.filename, user
            )
        )

    def _pack(self, lecture: str, assignment: str, path: Path | str) -> uploads.Upload:
        """The upload body; a directory without a notebook only for a command assignment (asked then)."""
        try:
            return uploads.pack(path)
        except uploads.NoNotebook:
            if self.assignment(lecture, assignment).kind != "command":
                raise
        return uploads.pack(path, any_files=True)

    def submission(self, lecture: str, assignment: str, submission: int) -> models.Submission:
        return self._send(operations.get_submission(lecture, assignment, submission))

    def update_submission(
        self,
        lecture: str,
        assignment: str,
        submission: int,
        *,
        manual_score: float | None = UNSET,
        comment: str | None = UNSET,
        manual_status: str = UNSET,
    ) -> models.Submission:
        """Set (or with None clear) the manual score and comment."""
        return self._send(
            operations.update_submission(
                lecture,
                assignment,
                submission,
                manual_score=manual_score,
                comment=comment,
                manual_status=manual_status,
            )
        )

    def delete_submission(self, lecture: str, assignment: str, submission: int) -> None:
        return self._send(operations.delete_submission(lecture, assignment, submission))

    def download_submission(self, lecture: str, assignment: str, submission: int) -> bytes:
        return self._send(operations.download_submission(lecture, assignment, submission))

    # --- grading -----------------------------------------------------------------------------

    def autograde(self, lecture: str, assignment: str, submission: int) -> models.Job:
        """Regrade one submission."""
        return self._send(operations.autograde(lecture, assignment, submission))

    def gradebook(self, lecture: str, assignment: str, submission: int) -> models.Gradebook:
        return self._send(operations.get_gradebook(lecture, assignment, submission))

    def logs(self, lecture: str, assignment: str, submission: int) -> str:
        return self._send(operations.get_logs(lecture, assignment, submission))

    def feedback(self, lecture: str, assignment: str, submission: int, notebook: str | None = None) -> str:
        """The feedback page (HTML) of one notebook (default: the first)."""
        return self._send(operations.get_feedback(lecture, assignment, submission, notebook))

    def start_grading_run(self, lecture: str, assignment: str, scope: str = "latest") -> models.GradingRun:
        """Regrade each student's latest submission (`scope="all"`: every submission)."""
        return self._send(operations.create_grading_run(lecture, assignment, scope))

    def grading_run(self, lecture: str, assignment: str, run: int) -> models.GradingRun:
        return self._send(operations.get_grading_run(lecture, assignment, run))

    def release_feedback(self, lecture: str, assignment: str) -> int:
        """Release generated feedback to the students; how many submissions it was released for."""
        return self._send(operations.release_feedback(lecture, assignment))

    @overload
    def scores(
        self, lecture: str, assignment: str, format: Literal["json"] = "json"
    ) -> models.ScoreTable: ...
    @overload
    def scores(self, lecture: str, assignment: str, format: Literal["csv"]) -> str: ...
    def scores(self, lecture: str, assignment: str, format: str = "json") -> models.ScoreTable | str:
        """The grade table (one row per student); `format="csv"` gives the CSV text."""
        return self._send(operations.get_scores(lecture, assignment, format))

    # --- extensions --------------------------------------------------------------------------

    def extensions(self, lecture: str, assignment: str) -> Iterator[models.Extension]:
        """The assignment's per-student extensions (tutors and instructors)."""
        return self._paginate(lambda o, n: operations.list_extensions(lecture, assignment, offset=o, limit=n))

    def set_extension(
        self,
        lecture: str,
        assignment: str,
        user: str,
        due_date: datetime | str,
        late_until: datetime | str | None = None,
        max_submissions: int | None = None,
    ) -> models.Extension:
        """Give `user` their own deadline (the whole extension: what is left out is none); instructors."""
        return self._send(
            operations.set_extension(lecture, assignment, user, due_date, late_until, max_submissions)
        )

    def remove_extension(self, lecture: str, assignment: str, user: str) -> None:
        return self._send(operations.delete_extension(lecture, assignment, user))

    # --- lecture gradebook ----------------------------------------------------------------------

    @overload
    def lecture_scores(
        self, lecture: str, policy: str | None = None, format: Literal["json"] = "json"
    ) -> models.LectureScoreTable: ...
    @overload
    def lecture_scores(self, lecture: str, policy: str | None, format: Literal["csv"]) -> str: ...
    def lecture_scores(
        self, lecture: str, policy: str | None = None, format: str = "json"
    ) -> models.LectureScoreTable | str:
        """The whole lecture's gradebook (one row per student on the roster, one column per assignment);
        `policy` ("latest" or "best") for every assignment, else each one's own; `format="csv"`: CSV text."""
        return self._send(operations.get_lecture_scores(lecture, policy, format))

    # --- events ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def event_stream(
        self,
        *,
        submission: int | None = None,
        lecture: str | None = None,
        assignment: str | None = None,
        last_event_id: str | None = None,
    ) -> Iterator[Iterator[ServerSentEvent]]:
        """One connection to the event stream, as the service's frames, never reconnected.

        For relaying the stream elsewhere. Entering raises the service's refusal (`APIError`) or
        `ConnectionFailed`; then each frame (`event`, `data`, `id`, `retry`) comes as it arrives,
        until the service ends the stream. `events()` is the reconnecting, parsed form.
        """
        call = operations.get_events(submission, lecture, assignment, last_event_id)
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.event_timeout, write=None, pool=None)
        try:
            with connect_sse(
                self._http, "GET", call.url, **_common.request_kwargs(call), timeout=timeout
            ) as source:
                if source.response.status_code >= 400:
                    source.response.read()  # the error's JSON body
                _common.check(source.response)
                yield source.iter_sse()
        except httpx.TransportError as e:
            raise _common.transport_error(e, self.url) from None

    def events(
        self,
        *,
        submission: int | None = None,
        lecture: str | None = None,
        assignment: str | None = None,
    ) -> Iterator[models.StatusEvent]:
        """Grading status changes as they happen, reconnecting after a dropped connection.

        With `submission`, ends after its final state (graded or failed); with `lecture` and
        `assignment` (tutors), runs until the caller stops iterating. The first events of each
        connection are the current state, so a reconnect misses nothing.
        """
        stream = _common.EventStream(submission, self.reconnect_timeout)
        while True:
            error: Exception | None = None
            try:
                with self.event_stream(
                    submission=submission,
                    lecture=lecture,
                    assignment=assignment,
                    last_event_id=stream.last_event_id,
                ) as frames:
                    stream.opened()
                    for sse in frames:
                        event = stream.accept(sse)
                        if event is not None:
                            yield event
                        if stream.finished:
                            return
            except (ServerError, ConnectionFailed) as e:
                error = e  # 5xx and network failures are retried; 4xx ends the subscription
            time.sleep(stream.retry_delay(error))

    def wait(
        self,
        lecture: str,
        assignment: str,
        submission: int,
        on_event: Callable[[models.StatusEvent], None] | None = None,
    ) -> models.Submission:
        """Block until automatic grading of `submission` ends; the graded submission.

        `on_event` sees each status change. Like the event stream, this rides out a restart of the
        service (for up to `reconnect_timeout` seconds).
        """
        for event in self.events(submission=submission):
            if on_event is not None:
                on_event(event)
        retry = _common.Retry(self.reconnect_timeout)
        while True:
            try:
                return self.submission(lecture, assignment, submission)
            except (ConnectionFailed, ServerError) as e:
                time.sleep(retry.delay(e))


__all__ = ["ConnectionFailed", "GraderClient"]

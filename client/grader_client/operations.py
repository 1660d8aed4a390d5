"""The service's operations as data: one builder per operation of `openapi.yaml`, no I/O.

Each builder is registered with the spec's method and path template by `@operation`; it returns a
`Call` (path parameters, query, body, and how to read the answer). `GraderClient` and
`AsyncGraderClient` only execute calls, so both clients send the same requests, and a request can only
go to a path registered here. The drift test checks this registry against `openapi.yaml`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar
from urllib.parse import quote

from . import models
from .errors import UsageError

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the template exactly as in openapi.yaml
    name: str


OPERATIONS: dict[str, Operation] = {}


@dataclass
class Call(Generic[T]):
    parse: Callable[[httpx.Response], T]
    path_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    # Statuses answered with a body the caller wants rather than an error (health's 503).
    accept: tuple[int, ...] = ()
    operation: Operation | None = None

    @property
    def method(self) -> str:
        assert self.operation is not None, "Call built outside an @operation builder"
        return self.operation.method

    @property
    def url(self) -> str:
        """The path relative to `<base>/api/v1/`, each parameter quoted as one path segment."""
        assert self.operation is not None, "Call built outside an @operation builder"
        segments = {}
        for key, value in self.path_params.items():
            text = str(value)
            if text in ("", ".", ".."):
                raise UsageError(f"Invalid {key} {text!r}")
            segments[key] = quote(text, safe="")
        return self.operation.path.lstrip("/").format(**segments)

    @property
    def query(self) -> dict[str, Any] | None:
        if not self.params:
            return None
        query = {}
        for key, value in self.params.items():
            if value is None:
                continue
            query[key] = ("true" if value else "false") if isinstance(value, bool) else value
        return query


def operation(method: str, path: str) -> Callable[[Callable[P, Call[T]]], Callable[P, Call[T]]]:
    """Register a builder as the one implementation of `method path`."""

    def register(build: Callable[P, Call[T]]) -> Callable[P, Call[T]]:
        op = Operation(method, path, build.__name__)
        for other in OPERATIONS.values():
            if (other.method, other.path) == (method, path):
                raise RuntimeError(f"{method} {path} is built by both {other.name} and {op.name}")
        OPERATIONS[op.name] = op

        @functools.wraps(build)
        def builder(*args: P.args, **kwargs: P.kwargs) -> Call[T]:
            call = build(*args, **kwargs)
            call.operation = op
            return call

        builder.operation = op  # type: ignore[attr-defined]
        return builder

    return register


# --- reading answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


def model(cls: type[T]) -> Callable[[httpx.Response], T]:
    return lambda response: cls.from_json(response.json())  # type: ignore[attr-defined]


def page(cls: type[T]) -> Callable[[httpx.Response], Page[T]]:
    def parse(response: httpx.Response) -> Page[T]:
        data = response.json()
        return Page(
            [cls.from_json(item) for item in data["items"]],  # type: ignore[attr-defined]
            data["total"],
            data["offset"],
            data["limit"],
        )

    return parse


def nothing(response: httpx.Response) -> None:
    return None


def json_object(response: httpx.Response) -> dict[str, Any]:
    return response.json()


def text(response: httpx.Response) -> str:
    return response.text


def content(response: httpx.Response) -> bytes:
    return response.content


def _fields(**values: Any) -> dict[str, Any]:
    """A JSON body of the given fields, leaving out the ones not given (UNSET)."""
    return {key: value for key, value in values.items() if value is not UNSET}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "leave unchanged", distinct from None ("clear")


def _upload(data: bytes, content_type: str, filename: str | None) -> dict[str, Any]:
    return {
        "content": data,
        "headers": {"Content-Type": content_type},
        "params": {"filename": filename} if filename else None,
    }


# --- service -----------------------------------------------------------------------------------


@operation("GET", "/health")
def get_health() -> Call[models.Health]:
    return Call(model(models.Health), accept=(503,))


@operation("GET", "/health/live")
def get_liveness() -> Call[dict[str, Any]]:
    return Call(json_object)


@operation("GET", "/metrics")
def get_metrics() -> Call[str]:
    return Call(text)


@operation("GET", "/openapi.yaml")
def get_openapi() -> Call[str]:
    return Call(text)


@operation("GET", "/user")
def get_user() -> Call[models.User]:
    return Call(model(models.User))


# --- lectures and roles ------------------------------------------------------------------------


@operation("GET", "/lectures")
def list_lectures(
    state: str | None = None, *, offset: int = 0, limit: int = 100
) -> Call[Page[models.Lecture]]:
    return Call(page(models.Lecture), params={"state": state, "offset": offset, "limit": limit})


@operation("POST", "/lectures")
def create_lecture(code: str, name: str | None = None, state: str | None = None) -> Call[models.Lecture]:
    body = {"code": code}
    if name is not None:
        body["name"] = name
    if state is not None:
        body["state"] = state
    return Call(model(models.Lecture), json=body)


@operation("GET", "/lectures/{code}")
def get_lecture(code: str) -> Call[models.Lecture]:
    return Call(model(models.Lecture), {"code": code})


@operation("PATCH", "/lectures/{code}")
def update_lecture(code: str, *, name: str = UNSET, state: str = UNSET) -> Call[models.Lecture]:
    return Call(model(models.Lecture), {"code": code}, json=_fields(name=name, state=state))


@operation("DELETE", "/lectures/{code}")
def delete_lecture(code: str) -> Call[None]:
    return Call(nothing, {"code": code})


@operation("GET", "/lectures/{code}/roles")
def list_roles(
    lecture: str, role: str | None = None, *, offset: int = 0, limit: int = 100
) -> Call[Page[models.Role]]:
    return Call(page(models.Role), {"code": lecture}, params={"role": role, "offset": offset, "limit": limit})


@operation("PUT", "/lectures/{code}/roles/{user}")
def set_role(lecture: str, user: str, role: str) -> Call[models.Role]:
    return Call(model(models.Role), {"code": lecture, "user": user}, json={"role": role})


@operation("DELETE", "/lectures/{code}/roles/{user}")
def delete_role(lecture: str, user: str) -> Call[None]:
    return Call(nothing, {"code": lecture, "user": user})


# --- assignments -------------------------------------------------------------------------------

ASSIGNMENT_FIELDS = (
    "title",
    "kind",
    "due_date",
    "late_until",
    "late_penalty",
    "max_submissions",
    "grading_policy",
    "feedback_policy",
    "settings",
)


def _json_value(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


@operation("GET", "/lectures/{code}/assignments")
def list_assignments(lecture: str, *, offset: int = 0, limit: int = 100) -> Call[Page[models.Assignment]]:
    return Call(page(models.Assignment), {"code": lecture}, params={"offset": offset, "limit": limit})


@operation("POST", "/lectures/{code}/assignments")
def create_assignment(lecture: str, name: str, **fields: Any) -> Call[models.Assignment]:
    body = {"name": name, **{k: _json_value(v) for k, v in _fields(**fields).items()}}
    return Call(model(models.Assignment), {"code": lecture}, json=body)


@operation("GET", "/lectures/{code}/assignments/{name}")
def get_assignment(lecture: str, name: str) -> Call[models.Assignment]:
    return Call(model(models.Assignment), {"code": lecture, "name": name})


@operation("PATCH", "/lectures/{code}/assignments/{name}")
def update_assignment(lecture: str, name: str, **fields: Any) -> Call[models.Assignment]:
    body = {k: _json_value(v) for k, v in _fields(**fields).items()}
    return Call(model(models.Assignment), {"code": lecture, "name": name}, json=body)


@operation("DELETE", "/lectures/{code}/assignments/{name}")
def delete_assignment(lecture: str, name: str) -> Call[None]:
    return Call(nothing, {"code": lecture, "name": name})


@operation("GET", "/lectures/{code}/assignments/{name}/files")
def download_assignment(lecture: str, name: str, version: str | None = None) -> Call[bytes]:
    return Call(content, {"code": lecture, "name": name}, params={"version": version})


@operation("PUT", "/lectures/{code}/assignments/{name}/files")
def upload_assignment(
    lecture: str, name: str, data: bytes, content_type: str, filename: str | None = None
) -> Call[models.Assignment]:
    return Call(
        model(models.Assignment), {"code": lecture, "name": name}, **_upload(data, content_type, filename)
    )


# --- submissions -------------------------------------------------------------------------------


def _submission(lecture: str, assignment: str, submission: int) -> dict[str, Any]:
    return {"code": lecture, "name": assignment, "id": int(submission)}


@operation("GET", "/lectures/{code}/assignments/{name}/submissions")
def list_submissions(
    lecture: str,
    assignment: str,
    user: str | None = None,
    latest: bool = False,
    *,
    offset: int = 0,
    limit: int = 100,
) -> Call[Page[models.Submission]]:
    params = {"user": user, "latest": latest or None, "offset": offset, "limit": limit}
    return Call(page(models.Submission), {"code": lecture, "name": assignment}, params=params)


@operation("POST", "/lectures/{code}/assignments/{name}/submissions")
def create_submission(
    lecture: str,
    assignment: str,
    data: bytes,
    content_type: str,
    filename: str | None = None,
    user: str | None = None,
) -> Call[models.Submission]:
    upload = _upload(data, content_type, filename)
    if user is not None:
        upload["params"] = {**(upload["params"] or {}), "user": user}
    return Call(model(models.Submission), {"code": lecture, "name": assignment}, **upload)


@operation("GET", "/lectures/{code}/assignments/{name}/submissions/{id}")
def get_submission(lecture: str, assignment: str, submission: int) -> Call[models.Submission]:
    return Call(model(models.Submission), _submission(lecture, assignment, submission))


@operation("PATCH", "/lectures/{code}/assignments/{name}/submissions/{id}")
def update_submission(
    lecture: str,
    assignment: str,
    submission: int,
    *,
    manual_score: float | None = UNSET,
    comment: str | None = UNSET,
    manual_status: str = UNSET,
) -> Call[models.Submission]:
    body = _fields(manual_score=manual_score, comment=comment, manual_status=manual_status)
    return Call(model(models.Submission), _submission(lecture, assignment, submission), json=body)


@operation("DELETE", "/lectures/{code}/assignments/{name}/submissions/{id}")
def delete_submission(lecture: str, assignment: str, submission: int) -> Call[None]:
    return Call(nothing, _submission(lecture, assignment, submission))


@operation("GET", "/lectures/{code}/assignments/{name}/submissions/{id}/files")
def download_submission(lecture: str, assignment: str, submission: int) -> Call[bytes]:
    return Call(content, _submission(lecture, assignment, submission))


# --- grading -----------------------------------------------------------------------------------


@operation("POST", "/lectures/{code}/assignments/{name}/submissions/{id}/autograde")
def autograde(lecture: str, assignment: str, submission: int) -> Call[models.Job]:
    return Call(model(models.Job), _submission(lecture, assignment, submission))


@operation("GET", "/lectures/{code}/assignments/{name}/submissions/{id}/gradebook")
def get_gradebook(lecture: str, assignment: str, submission: int) -> Call[models.Gradebook]:
    return Call(model(models.Gradebook), _submission(lecture, assignment, submission))


@operation("GET", "/lectures/{code}/assignments/{name}/submissions/{id}/logs")
def get_logs(lecture: str, assignment: str, submission: int) -> Call[str]:
    return Call(text, _submission(lecture, assignment, submission))


@operation("GET", "/lectures/{code}/assignments/{name}/submissions/{id}/feedback")
def get_feedback(lecture: str, assignment: str, submission: int, notebook: str | None = None) -> Call[str]:
    return Call(text, _submission(lecture, assignment, submission), params={"notebook": notebook})


@operation("POST", "/lectures/{code}/assignments/{name}/grading-runs")
def create_grading_run(lecture: str, assignment: str, scope: str = "latest") -> Call[models.GradingRun]:
    return Call(model(models.GradingRun), {"code": lecture, "name": assignment}, json={"scope": scope})


@operation("GET", "/lectures/{code}/assignments/{name}/grading-runs/{id}")
def get_grading_run(lecture: str, assignment: str, run: int) -> Call[models.GradingRun]:
    return Call(model(models.GradingRun), {"code": lecture, "name": assignment, "id": int(run)})


@operation("POST", "/lectures/{code}/assignments/{name}/feedback-release")
def release_feedback(lecture: str, assignment: str) -> Call[int]:
    return Call(lambda response: int(response.json()["released"]), {"code": lecture, "name": assignment})


@operation("GET", "/lectures/{code}/assignments/{name}/scores")
def get_scores(lecture: str, assignment: str, format: str = "json") -> Call[models.ScoreTable | str]:
    if format not in ("json", "csv"):
        raise UsageError(f"Score format must be json or csv, not {format!r}")
    parse = model(models.ScoreTable) if format == "json" else text
    return Call(parse, {"code": lecture, "name": assignment}, params={"format": format})


# --- extensions ----------------------------------------------------------------------------------


@operation("GET", "/lectures/{code}/assignments/{name}/extensions")
def list_extensions(
    lecture: str, assignment: str, *, offset: int = 0, limit: int = 100
) -> Call[Page[models.Extension]]:
    return Call(
        page(models.Extension),
        {"code": lecture, "name": assignment},
        params={"offset": offset, "limit": limit},
    )


@operation("PUT", "/lectures/{code}/assignments/{name}/extensions/{user}")
def set_extension(
    lecture: str,
    assignment: str,
    user: str,
    due_date: Any,
    late_until: Any = None,
    max_submissions: int | None = None,
) -> Call[models.Extension]:
    body = {
        "due_date": _json_value(due_date),
        "late_until": _json_value(late_until),
        "max_submissions": max_submissions,
    }
    return Call(model(models.Extension), {"code": lecture, "name": assignment, "user": user}, json=body)


@operation("DELETE", "/lectures/{code}/assignments/{name}/extensions/{user}")
def delete_extension(lecture: str, assignment: str, user: str) -> Call[None]:
    return Call(nothing, {"code": lecture, "name": assignment, "user": user})


# --- lecture gradebook ---------------------------------------------------------------------------


@operation("GET", "/lectures/{code}/scores")
def get_lecture_scores(
    lecture: str, policy: str | None = None, format: str = "json"
) -> Call[models.LectureScoreTable | str]:
    if format not in ("json", "csv"):
        raise UsageError(f"Score format must be json or csv, not {format!r}")
    if policy not in (None, "latest", "best"):
        raise UsageError(f"Policy must be latest or best, not {policy!r}")
    parse = model(models.LectureScoreTable) if format == "json" else text
    return Call(parse, {"code": lecture}, params={"format": format, "policy": policy})


# --- events ------------------------------------------------------------------------------------


@operation("GET", "/events")
def get_events(
    submission: int | None = None,
    lecture: str | None = None,
    assignment: str | None = None,
    last_event_id: str | None = None,
) -> Call[None]:
    """A Server-Sent Events stream (read by the clients' `events()`, never parsed as a whole)."""
    if submission is None and not (lecture and assignment):
        raise UsageError("Events need a submission, or a lecture and an assignment")
    params = (
        {"submission": submission}
        if submission is not None
        else {"lecture": lecture, "assignment": assignment}
    )
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return Call(nothing, params=params, headers=headers)

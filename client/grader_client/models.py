"""Typed views of the service's JSON: one frozen dataclass per schema in `openapi.yaml`.

Every model is built with `Model.from_json(data)`. Fields the service sends that a model does not know
(a newer service) are kept in `raw`, and fields it leaves out (an older service) get their default, so
client and service can be upgraded independently. `raw` is also what `--json` prints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, ClassVar, Self

FINAL_STATUSES = ("graded", "failed")


@cache
def _converters(cls: type) -> dict[str, Any]:
    """Per field: how to turn its JSON value into the annotated type (datetimes, nested models)."""
    hints = typing.get_type_hints(cls)
    result: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "raw":
            continue
        hint = hints[f.name]
        base = hint
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            base = next(a for a in typing.get_args(hint) if a is not type(None))
        if base is datetime:
            result[f.name] = _parse_datetime
        elif isinstance(base, type) and issubclass(base, Model):
            result[f.name] = base.from_json
        elif typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            if isinstance(item, type) and issubclass(item, Model):
                result[f.name] = lambda values, item=item: [item.from_json(v) for v in values]
            else:
                result[f.name] = None
        else:
            result[f.name] = None
    return result


def _parse_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass(frozen=True, kw_only=True)
class Model:
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for name, convert in _converters(cls).items():
            if name in data:
                value = data[name]
                values[name] = convert(value) if convert is not None and value is not None else value
        return cls(raw=data, **values)

    def to_json(self) -> dict[str, Any]:
        """The service's JSON for this object, as received."""
        return self.raw


@dataclass(frozen=True, kw_only=True)
class QueueStats(Model):
    queued: int = 0
    running: int = 0
    oldest_queued_seconds: float | None = None
    backlogged: bool = False


@dataclass(frozen=True, kw_only=True)
class Health(Model):
    status: str = "ok"
    version: str | None = None
    database: str | None = None
    executor: str | None = None
    grading: bool | None = None
    queue: QueueStats | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, kw_only=True)
class User(Model):
    name: str
    display_name: str | None = None
    admin: bool = False
    roles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Lecture(Model):
    code: str
    name: str = ""
    state: str = "active"
    created_at: datetime | None = None
    role: str | None = None


@dataclass(frozen=True, kw_only=True)
class Role(Model):
    user: str
    role: str
    lecture: str = ""
    display_name: str | None = None
    source: str | None = None


@dataclass(frozen=True, kw_only=True)
class Assignment(Model):
    lecture: str
    name: str
    title: str | None = None
    kind: str = "notebook"  # or "command": graded by the harness of its source's grader.yaml
    status: str = "created"
    due_date: datetime | None = None
    late_until: datetime | None = None
    late_penalty: float = 0.0
    max_submissions: int | None = None
    extended: bool = False  # a student's own deadline from an extension (due_date etc. are theirs)
    submissions_used: int | None = None  # the caller's own, withdrawn ones included (older services: None)
    grading_policy: str | None = None
    feedback_policy: str | None = None
    max_score: float | None = None
    released_at: datetime | None = None
    created_at: datetime | None = None
    settings: dict[str, Any] | None = None
    has_source: bool | None = None
    source_commit: str | None = None


@dataclass(frozen=True, kw_only=True)
class Submission(Model):
    id: int
    lecture: str = ""
    assignment: str = ""
    user: str = ""
    commit_hash: str | None = None
    submitted_at: datetime | None = None
    late: bool = False
    late_seconds: float = 0.0
    auto_status: str = "not_queued"
    manual_status: str = "not_graded"
    # False: a student whose result is held back (score, comment null until the instructor releases it)
    results_released: bool | None = None
    score: float | None = None
    final_score: float | None = None  # score less the late penalty if late
    auto_score: float | None = None
    manual_score: float | None = None
    max_score: float | None = None
    comment: str | None = None
    feedback_status: str = "none"
    status_detail: str | None = None  # staff only: what grading waits for, or why it failed

    @property
    def finished(self) -> bool:
        """Automatic grading reached a final state."""
        return self.auto_status in FINAL_STATUSES


@dataclass(frozen=True, kw_only=True)
class Extension(Model):
    """A student's own deadline for one assignment."""

    user: str
    due_date: datetime
    display_name: str | None = None
    assignment: str = ""
    late_until: datetime | None = None
    max_submissions: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Job(Model):
    id: int
    submission: int
    state: str = "queued"
    attempts: int = 0
    executor: str | None = None
    runner: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class GradingRun(Model):
    id: int
    scope: str = "latest"
    created_at: datetime | None = None
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False

    @property
    def finished_count(self) -> int:
        return sum(self.counts.get(state, 0) for state in ("succeeded", "failed", "cancelled"))

    @property
    def failed_count(self) -> int:
        return self.counts.get("failed", 0)


@dataclass(frozen=True, kw_only=True)
class ScoreRow(Model):
    user: str
    display_name: str | None = None
    submission: int | None = None
    submitted_at: datetime | None = None
    late: bool = False
    late_seconds: float = 0.0
    auto_status: str | None = None
    score: float | None = None
    max_score: float | None = None
    final_score: float | None = None


@dataclass(frozen=True, kw_only=True)
class ScoreTable(Model):
    assignment: str = ""
    policy: str | None = None
    late_penalty: float = 0.0
    items: list[ScoreRow] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class LectureScoreColumn(Model):
    """One assignment of the lecture gradebook, and the policy its column was chosen by."""

    name: str
    policy: str | None = None
    late_penalty: float = 0.0
    max_score: float | None = None


@dataclass(frozen=True, kw_only=True)
class LectureScoreRow(Model):
    user: str
    display_name: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)  # None: nothing submitted
    total: float = 0.0


@dataclass(frozen=True, kw_only=True)
class LectureScoreTable(Model):
    """The whole lecture's gradebook: one row per student on the roster, one score per assignment."""

    lecture: str = ""
    policy: str | None = None  # None: each assignment's own grading policy
    assignments: list[LectureScoreColumn] = field(default_factory=list)
    items: list[LectureScoreRow] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class TestResult:
    """One graded cell of a gradebook: what a score table shows."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    notebook: str
    name: str
    kind: str
    points: float | None
    max_points: float
    status: str | None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Gradebook(Model):
    """Per notebook and per graded cell; the full document stays in `raw` (schema in the service docs)."""

    kind: str = "autograde"
    score: float | None = None
    max_score: float | None = None
    needs_manual_grading: bool = False
    notebooks: dict[str, Any] = field(default_factory=dict)

    def results(self) -> list[TestResult]:
        """Every graded cell in notebook order."""
        results = []
        for notebook, book in self.notebooks.items():
            for grade_id, cell in (book.get("cells") or {}).items():
                error = cell.get("error") or None
                results.append(
                    TestResult(
                        notebook=notebook,
                        name=cell.get("grade_id", grade_id),
                        kind=cell.get("kind", "test"),
                        points=cell.get("points"),
                        max_points=cell.get("max_points", 0.0),
                        status=cell.get("status"),
                        error=(
                            f"{error.get('name')}: {error.get('message')}"
                            if isinstance(error, dict)
                            else error
                        ),
                    )
                )
        return results


@dataclass(frozen=True, kw_only=True)
class StatusEvent(Model):
    """A change of a submission's grading status, from the event stream."""

    submission: int
    auto_status: str
    id: str | None = None
    job: int | None = None
    score: float | None = None
    max_score: float | None = None
    reason: str | None = None
    status_detail: str | None = None  # staff only
    results_released: bool | None = None  # students' streams: whether the score is shown

    @property
    def finished(self) -> bool:
        return self.auto_status in FINAL_STATUSES


__all__ = [
    "FINAL_STATUSES",
    "Assignment",
    "Extension",
    "Gradebook",
    "GradingRun",
    "Health",
    "Job",
    "Lecture",
    "Model",
    "QueueStats",
    "Role",
    "ScoreRow",
    "LectureScoreColumn",
    "LectureScoreRow",
    "LectureScoreTable",
    "ScoreTable",
    "StatusEvent",
    "Submission",
    "TestResult",
    "User",
]

"""The service's vocabularies: every state, status, role and kind, one `StrEnum` each.

A member is a `str` equal to its value, so it goes into JSON, SQL and f-strings unchanged, and
a value read back from the database compares equal to it. The database refuses any other value
(CHECK constraints: `orm.base.one_of`, migration 0003); the API validates requests against the
same enums, so a new value is added here, in a migration, and in openapi.yaml, nowhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

V = TypeVar("V", bound=StrEnum)


class RoleName(StrEnum):
    """A user's role in one lecture, from least to most privileged: a higher role can do everything a
    lower one can (`rank`)."""

    STUDENT = "student"
    TUTOR = "tutor"
    INSTRUCTOR = "instructor"

    @property
    def rank(self) -> int:
        return list(RoleName).index(self) + 1


def role_rank(role: str | None) -> int:
    """0 for no role (or an unknown one), then 1..3 from student to instructor."""
    member = member_of(RoleName, role)
    return member.rank if member is not None else 0


class RoleSource(StrEnum):
    """Where a role came from: granted through the API, or mirrored from a JupyterHub group."""

    API = "api"
    HUB = "hub"


class LectureState(StrEnum):
    ACTIVE = "active"
    COMPLETE = "complete"  # takes no more submissions; grading goes on


class AssignmentStatus(StrEnum):
    CREATED = "created"  # staff only
    RELEASED = "released"  # students see it and submit
    COMPLETED = "completed"  # students see it; no more submissions


class AssignmentKind(StrEnum):
    """What an assignment grades: nbgrader notebooks, or any program run by the instructor's harness
    in stages (`grader.yaml`, `grader_service.command`)."""

    NOTEBOOK = "notebook"
    COMMAND = "command"


class TestVisibility(StrEnum):
    """When a student sees a command assignment's test (Gradescope's `visibility`): always, never,
    once the due date has passed, or once the results are released."""

    __test__ = False  # not a pytest test class, whatever its name

    VISIBLE = "visible"
    HIDDEN = "hidden"
    AFTER_DUE_DATE = "after_due_date"
    AFTER_PUBLISHED = "after_published"


class GradingPolicy(StrEnum):
    """Which submission of a student counts in the grade table."""

    LATEST = "latest"
    BEST = "best"


class FeedbackPolicy(StrEnum):
    """When students see their results: when an instructor releases them, or at once."""

    MANUAL = "manual"
    IMMEDIATE = "immediate"


class JobState(StrEnum):
    """A grading job's state: the queue is the set of jobs in QUEUED."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Jobs that still hold (or wait for) a worker.
PENDING_JOB_STATES = (JobState.QUEUED, JobState.RUNNING)


class AutoStatus(StrEnum):
    """A submission's automatic grading, as its latest job left it."""

    NOT_QUEUED = "not_queued"
    QUEUED = "queued"
    RUNNING = "running"
    GRADED = "graded"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (AutoStatus.GRADED, AutoStatus.FAILED)


# Submissions whose grading is waiting or under way.
PENDING_AUTO_STATUSES = (AutoStatus.QUEUED, AutoStatus.RUNNING)


class ManualStatus(StrEnum):
    """Whether a submission still needs a person: NEEDED while a cell that only a person can grade has no
    manual points (and no tutor marked it done), DONE once all have, NOT_NEEDED when none needs one."""

    NOT_NEEDED = "not_needed"
    NEEDED = "needed"
    DONE = "done"


class GradeKind(StrEnum):
    """A graded cell (the gradebook's `kind`): an autograded test, an answer or a task graded by hand."""

    TEST = "test"
    MANUAL = "manual"
    TASK = "task"


class FeedbackStatus(StrEnum):
    NONE = "none"
    GENERATED = "generated"  # staff see it; students once released (or at once, policy 'immediate')
    RELEASED = "released"


class RunScope(StrEnum):
    """Which submissions a grading run regrades: each student's latest, or every one."""

    LATEST = "latest"
    ALL = "all"


class StepKind(StrEnum):
    """One step of a grading plan (`convert.guard.Step`).

    Sent to the kernel like cells: CELL (an ordinary notebook cell), TEST, LOCKED (protected,
    instructor's code), MUTANT (a test run with wrong answers), the canaries. Internal checks
    (user expressions carried by the request of the cell before them, or sent alone): the rest.
    """

    CELL = "cell"
    TEST = "test"
    LOCKED = "locked"
    MUTANT = "mutant"
    CANARY_ERROR = "canary-error"
    CANARY_VALUE = "canary-value"
    SETUP = "setup"
    PRE = "pre"
    POST = "post"
    UNSTASH = "unstash"
    CHECKPOINT = "checkpoint"

    @property
    def internal(self) -> bool:
        return self in (StepKind.SETUP, StepKind.PRE, StepKind.POST, StepKind.UNSTASH, StepKind.CHECKPOINT)


class KernelOutcome(StrEnum):
    """How the kernel fared over a whole grading (the gradebook's `execution.kernel`)."""

    OK = "ok"
    DIED = "died"
    KILLED = "killed"
    TIME_LIMIT = "time-limit"  # reported as OK: the cells it cost say so themselves
    NOT_STARTED = "not-started"


def member_of(vocabulary: type[V], value: object) -> V | None:
    """The member whose value is `value`, or None for anything else (of any type: request input)."""
    if not isinstance(value, str):
        return None
    try:
        return vocabulary(value)
    except ValueError:
        return None


def choices(vocabulary: type[StrEnum]) -> str:
    """The values for an error message: 'a, b, c'."""
    return ", ".join(vocabulary)


__all__ = [
    "PENDING_AUTO_STATUSES",
    "PENDING_JOB_STATES",
    "AssignmentKind",
    "AssignmentStatus",
    "AutoStatus",
    "FeedbackPolicy",
    "FeedbackStatus",
    "GradeKind",
    "GradingPolicy",
    "JobState",
    "KernelOutcome",
    "LectureState",
    "ManualStatus",
    "RoleName",
    "RoleSource",
    "RunScope",
    "StepKind",
    "TestVisibility",
    "choices",
    "member_of",
    "role_rank",
]

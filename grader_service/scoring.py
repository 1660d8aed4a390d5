"""The one scoring rule: a student's effective deadline, whether a submission is late, its final score.

Every reader goes through here (submission responses, the scores export, submitting, extensions),
so a score shown anywhere is the same number:

- The **effective deadline** of a student is their extension's `due_date`, `late_until` and
  `max_submissions` if they have one (an extension without `late_until` gives no late window;
  without `max_submissions` the assignment's limit stays), else the assignment's.
- A submission is **late** when it was made after the effective `due_date`. `late` and
  `late_seconds` are stored on the submission when it is made, and recomputed for the student's
  submissions in the transaction that grants, changes or removes their extension, and for every
  student without one in the transaction that changes the assignment's `due_date`.
- The **final score** starts from the cells (`grades.py`): the sum over the submission's graded
  cells of a person's points if set, else grading's, plus extra credit (`cell_score`, kept on the
  submission; a submission without cell rows has the automatic score instead). A total a tutor
  set (`manual_score`) wins over it. A late submission then loses the assignment's `late_penalty`
  fraction, rounded to 6 decimals.

docs/grading.md explains it with a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from .orm import Assignment, Extension, Submission

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Deadline:
    """What bounds one student's submissions to one assignment."""

    due_date: datetime | None
    late_until: datetime | None
    max_submissions: int | None
    # Whether an extension replaced the assignment's values.
    extended: bool = False

    @property
    def closes_at(self) -> datetime | None:
        """After this no submission is accepted (None: never)."""
        return self.late_until or self.due_date


def deadline_of(assignment: Assignment, extension: Extension | None) -> Deadline:
    """The effective deadline: the extension's, if there is one, else the assignment's."""
    if extension is None:
        return Deadline(assignment.due_date, assignment.late_until, assignment.max_submissions)
    limit = extension.max_submissions
    return Deadline(
        extension.due_date,
        extension.late_until,
        limit if limit is not None else assignment.max_submissions,
        extended=True,
    )


def lateness(deadline: Deadline, at: datetime) -> tuple[bool, float]:
    """Whether a submission made `at` is late, and by how many seconds."""
    if deadline.due_date is None or at <= deadline.due_date:
        return False, 0.0
    return True, (at - deadline.due_date).total_seconds()


def closed(deadline: Deadline, at: datetime) -> bool:
    """Whether the deadline (and the late window, if any) had passed `at`: no more submissions."""
    last = deadline.closes_at
    return last is not None and at > last


def graded_score(
    score: float | None, manual_score: float | None, cell_score: float | None = None
) -> float | None:
    """The score before any penalty: a tutor's total if set, else the cells' sum (manual-if-set-else-auto
    points plus extra credit), else (no cell rows) the automatic score."""
    if manual_score is not None:
        return manual_score
    return cell_score if cell_score is not None else score


def final_score(
    score: float | None,
    manual_score: float | None,
    late: bool,
    late_penalty: float,
    cell_score: float | None = None,
) -> float | None:
    """The score that counts: `graded_score`, minus the late penalty if late."""
    base = graded_score(score, manual_score, cell_score)
    if base is None:
        return None
    return round(base * (1 - late_penalty), 6) if late else base


def submission_final_score(submission: Submission) -> float | None:
    """`final_score` of a loaded submission (its assignment gives the penalty)."""
    return final_score(
        submission.score,
        submission.manual_score,
        submission.late,
        submission.assignment.late_penalty,
        submission.cell_score,
    )


# --- the database side: loading an extension, recomputing lateness -------------------------------


def extension_of(db: Session, assignment_id: int, user_id: int) -> Extension | None:
    return db.scalars(
        select(Extension).where(Extension.assignment_id == assignment_id, Extension.user_id == user_id)
    ).one_or_none()


def student_deadline(db: Session, assignment: Assignment, user_id: int) -> Deadline:
    """The effective deadline of one student, read from the database."""
    return deadline_of(assignment, extension_of(db, assignment.id, user_id))


def recompute_lateness(db: Session, assignment: Assignment, user_id: int, deadline: Deadline) -> int:
    """Set `late`/`late_seconds` of the student's submissions to `deadline` (withdrawn ones too, so that
    nothing changes should one come back); the caller commits. Returns how many changed."""
    changed = 0
    rows = db.scalars(
        select(Submission).where(Submission.assignment_id == assignment.id, Submission.user_id == user_id)
    )
    for submission in rows:
        late, seconds = lateness(deadline, submission.submitted_at)
        if (submission.late, submission.late_seconds) != (late, seconds):
            submission.late, submission.late_seconds = late, seconds
            changed += 1
    return changed


def recompute_assignment_lateness(db: Session, assignment: Assignment) -> int:
    """After the assignment's `due_date` changed: set `late`/`late_seconds` of the submissions of every
    student without an extension (theirs follow their own deadline); the caller commits. Plain
    columns and one bulk update, not Submission objects: a course's every submission, without their
    gradebooks. Returns how many changed."""
    deadline = deadline_of(assignment, None)
    extended = select(Extension.user_id).where(Extension.assignment_id == assignment.id)
    rows = db.execute(
        select(Submission.id, Submission.submitted_at, Submission.late, Submission.late_seconds).where(
            Submission.assignment_id == assignment.id, Submission.user_id.not_in(extended)
        )
    ).tuples()
    changes = []
    for submission_id, submitted_at, was_late, was_seconds in rows:
        late, seconds = lateness(deadline, submitted_at)
        if (was_late, was_seconds) != (late, seconds):
            changes.append({"id": submission_id, "late": late, "late_seconds": seconds})
    if changes:
        db.execute(update(Submission), changes)
    return len(changes)

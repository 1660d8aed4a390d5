"""Per-cell grades: one row per graded cell of a submission, what grading and people made of it.

A cell's row is written when grading is recorded (`record_grades`, in the transaction that stores the
score); a regrade replaces its automatic points and keeps what a person gave it (manual points,
extra credit, comment). Tutors change grades through `api/grades.py`. After any change the
submission's derived fields follow in the same transaction (`refresh`): `cell_score` (the sum
`scoring` uses), `manual_status`, and `grades_version` (the compare-and-set guard).

Every change is appended to `grade_changes` (`log_change`): nothing updates or deletes a row there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from .orm import Grade, GradeChange, Submission, User, utcnow
from .states import GradeKind, ManualStatus, member_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class CellResult:
    """What grading gave one cell (from the gradebook)."""

    grade_id: str
    notebook: str
    kind: GradeKind
    auto_points: float | None
    max_points: float
    needs_manual: bool


def cells_of(gradebook: dict[str, Any] | None) -> list[CellResult]:
    """Every graded cell of an autograde result (`convert/gradebook.py`), in notebook order.

    Grade ids are unique within a notebook; one that recurs in a later notebook is keyed
    `<notebook>/<grade_id>` so that each cell keeps its own row.
    """
    results: list[CellResult] = []
    seen: set[str] = set()
    for notebook, book in ((gradebook or {}).get("notebooks") or {}).items():
        for grade_id, cell in (book.get("cells") or {}).items():
            kind = member_of(GradeKind, cell.get("kind"))
            if kind is None:
                continue
            key = grade_id if grade_id not in seen else f"{notebook}/{grade_id}"
            seen.add(key)
            needs_manual = cell.get("status") == "needs-manual"
            points = cell.get("points")
            auto = None if needs_manual or points is None else float(points)
            results.append(
                CellResult(key, notebook, kind, auto, float(cell.get("max_points") or 0.0), needs_manual)
            )
    return results


def effective_points(grade: Grade) -> float:
    """What a cell counts: a person's points if set, else grading's (none: 0), plus extra credit."""
    base = grade.manual_points if grade.manual_points is not None else (grade.auto_points or 0.0)
    return base + (grade.extra_credit or 0.0)


def cell_total(grades: Sequence[Grade]) -> float | None:
    """The submission's score from its cells (None without cells: the automatic score stands)."""
    if not grades:
        return None
    return round(sum(effective_points(g) for g in grades), 6)


def manual_status_of(grades: Iterable[Grade]) -> ManualStatus:
    """not_needed when no cell needs a person, done when every such cell has manual points, needed
    otherwise. (A tutor may also mark a submission done with PATCH manual_status; the next change to
    its cells decides again.)"""
    waiting = [g for g in grades if g.needs_manual]
    if not waiting:
        return ManualStatus.NOT_NEEDED
    if all(g.manual_points is not None for g in waiting):
        return ManualStatus.DONE
    return ManualStatus.NEEDED


def grades_of(db: Session, submission_id: int) -> list[Grade]:
    return list(db.scalars(select(Grade).where(Grade.submission_id == submission_id).order_by(Grade.id)))


def refresh(submission: Submission, grades: Sequence[Grade], bump: bool = True) -> None:
    """The submission's fields derived from its cells, after they changed (the caller commits).

    `bump`: advance `grades_version` in SQL (relative to the stored value, so that a tutor's change
    based on the version before fails its compare-and-set); a caller that has compared-and-set it
    already passes False.
    """
    submission.cell_score = cell_total(grades)
    submission.manual_status = manual_status_of(grades)
    if bump:
        submission.grades_version = Submission.grades_version + 1


def record_grades(db: Session, submission: Submission, gradebook: dict[str, Any] | None) -> None:
    """Write a grading's cells into the submission's rows (in the transaction that records its score).

    Rows of cells grading gave before keep their manual points, extra credit and comment; cells no
    longer graded lose their rows. A regrade is logged ("regrade", with the automatic points it changed).
    """
    # Hold the submission first (its row lock on PostgreSQL; on SQLite the flush this query makes takes
    # the write lock): a tutor's change cannot land between reading the rows and writing their sum.
    db.execute(select(Submission.id).where(Submission.id == submission.id).with_for_update())
    existing = {g.grade_id: g for g in grades_of(db, submission.id)}
    was_graded = bool(existing)
    changed: dict[str, list[float | None]] = {}
    kept: list[Grade] = []
    for cell in cells_of(gradebook):
        grade = existing.pop(cell.grade_id, None)
        if grade is None:
            grade = Grade(submission_id=submission.id, grade_id=cell.grade_id, extra_credit=0.0)
            db.add(grade)
        elif grade.auto_points != cell.auto_points:
            changed[cell.grade_id] = [grade.auto_points, cell.auto_points]
        grade.notebook, grade.kind, grade.max_points = cell.notebook, cell.kind, cell.max_points
        grade.auto_points, grade.needs_manual, grade.updated_at = (
            cell.auto_points,
            cell.needs_manual,
            utcnow(),
        )
        kept.append(grade)
    for gone in existing.values():
        changed[gone.grade_id] = [gone.auto_points, None]
        db.delete(gone)
    if was_graded:  # a regrade: the automatic points it replaced (those that changed)
        old = {k: v[0] for k, v in changed.items()}
        log_change(db, submission.id, None, "regrade", old, {k: v[1] for k, v in changed.items()})

    db.flush()
    refresh(submission, kept)


def record_manual_only(db: Session, submission: Submission, skeleton: dict[str, Any] | None) -> None:
    """Rows for a submission no grading will see (the assignment's `autograde: false`): every cell of
    the release's gradebook skeleton, each waiting for a person, so the submission is `needed`."""
    rows = []
    for cell in cells_of(skeleton):
        grade = Grade(
            submission_id=submission.id, grade_id=cell.grade_id, notebook=cell.notebook, kind=cell.kind,
            auto_points=None, max_points=cell.max_points, needs_manual=True, extra_credit=0.0,
        )  # fmt: skip
        db.add(grade)
        rows.append(grade)
    db.flush()
    refresh(submission, rows)
    if not rows:  # nothing to grade per cell: a person still sets the total
        submission.manual_status = ManualStatus.NEEDED


def log_change(
    db: Session,
    submission_id: int,
    who: User | None,
    what: str,
    old: Any,
    new: Any,
    comment: str | None = None,
) -> None:
    """Append one change to the submission's history (`who` None: the service itself, e.g. grading)."""
    db.add(
        GradeChange(
            submission_id=submission_id,
            user_id=who.id if who is not None else None,
            user_name=who.name if who is not None else None,
            what=what,
            old=json.dumps(old),
            new=json.dumps(new),
            comment=comment,
        )
    )


def history_of(db: Session, submission_id: int) -> list[GradeChange]:
    return list(
        db.scalars(
            select(GradeChange).where(GradeChange.submission_id == submission_id).order_by(GradeChange.id)
        )
    )

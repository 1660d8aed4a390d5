"""JSON representations of the models, in one place so every endpoint shows the same shape."""

from __future__ import annotations

from typing import Any

from ..orm import Assignment, Lecture, Role, Submission, User
from ..scoring import Deadline, deadline_of, graded_score, submission_final_score
from .base import isoformat
from .permissions import ResultView


def user_model(user: User, roles: dict[str, str] | None = None, admin: bool | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {
        "name": user.name,
        "display_name": user.display_name,
        "admin": user.admin if admin is None else admin,
    }
    if roles is not None:
        model["roles"] = roles
    return model


def lecture_model(lecture: Lecture, role: str | None = None) -> dict[str, Any]:
    return {
        "code": lecture.code,
        "name": lecture.name,
        "state": lecture.state,
        "created_at": isoformat(lecture.created_at),
        "role": role,
    }


def role_model(role: Role) -> dict[str, Any]:
    return {
        "user": role.user.name,
        "display_name": role.user.display_name,
        "lecture": role.lecture.code,
        "role": role.role,
        "source": role.source,
    }


def assignment_model(
    assignment: Assignment, staff: bool, submissions_used: int = 0, deadline: Deadline | None = None
) -> dict[str, Any]:
    """`submissions_used`: the caller's own submissions to it, withdrawn ones included (they count
    against `max_submissions` too), so a student sees how many are left. `deadline`: the caller's
    effective deadline (`scoring`), when an extension gives them their own; `extended` says so."""
    due = deadline or deadline_of(assignment, None)
    model: dict[str, Any] = {
        "lecture": assignment.lecture.code,
        "name": assignment.name,
        "title": assignment.title,
        "kind": assignment.kind,
        "status": assignment.status,
        "due_date": isoformat(due.due_date),
        "late_until": isoformat(due.late_until),
        "late_penalty": assignment.late_penalty,
        "max_submissions": due.max_submissions,
        "extended": due.extended,
        "submissions_used": submissions_used,
        "grading_policy": assignment.grading_policy,
        "feedback_policy": assignment.feedback_policy,
        "max_score": assignment.max_score,
        "released_at": isoformat(assignment.released_at),
        "created_at": isoformat(assignment.created_at),
    }
    if staff:
        model["settings"] = assignment.settings
        model["has_source"] = assignment.source_commit is not None
        model["source_commit"] = assignment.source_commit
    return model


def submission_model(submission: Submission, view: ResultView) -> dict[str, Any]:
    """The submission as the caller may see it: `view` (the visibility rule) hides what it must."""
    return view.submission(
        {
            "id": submission.id,
            "lecture": submission.assignment.lecture.code,
            "assignment": submission.assignment.name,
            "user": submission.user.name,
            "commit_hash": submission.commit_hash,
            "submitted_at": isoformat(submission.submitted_at),
            "late": submission.late,
            "late_seconds": submission.late_seconds,
            "auto_status": submission.auto_status,
            "manual_status": submission.manual_status,
            "score": graded_score(submission.score, submission.manual_score, submission.cell_score),
            "final_score": submission_final_score(submission),
            "auto_score": submission.score,
            "manual_score": submission.manual_score,
            "max_score": submission.max_score,
            "comment": submission.comment,
            "feedback_status": submission.feedback_status,
            "status_detail": submission.status_detail,
        }
    )

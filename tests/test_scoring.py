"""The scoring rule as pure functions: docs/grading.md's worked example, step by step."""

from __future__ import annotations

from datetime import UTC, datetime

from grader_service.orm import Assignment, Extension
from grader_service.scoring import closed, deadline_of, final_score, lateness


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


BASICS = Assignment(
    due_date=at("2030-01-15T23:59"), late_until=at("2030-01-17T23:59"), late_penalty=0.2, max_submissions=5
)
SUBMITTED = at("2030-01-16T11:59")


def test_worked_example_of_docs_grading() -> None:
    plain = deadline_of(BASICS, None)
    assert lateness(plain, SUBMITTED) == (True, 43200.0)
    assert final_score(8.5, None, True, BASICS.late_penalty) == 6.8
    assert final_score(8.5, 9.0, True, BASICS.late_penalty) == 7.2
    extended = deadline_of(BASICS, Extension(due_date=at("2030-01-16T12:00")))
    assert lateness(extended, SUBMITTED) == (False, 0.0)
    assert final_score(8.5, 9.0, False, BASICS.late_penalty) == 9.0
    earlier = deadline_of(BASICS, Extension(due_date=at("2030-01-16T00:00")))
    assert lateness(earlier, SUBMITTED) == (True, 43140.0)


def test_effective_deadline_and_closing() -> None:
    plain = deadline_of(BASICS, None)
    assert (plain.max_submissions, plain.extended) == (5, False)
    assert not closed(plain, at("2030-01-17T23:59")) and closed(plain, at("2030-01-18T00:00"))
    # An extension without late_until has no late window; without max_submissions the assignment's holds.
    own = deadline_of(BASICS, Extension(due_date=at("2030-01-20T00:00")))
    assert (own.late_until, own.max_submissions, own.extended) == (None, 5, True)
    assert not closed(own, at("2030-01-19T00:00")) and closed(own, at("2030-01-20T00:01"))
    more = deadline_of(BASICS, Extension(due_date=at("2030-01-20T00:00"), max_submissions=9))
    assert more.max_submissions == 9
    assert not closed(deadline_of(Assignment(), None), at("2999-01-01T00:00"))  # no deadline at all
    assert final_score(None, None, True, 0.5) is None  # not graded yet

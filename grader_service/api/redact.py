"""What students see of their own grading: the gradebook's student view, never raw logs.

The rule itself is the notebook engine's (`convert.visibility`): of every cell from the first
hidden test on, a student sees points and status, at most a built-in exception's name and the
instructor's own assertion message, and no kernel-derived text. On top of that, as a second
line, every line of hidden-test code (recorded at release) is replaced wherever it still appears
in what a student gets.

The grading log is the grader's own output (the kernel's stdout and stderr go nowhere), but it is
for staff: a student sees only why a grading failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..command import results as command_results
from ..convert.visibility import student_view
from ..orm import Assignment, utcnow

NOTICE = "[hidden test]"
# Lines this short ("pass", ")") carry no secret and would redact innocent text.
MIN_LINE = 6
STAFF_ONLY_LOG = "The grading log is shown to tutors and instructors only."


def hidden_lines(assignment: Assignment) -> list[str]:
    lines = (assignment.hidden_tests or {}).get("lines", [])
    return sorted({line for line in lines if len(line) >= MIN_LINE}, key=len, reverse=True)


def _redact(text: str, lines: list[str]) -> str:
    for line in lines:
        if line in text:
            text = text.replace(line, NOTICE)
    return text


def redact_text(text: str, assignment: Assignment) -> str:
    return _redact(text, hidden_lines(assignment))


def redact_gradebook(gradebook: Any, assignment: Assignment) -> Any:
    lines = hidden_lines(assignment)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _redact(value, lines)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(gradebook) if lines else gradebook


def student_gradebook(
    gradebook: dict[str, Any], assignment: Assignment, released: bool, due_date: datetime | None = None
) -> dict[str, Any]:
    """The gradebook as its student may see it (`released`: the results are released to them).

    A command assignment's tests show their output by their `visibility` (`command.results`), with
    `due_date` the student's own (an extension's, if they have one; default: the assignment's)."""
    if command_results.is_command_gradebook(gradebook):
        due = due_date or assignment.due_date
        return command_results.student_view(gradebook, due is not None and due <= utcnow(), released)
    return redact_gradebook(student_view(gradebook), assignment)


def student_log(failure: str | None, assignment: Assignment) -> str:
    """What a student sees of a grading log: why the grading failed (the grader's words), if it did."""
    if failure is None:
        return STAFF_ONLY_LOG + "\n"
    return redact_text(f"{failure}\n\n{STAFF_ONLY_LOG}\n", assignment)

"""Exceptions raised by the notebook engine.

Each one carries enough context (notebook, cell, what is wrong) for a person to act on it without
reading a traceback: the service shows `str(error)` to instructors verbatim.
"""

from __future__ import annotations

from typing import TypedDict


class Problem(TypedDict):
    """One thing wrong with a source notebook."""

    notebook: str
    cell: str | None
    problem: str


def format_problem(problem: Problem) -> str:
    """`notebook, cell X: problem` -- the one-line form used in messages and logs."""
    where = problem["notebook"]
    if problem.get("cell"):
        where += f", cell {problem['cell']}"
    return f"{where}: {problem['problem']}"


class SourceValidationError(Exception):
    """The instructor's source does not validate; `.problems` lists every problem found.

    All problems are collected before raising, so an instructor can fix them in one go instead of
    one per release attempt.
    """

    def __init__(self, problems: list[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if not self.problems:
            return "the source does not validate"
        lines = [format_problem(p) for p in self.problems]
        if len(lines) == 1:
            return f"the source does not validate: {lines[0]}"
        return "the source does not validate:\n" + "\n".join(f"  - {line}" for line in lines)


class UnreadableNotebookError(Exception):
    """A notebook file that is not a usable notebook (empty, invalid JSON, wrong structure, too big)."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class GradingError(Exception):
    """Grading could not be carried out at all (as opposed to a submission scoring zero).

    The CLI maps it to exit code 2 ("could not grade"), which tells the service to retry or report
    an infrastructure problem rather than record a score.
    """


class DiskLimitReached(GradingError):
    """The job's scratch filesystem (the kernel's working directory and /tmp) is full: grading stops.

    The CLI maps it to its own exit code, so the service can tell the student and the instructor
    that the disk limit ended the grading, not a fault of the machine.
    """

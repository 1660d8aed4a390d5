"""`grader extension`: per-student deadlines of the current assignment."""

from __future__ import annotations

from datetime import datetime

import click

from . import output
from .common import (
    DATETIME,
    Session,
    assignment_option,
    command,
    group,
    json_option,
    lecture_option,
    with_client,
)

extension = group("extension", "Per-student deadlines of the current assignment (extensions).")


@command("set", "grader extension set alice --due 2030-01-20T23:59 -a basics", extension)
@click.argument("user")
@click.option(
    "--due",
    type=DATETIME,
    required=True,
    help="The student's deadline (ISO 8601; local time unless a zone is given).",
)
@click.option("--late-until", type=DATETIME, help="Late submissions accepted until then (default: none).")
@click.option(
    "--max-submissions",
    type=click.IntRange(min=1),
    help="Their own attempt limit (default: the assignment's).",
)
@lecture_option
@assignment_option
@json_option
@with_client
def extension_set(
    session: Session,
    user: str,
    due: datetime,
    late_until: datetime | None,
    max_submissions: int | None,
    lecture: str | None,
    assignment: str | None,
    as_json: bool,
) -> None:
    """Give USER their own deadline, or replace it (instructors). Their submissions' lateness and
    final scores are recomputed against it."""
    granted = session.client().set_extension(
        session.lecture(lecture), session.assignment(assignment), user, due, late_until, max_submissions
    )
    if as_json:
        output.print_json(granted)
        return
    until = f", late until {output.when(granted.late_until)}" if granted.late_until else ""
    tries = f", {granted.max_submissions} submissions" if granted.max_submissions else ""
    output.note(
        f"{granted.user} has until {output.when(granted.due_date)}{until}{tries} for {granted.assignment}"
    )


@command("list", "grader extension list -a basics", extension)
@lecture_option
@assignment_option
@json_option
@with_client
def extension_list(session: Session, lecture: str | None, assignment: str | None, as_json: bool) -> None:
    """The assignment's extensions (tutors and instructors)."""
    found = list(session.client().extensions(session.lecture(lecture), session.assignment(assignment)))
    if as_json:
        output.print_json(found)
        return
    rows = [
        (e.user, e.display_name, output.when(e.due_date), output.when(e.late_until), e.max_submissions or "")
        for e in found
    ]
    output.table(("user", "name", "due", "late until", "max submissions"), rows, empty="No extensions.")


@command("delete", "grader extension delete alice -a basics", extension)
@click.argument("user")
@lecture_option
@assignment_option
@with_client
def extension_delete(session: Session, user: str, lecture: str | None, assignment: str | None) -> None:
    """Remove USER's extension (instructors): the assignment's deadline applies to them again."""
    name = session.assignment(assignment)
    session.client().remove_extension(session.lecture(lecture), name, user)
    output.note(f"{user} has no extension for {name} any more")


COMMANDS = [extension]

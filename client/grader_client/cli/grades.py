"""`grader grade`: a submission's per-cell grades, and setting manual points, comments, extra credit."""

from __future__ import annotations

import click

from . import output
from .common import Session, assignment_option, command, json_option, lecture_option, with_client


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    """GRADE_ID=VALUE pairs of a repeated option."""
    pairs = []
    for value in values:
        grade_id, sep, rest = value.partition("=")
        if not sep or not grade_id:
            raise click.UsageError(f"{option} takes GRADE_ID=VALUE, not {value!r}")
        pairs.append((grade_id, rest))
    return pairs


def _number(text: str, option: str) -> float | None:
    if text in ("", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        raise click.UsageError(f"{option} takes a number (or '-' to clear), not {text!r}") from None


def changes_of(
    points: tuple[str, ...], comments: tuple[str, ...], extra: tuple[str, ...]
) -> dict[str, dict[str, object]]:
    """The PUT body's cells from the command's options (a later option for a cell wins)."""
    cells: dict[str, dict[str, object]] = {}
    for grade_id, text in _pairs(points, "--set"):
        cells.setdefault(grade_id, {})["points"] = _number(text, "--set")
    for grade_id, text in _pairs(comments, "--comment"):
        cells.setdefault(grade_id, {})["comment"] = text or None
    for grade_id, text in _pairs(extra, "--extra"):
        cells.setdefault(grade_id, {})["extra_credit"] = _number(text, "--extra") or 0.0
    return cells


@command("grade", "grader grade 42 --set explain=2.5 --comment explain='Clear, but no example' -a basics")
@click.argument("submission_id", type=int, metavar="ID")
@click.option("--set", "points", multiple=True, metavar="GRADE_ID=POINTS",
              help="A cell's manual points ('-' clears them: grading's count again). Repeatable.")  # fmt: skip
@click.option("--comment", "comments", multiple=True, metavar="GRADE_ID=TEXT",
              help="A cell's comment (empty clears it). Repeatable.")  # fmt: skip
@click.option("--extra", multiple=True, metavar="GRADE_ID=POINTS", help="A cell's extra credit. Repeatable.")
@click.option("--version", "version", type=int,
              help="Refuse the change if the grades changed since this version (see --json).")  # fmt: skip
@lecture_option
@assignment_option
@json_option
@with_client
def grade(
    session: Session,
    submission_id: int,
    points: tuple[str, ...],
    comments: tuple[str, ...],
    extra: tuple[str, ...],
    version: int | None,
    lecture: str | None,
    assignment: str | None,
    as_json: bool,
) -> None:
    """Show submission ID's graded cells; with --set, --comment or --extra, change them first (tutors),
    all in one step. Students see their own once the results are released."""
    code, name = session.lecture(lecture), session.assignment(assignment)
    client = session.client()
    cells = changes_of(points, comments, extra)
    grades = (
        client.set_grades(code, name, submission_id, cells, version)
        if cells
        else client.grades(code, name, submission_id)
    )
    if as_json:
        output.print_json(grades)
        return
    rows = [
        (
            g.grade_id, g.kind, output.number(g.auto), output.number(g.manual), output.number(g.extra_credit),
            output.score(g.points, g.max), "yes" if g.needs_manual else "", g.comment or "",
        )
        for g in grades.items
    ]  # fmt: skip
    title = f"Submission {grades.submission}: {grades.manual_status}, version {grades.version}"
    output.table(
        ("cell", "kind", "auto", "manual", "extra", "counts", "by hand", "comment"), rows, title=title,
        empty="No graded cells.",
    )  # fmt: skip


COMMANDS = [grade]

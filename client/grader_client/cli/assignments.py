"""`grader assignment ...`: create, configure, upload, release and download assignments."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import click

from ..errors import GraderError, UsageError
from . import output
from .common import DATETIME, Session, command, group, json_option, lecture_option, with_client

if TYPE_CHECKING:
    from ..models import Assignment

assignment = group("assignment", "Assignments of the current lecture.")


def _settings_rows(found: Assignment) -> list[tuple[str, object]]:
    return [
        ("lecture", found.lecture),
        ("name", found.name),
        ("title", found.title),
        ("kind", found.kind),
        ("status", found.status),
        ("due", output.when(found.due_date)),
        ("late until", output.when(found.late_until)),
        ("late penalty", output.number(found.late_penalty)),
        ("max submissions", found.max_submissions or "unlimited"),
        ("max score", output.number(found.max_score)),
        ("grading policy", found.grading_policy),
        ("feedback policy", found.feedback_policy),
        ("released", output.when(found.released_at)),
        ("source uploaded", {True: "yes", False: "no"}.get(found.has_source)),
    ]


@command(
    "create",
    "grader assignment create basics --due 2030-01-15T23:59 --max-submissions 5",
    assignment,
)
@click.argument("name")
@click.option("--title", help="Title shown to students.")
@click.option(
    "--kind",
    type=click.Choice(["notebook", "command"]),
    help="notebook (default): nbgrader notebooks; command: any program, graded by the harness its "
    "source's grader.yaml names (docs/command-assignments.md).",
)
@click.option("--due", type=DATETIME, help="Deadline (ISO 8601; local time unless a zone is given).")
@click.option("--late-until", type=DATETIME, help="Late submissions accepted until then.")
@click.option("--late-penalty", type=click.FloatRange(0, 1), help="Fraction taken off late scores (0-1).")
@click.option("--max-submissions", type=click.IntRange(min=1), help="Submissions allowed per student.")
@click.option("--grading-policy", type=click.Choice(["latest", "best"]), help="Which submission counts.")
@click.option(
    "--feedback-policy", type=click.Choice(["manual", "immediate"]), help="When students see feedback."
)
@lecture_option
@json_option
@with_client
def assignment_create(
    session: Session,
    name: str,
    title: str | None,
    kind: str | None,
    due: datetime | None,
    late_until: datetime | None,
    late_penalty: float | None,
    max_submissions: int | None,
    grading_policy: str | None,
    feedback_policy: str | None,
    lecture: str | None,
    as_json: bool,
) -> None:
    """Create assignment NAME (instructors); upload its source and release it next."""
    from ..operations import UNSET

    def given(value: object) -> object:
        return UNSET if value is None else value

    created = session.client().create_assignment(
        session.lecture(lecture),
        name,
        title=given(title),
        kind=given(kind),
        due_date=given(due),
        late_until=given(late_until),
        late_penalty=given(late_penalty),
        max_submissions=given(max_submissions),
        grading_policy=given(grading_policy),
        feedback_policy=given(feedback_policy),
    )
    if as_json:
        output.print_json(created)
    else:
        output.note(
            f"Created assignment {created.name} in {created.lecture}; next: grader assignment upload {created.name} DIR"
        )


@command("list", "grader assignment list -l intro", assignment)
@lecture_option
@json_option
@with_client
def assignment_list(session: Session, lecture: str | None, as_json: bool) -> None:
    """Assignments of the lecture, newest first (students see released ones)."""
    found = list(session.client().assignments(session.lecture(lecture)))
    if as_json:
        output.print_json(found)
        return
    rows = [
        (
            a.name,
            a.title,
            a.status,
            output.when(a.due_date),
            output.number(a.max_score),
            a.max_submissions or "-",
        )
        for a in found
    ]
    output.table(
        ("name", "title", "status", "due", "max score", "submissions"), rows, empty="No assignments."
    )


@command("show", "grader assignment show basics", assignment)
@click.argument("name", required=False)
@lecture_option
@json_option
@with_client
def assignment_show(session: Session, name: str | None, lecture: str | None, as_json: bool) -> None:
    """One assignment (default: the current one) and its settings."""
    found = session.client().assignment(session.lecture(lecture), session.assignment(name))
    output.show(found, as_json, _settings_rows(found))


@command("upload", "grader assignment upload basics examples/source/basics", assignment)
@click.argument("args", nargs=-1, metavar="[NAME] PATH")
@lecture_option
@json_option
@with_client
def assignment_upload(session: Session, args: tuple[str, ...], lecture: str | None, as_json: bool) -> None:
    """Upload the source of assignment NAME (instructors): a directory (zipped for you), a .zip or one notebook.

    Each upload is kept as one version; a released assignment's student version is rebuilt at once.
    """
    if len(args) == 1:
        name, path = None, args[0]
    elif len(args) == 2:
        name, path = args
    else:
        raise click.UsageError("Give [NAME] PATH")
    code, name = session.lecture(lecture), session.assignment(name)
    updated = session.client().upload_assignment(code, name, Path(path))
    if as_json:
        output.print_json(updated)
    else:
        output.note(
            f"Uploaded {path} as the source of {code}/{name}"
            + ("" if updated.status != "created" else f"; next: grader assignment release {name}")
        )


@command("release", "grader assignment release basics", assignment)
@click.argument("name", required=False)
@lecture_option
@json_option
@with_client
def assignment_release(session: Session, name: str | None, lecture: str | None, as_json: bool) -> None:
    """Release the assignment to the students (instructors): solutions stubbed, hidden tests removed."""
    released = session.client().release_assignment(session.lecture(lecture), session.assignment(name))
    if as_json:
        output.print_json(released)
    else:
        output.note(f"Released {released.lecture}/{released.name}: students can download and submit it")


@command("release-feedback", "grader assignment release-feedback basics", assignment)
@click.argument("name", required=False)
@lecture_option
@with_client
def assignment_release_feedback(session: Session, name: str | None, lecture: str | None) -> None:
    """Let the students see the feedback generated so far (instructors)."""
    code, name = session.lecture(lecture), session.assignment(name)
    count = session.client().release_feedback(code, name)
    output.note(f"Feedback of {count} submission(s) of {code}/{name} released")


@command("download", "grader assignment download basics -o basics/", assignment)
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory (default: ./NAME).",
)
@click.option(
    "--version",
    type=click.Choice(["release", "source"]),
    help="Student version or source (default: source for staff).",
)
@click.option("--force", is_flag=True, help="Overwrite local files that differ from the download.")
@lecture_option
@with_client
def assignment_download(
    session: Session,
    name: str | None,
    target: Path | None,
    version: str | None,
    force: bool,
    lecture: str | None,
) -> None:
    """Download the assignment's files into a directory.

    Files you changed locally are never overwritten unless --force is given; nothing is written then.
    """
    code, name = session.lecture(lecture), session.assignment(name)
    data = session.client().download_assignment(code, name, version)
    target = target or Path(name)
    written, unchanged = extract(data, target, force)
    output.note(f"{target}: {len(written)} file(s) written, {len(unchanged)} already up to date")


def extract(data: bytes, target: Path, force: bool) -> tuple[list[Path], list[Path]]:
    """Unpack a zip into `target`; refuse (before writing anything) to overwrite changed files."""
    planned: list[tuple[Path, bytes]] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            relative = PurePosixPath(info.filename)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise GraderError(f"The download holds an unsafe path {info.filename!r}; nothing was written")
            planned.append((target.joinpath(*relative.parts), archive.read(info)))
    changed = [p for p, content in planned if p.is_file() and p.read_bytes() != content]
    blocked = [p for p, _ in planned if p.exists() and not p.is_file()]
    if blocked:
        raise UsageError(f"{blocked[0]} exists and is not a file; nothing was written")
    if changed and not force:
        names = ", ".join(str(p) for p in changed[:5]) + (" ..." if len(changed) > 5 else "")
        raise GraderError(
            f"Would overwrite {len(changed)} changed local file(s): {names}; nothing was written (use --force)"
        )
    written, unchanged = [], []
    for path, content in planned:
        if path.is_file() and path.read_bytes() == content:
            unchanged.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.download")
        tmp.write_bytes(content)
        tmp.replace(path)
        written.append(path)
    return written, unchanged


COMMANDS = [assignment]

"""`grader lecture`, `grader role`, `grader roster`: lectures and who has which role in them."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import GraderError, UsageError
from . import output
from .common import ROLES, Session, command, group, json_option, lecture_option, with_client

lecture = group("lecture", "Create, list and show lectures.")
role = group("role", "Roles in the current lecture: student, tutor, instructor.")
roster = group("roster", "Import a lecture's roles from a CSV file.")

# The service's rule for user names: no whitespace, slashes or control characters.
USERNAME = re.compile(r"^[^\s/\\\x00-\x1f]{1,255}$")


@command("create", "grader lecture create intro --name 'Intro to Python'", lecture)
@click.argument("code")
@click.option("--name", help="Display name (default: the code).")
@json_option
@with_client
def lecture_create(session: Session, code: str, name: str | None, as_json: bool) -> None:
    """Create a lecture (admins). CODE is its URL slug: lowercase letters, digits, - and _."""
    created = session.client().create_lecture(code, name)
    if as_json:
        output.print_json(created)
    else:
        output.note(f"Created lecture {created.code} ({created.name})")


@command("list", "grader lecture list --state active", lecture)
@click.option("--state", type=click.Choice(["active", "complete"]), help="Only lectures in this state.")
@json_option
@with_client
def lecture_list(session: Session, state: str | None, as_json: bool) -> None:
    """Lectures you have a role in (admins: all)."""
    lectures = list(session.client().lectures(state))
    if as_json:
        output.print_json(lectures)
        return
    rows = [(x.code, x.name, x.state, x.role) for x in lectures]
    output.table(("code", "name", "state", "your role"), rows, empty="No lectures.")


@command("show", "grader lecture show intro", lecture)
@click.argument("code", required=False)
@json_option
@with_client
def lecture_show(session: Session, code: str | None, as_json: bool) -> None:
    """One lecture (default: the current one)."""
    found = session.client().lecture(session.lecture(code))
    output.show(
        found,
        as_json,
        [
            ("code", found.code),
            ("name", found.name),
            ("state", found.state),
            ("created", output.when(found.created_at)),
            ("your role", found.role),
        ],
    )


@command("set", "grader role set alice student -l intro", role)
@click.argument("user")
@click.argument("role_name", metavar="ROLE", type=click.Choice(ROLES))
@lecture_option
@json_option
@with_client
def role_set(session: Session, user: str, role_name: str, lecture: str | None, as_json: bool) -> None:
    """Give USER the ROLE in the lecture (instructors); unknown users are created."""
    granted = session.client().set_role(session.lecture(lecture), user, role_name)
    if as_json:
        output.print_json(granted)
    else:
        output.note(f"{granted.user} is {granted.role} in {granted.lecture}")


@command("list", "grader role list --role tutor", role)
@click.option("--role", "role_name", type=click.Choice(ROLES), help="Only this role.")
@lecture_option
@json_option
@with_client
def role_list(session: Session, role_name: str | None, lecture: str | None, as_json: bool) -> None:
    """Everyone's role in the lecture (tutors and instructors)."""
    roles = list(session.client().roles(session.lecture(lecture), role_name))
    if as_json:
        output.print_json(roles)
        return
    rows = [(r.user, r.display_name, r.role, r.source) for r in roles]
    output.table(("user", "name", "role", "source"), rows, empty="No roles.")


@command("remove", "grader role remove alice", role)
@click.argument("user")
@lecture_option
@with_client
def role_remove(session: Session, user: str, lecture: str | None) -> None:
    """Take USER's role in the lecture away (instructors)."""
    code = session.lecture(lecture)
    session.client().remove_role(code, user)
    output.note(f"{user} has no role in {code} any more")


# --- roster ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RosterEntry:
    line: int
    user: str
    role: str


def read_roster(path: Path) -> list[RosterEntry]:
    """Every row checked before anything is sent; UsageError names the first bad line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text: {e}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "user" not in header or "role" not in header:
        raise UsageError(
            f"{path}: line 1 must be a header with the columns user,role (got {','.join(header) or 'nothing'})"
        )
    reader.fieldnames = header
    entries: list[RosterEntry] = []
    seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            user = (row.get("user") or "").strip()
            role_name = (row.get("role") or "").strip().lower()
            if not USERNAME.match(user):
                raise UsageError(f"{path}, line {line}: invalid user name {user!r}")
            if role_name not in ROLES:
                raise UsageError(
                    f"{path}, line {line}: unknown role {role_name!r} for {user} (use {', '.join(ROLES)})"
                )
            if user in seen:
                raise UsageError(f"{path}, line {line}: {user} is listed twice (also on line {seen[user]})")
            seen[user] = line
            entries.append(RosterEntry(line, user, role_name))
    except csv.Error as e:
        raise UsageError(f"{path}, line {reader.line_num}: {e}") from None
    return entries


@command("import", "grader roster import students.csv --apply", roster)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--apply", is_flag=True, help="Make the changes (default: only show them).")
@click.option(
    "--remove-missing", is_flag=True, help="Also remove the roles of users not in FILE (never your own)."
)
@lecture_option
@json_option
@with_client
def roster_import(
    session: Session, file: Path, apply: bool, remove_missing: bool, lecture: str | None, as_json: bool
) -> None:
    """Set roles from FILE, a CSV with a header and the columns user,role.

    Shows what would change and changes nothing unless --apply is given. A bad row (unknown role,
    a user listed twice, an invalid name) stops the import before anything is changed.
    """
    entries = read_roster(file)
    code = session.lecture(lecture)
    client = session.client()
    current = {r.user: r.role for r in client.roles(code)}
    me = client.whoami().name if remove_missing else None
    changes: list[tuple[str, str, str | None, str | None]] = []  # action, user, from, to
    for entry in entries:
        before = current.get(entry.user)
        if before != entry.role:
            changes.append(("add" if before is None else "change", entry.user, before, entry.role))
    listed = {e.user for e in entries}
    missing = sorted(u for u in current if u not in listed)
    if remove_missing:
        changes += [("remove", u, current[u], None) for u in missing if u != me]
    if as_json:
        output.print_json([{"action": a, "user": u, "from": f, "to": t} for a, u, f, t in changes])
    else:
        output.table(
            ("action", "user", "from", "to"),
            changes,
            title=f"Roster changes for {code}",
            empty=f"{code}: the roles already match {file}.",
        )
        unchanged = len(entries) - sum(1 for c in changes if c[0] != "remove")
        output.note(
            f"{len(changes)} change(s), {unchanged} unchanged"
            + (
                ""
                if remove_missing or not missing
                else f", {len(missing)} not in the file (kept; --remove-missing removes them)"
            )
        )
    if not apply:
        if changes:
            output.note("Dry run: nothing changed. Run again with --apply to make these changes.")
        return
    done = 0
    try:
        for action, user, _, to in changes:
            if action == "remove":
                client.remove_role(code, user)
            else:
                client.set_role(code, user, to)
            done += 1
    except GraderError as e:
        # Each change is one request; say exactly how far it got. Importing again finishes the job.
        raise _partial(e, done, len(changes)) from None
    output.note(f"Applied {done} change(s) to {code}")


def _partial(error: GraderError, done: int, total: int) -> GraderError:
    error.args = (
        f"{error} (after {done} of {total} changes; the rest were not made: importing again completes them)",
    )
    return error


COMMANDS = [lecture, role, roster]

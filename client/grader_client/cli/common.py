"""What every command shares: the session (credentials, defaults, the client), options, errors.

Only click is imported here: httpx and rich load when a command needs them, so `grader --help` is fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..errors import GraderError, UsageError

if TYPE_CHECKING:
    from ..aio import AsyncGraderClient
    from ..client import GraderClient
    from ..config import ProjectDefaults

ROLES = ("student", "tutor", "instructor")


class Session:
    """Per invocation: global options, and the client built on first use."""

    def __init__(self, url: str | None, token: str | None, timeout: float | None):
        self.url = url
        self.token = token
        self.timeout = timeout
        self._client: GraderClient | None = None
        self._defaults: ProjectDefaults | None = None

    def credentials(self, require_token: bool = True) -> Any:
        from ..config import resolve_credentials

        return resolve_credentials(self.url, self.token, require_token=require_token)

    def client(self, require_token: bool = True) -> GraderClient:
        if self._client is None:
            from ..client import GraderClient

            self._client = GraderClient(credentials=self.credentials(require_token), timeout=self.timeout)
        return self._client

    def async_client(self) -> AsyncGraderClient:
        from ..aio import AsyncGraderClient

        return AsyncGraderClient(credentials=self.credentials(), timeout=self.timeout)

    @property
    def defaults(self) -> ProjectDefaults:
        if self._defaults is None:
            from ..config import project_defaults

            self._defaults = project_defaults()
        return self._defaults

    def lecture(self, option: str | None) -> str:
        lecture = option or self.defaults.lecture
        if not lecture:
            raise UsageError(
                'No lecture: give --lecture CODE, set GRADER_LECTURE, or put lecture = "CODE" in .grader.toml'
            )
        return lecture

    def assignment(self, option: str | None) -> str:
        assignment = option or self.defaults.assignment
        if not assignment:
            raise UsageError(
                "No assignment: give it as an argument or with --assignment NAME, set GRADER_ASSIGNMENT, "
                'or put assignment = "NAME" in .grader.toml'
            )
        return assignment

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def session() -> Session:
    return click.get_current_context().find_object(Session)


class GraderGroup(click.Group):
    """Turns errors into one line on stderr and the documented exit code (usage errors too)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "grader"
            click.echo(f"{where}: {e.format_message()} (see: {where} --help)", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"grader: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("grader: aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GraderError as e:
            click.echo(f"grader: {e}", err=True)
            ctx.exit(e.exit_code)
        except OSError as e:  # a local file that cannot be read or written
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"grader: {where}{e.strerror or e}", err=True)
            ctx.exit(UsageError.exit_code)
        except KeyboardInterrupt:
            click.echo("grader: interrupted", err=True)
            ctx.exit(130)


def command(
    name: str, example: str, group: click.Group | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], click.Command]:
    """A command (of `group`, or standalone) whose --help ends with an example line."""
    epilog = "\b\nExample:\n  " + example
    if group is None:
        return click.command(name, epilog=epilog, **kwargs)
    return group.command(name, epilog=epilog, **kwargs)


def group(name: str, help: str) -> click.Group:
    return click.Group(name, help=help)


def lecture_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-l", "--lecture", metavar="CODE", help="Lecture (default: $GRADER_LECTURE, then .grader.toml)."
    )(f)


def assignment_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-a",
        "--assignment",
        metavar="NAME",
        help="Assignment (default: $GRADER_ASSIGNMENT, then .grader.toml).",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON only (for scripts).")(f)


class DateTimeType(click.ParamType):
    """ISO 8601; without a time zone it is local time."""

    name = "DATETIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(
                f"{value!r} is not a date-time such as 2030-01-15T23:59 or 2030-01-15T23:59:00+01:00",
                param,
                ctx,
            )
        return parsed if parsed.tzinfo else parsed.astimezone()


DATETIME = DateTimeType()


def with_client(f: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the session as the first argument."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(session(), *args, **kwargs)

    return wrapper


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()

"""The `grader` command: every operation of grader-service from the shell.

Exit codes: 0 ok; 1 the service refused (its message on stderr), or a local refusal such as
overwriting changed files, or a failed grading with `submit --wait`; 2 usage error or bad input
(nothing was sent); 3 the service cannot be reached, timed out, or failed (5xx).
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from . import account, assignments, extensions, grades, grading, lectures, submissions
from .common import GraderGroup, Session

EPILOG = """\b
Credentials: --url/--token, else $GRADER_URL/$GRADER_TOKEN, else ~/.config/grader/config.toml
(written by `grader login`), else $JUPYTERHUB_API_TOKEN inside JupyterHub. Lecture and assignment:
options, else $GRADER_LECTURE/$GRADER_ASSIGNMENT, else .grader.toml in this or a parent directory.
Exit codes: 0 ok, 1 refused by the service, 2 usage error, 3 service unreachable or failing.

\b
Example:
  grader login http://127.0.0.1:4010/ && grader whoami
"""


@click.group(cls=GraderGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="Service URL (default: $GRADER_URL, then the stored login).")
@click.option("--token", metavar="TOKEN", help="API token (prefer $GRADER_TOKEN: options show in `ps`).")
@click.option("--timeout", type=click.FloatRange(min=0.1), help="Seconds to wait for an answer (default 30).")
@click.version_option(__version__, prog_name="grader")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, timeout: float | None) -> None:
    """Work with grader-service: lectures, assignments, submissions, grading and scores."""
    ctx.obj = ctx.with_resource(_closing(Session(url, token, timeout)))


class _closing:
    def __init__(self, session: Session):
        self.session = session

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc: object) -> None:
        self.session.close()


for module in (account, lectures, assignments, extensions, submissions, grading, grades):
    for cmd in module.COMMANDS:
        cli.add_command(cmd)


def main() -> None:
    # httpx imports its own command line tool (click, rich.progress, rich.syntax, pygments' lexers)
    # when those are installed, as they are with this package: half the start-up time of a `grader`
    # command. This process never runs httpx's tool; httpx then defines a stub `main` instead.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    cli(prog_name="grader")


__all__ = ["cli", "main"]

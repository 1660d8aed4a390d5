"""`grader login`, `whoami`, `health`, `completion`: credentials and the service itself."""

from __future__ import annotations

import os
import sys

import click

from . import output
from .common import Session, command, json_option, with_client


@command("login", "grader login http://127.0.0.1:4010/ --token $TOKEN")
@click.argument("url", required=False)
@click.option("--token", envvar="GRADER_TOKEN", help="API token (default: $GRADER_TOKEN, else asked for).")
@with_client
def login(session: Session, url: str | None, token: str | None) -> None:
    """Check a token against the service and store it in ~/.config/grader/config.toml (mode 0600).

    URL defaults to $GRADER_URL or the URL stored before. Without --token the token is read from
    standard input (when piped) or asked for without echo.
    """
    from ..client import GraderClient
    from ..config import Credentials, config_path, normalize_url, read_config, write_config
    from ..errors import ConfigError

    url = url or session.url or os.environ.get("GRADER_URL") or read_config(config_path()).get("url")
    if not url:
        raise ConfigError("Give the service's URL: grader login URL")
    url = normalize_url(url)
    token = token or session.token
    if not token:
        if sys.stdin.isatty():
            token = click.prompt(f"Token for {url}", hide_input=True)
        else:
            token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise ConfigError("No token given")
    with GraderClient(credentials=Credentials(url, token, "login"), timeout=session.timeout) as client:
        user = client.whoami()
    path = write_config(url, token)
    output.note(
        f"Logged in to {url} as {user.name}{' (admin)' if user.admin else ''}; token stored in {path}"
    )


@command("whoami", "grader whoami --json")
@json_option
@with_client
def whoami(session: Session, as_json: bool) -> None:
    """Who the service takes you for: user, admin flag and role per lecture."""
    client = session.client()
    user = client.whoami()
    if as_json:
        output.print_json(user)
        return
    output.fields(
        [
            ("user", user.name + (f" ({user.display_name})" if user.display_name else "")),
            ("admin", "yes" if user.admin else "no"),
            ("service", client.url),
            ("token from", client.credentials.source),
        ]
    )
    output.table(("lecture", "role"), sorted(user.roles.items()), empty="No roles in any lecture.")


@command("health", "grader health --json")
@json_option
@with_client
def health(session: Session, as_json: bool) -> None:
    """The service's health (no token needed); exits 1 if it is degraded."""
    state = session.client(require_token=False).health()
    if as_json:
        output.print_json(state)
    else:
        queue = state.queue
        output.fields(
            [
                ("status", state.status),
                ("version", state.version),
                ("database", state.database),
                ("executor", state.executor),
                ("grading", {True: "yes", False: "no"}.get(state.grading)),
                ("queued", queue.queued if queue else None),
                ("running", queue.running if queue else None),
                (
                    "oldest queued",
                    f"{queue.oldest_queued_seconds:.1f} s" if queue and queue.oldest_queued_seconds else None,
                ),
                ("backlogged", ("yes" if queue.backlogged else "no") if queue else None),
            ]
        )
    if not state.ok:
        click.get_current_context().exit(1)


@command("completion", "grader completion bash >> ~/.bashrc")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (click's own) for SHELL."""
    from click.shell_completion import get_completion_class

    from . import cli

    cls = get_completion_class(shell)
    click.echo(cls(cli, {}, "grader", "_GRADER_COMPLETE").source())


COMMANDS = [login, whoami, health, completion]

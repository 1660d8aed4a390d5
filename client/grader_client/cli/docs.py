"""docs/cli.md, generated from the command itself: `python -m grader_client.cli.docs > docs/cli.md`.

A test compares the committed file with this output, so the page cannot drift from the command.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

from . import cli

WIDTH = 100
HEADER = """\
# The `grader` command

`grader` comes with the `grader-client` package (`pip install ./client`). Every command takes `--help`;
this page is generated from that help by `python -m grader_client.cli.docs > docs/cli.md` (a test checks
that it is up to date).

Shell completion uses click's own mechanism: `grader completion bash >> ~/.bashrc` (or `zsh`, `fish`).
"""


def _commands(
    command: click.Command, parent: click.Context | None, name: str
) -> Iterator[tuple[click.Context, click.Command]]:
    ctx = click.Context(
        command,
        info_name=name,
        parent=parent,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
        help_option_names=["-h", "--help"],  # as the command has (click caches the option)
    )
    yield ctx, command
    if isinstance(command, click.Group):
        for sub_name in sorted(command.commands):
            yield from _commands(command.commands[sub_name], ctx, sub_name)


def render() -> str:
    parts = [HEADER]
    entries = list(_commands(cli, None, "grader"))
    parts.append("## Commands\n")
    for ctx, command in entries[1:]:
        if not isinstance(command, click.Group):
            parts.append(
                f"- [`{ctx.command_path}`](#{ctx.command_path.replace(' ', '-')}): {command.get_short_help_str(80)}"
            )
    parts.append("")
    for ctx, command in entries:
        if isinstance(command, click.Group) and command is not cli:
            continue
        heading = "## " if command is cli else "### "
        parts.append(f'<a id="{ctx.command_path.replace(" ", "-")}"></a>\n{heading}`{ctx.command_path}`\n')
        parts.append("```text\n" + command.get_help(ctx).rstrip() + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")

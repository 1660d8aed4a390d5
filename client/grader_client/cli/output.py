"""Printing: rich tables for people, plain JSON for scripts, messages on stderr.

Results go to stdout; progress and confirmations go to stderr, so `grader ... --json | jq` and
`grader scores export > grades.csv` get nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from ..models import Gradebook, Model


@cache
def console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def preload() -> None:
    """Import what tables need, e.g. in a thread while waiting for the service."""
    import rich.console
    import rich.table  # noqa: F401


def print_json(value: Any) -> None:
    """`value`: a model, a list of models, or plain JSON."""
    if isinstance(value, list):
        value = [v.to_json() if hasattr(v, "to_json") else v for v in value]
    elif hasattr(value, "to_json"):
        value = value.to_json()
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def note(message: str) -> None:
    """A confirmation or progress line, on stderr."""
    click.echo(message, err=True)


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}"


def score(points: float | None, maximum: float | None) -> str:
    if points is None:
        return "-"
    return f"{points:g}/{maximum:g}" if maximum is not None else f"{points:g}"


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None, empty: str = ""
) -> None:
    from rich.table import Table

    out = Table(*columns, title=title, title_justify="left", show_edge=False, pad_edge=False)
    count = 0
    for row in rows:
        out.add_row(*("-" if cell is None else str(cell) for cell in row))
        count += 1
    if count == 0 and empty:
        note(empty)
        return
    console().print(out)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """One object as `name: value` lines."""
    from rich.table import Table

    out = Table.grid(padding=(0, 2))
    out.add_column(style="bold")
    out.add_column()
    for name, value in pairs:
        out.add_row(name, "-" if value is None or value == "" else str(value))
    console().print(out)


def show(model: Model, as_json: bool, pairs: Iterable[tuple[str, Any]]) -> None:
    if as_json:
        print_json(model)
    else:
        fields(pairs)


def score_table(gradebook: Gradebook) -> None:
    """Per test: name, points, max, status (and the error of a failed one)."""
    results = gradebook.results()
    several = len({r.notebook for r in results}) > 1
    rows = []
    for r in results:
        name = f"{r.notebook}/{r.name}" if several else r.name
        detail = r.status or ""
        if r.error and r.status not in ("passed", None):
            detail = f"{detail}: {r.error}"[:100]
        rows.append((name, number(r.points), number(r.max_points), detail))
    rows.append(("total", number(gradebook.score), number(gradebook.max_score), ""))
    table(("test", "points", "max", "status"), rows)

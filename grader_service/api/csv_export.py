"""CSV exports that a spreadsheet opens as data, never as formulas.

A spreadsheet treats a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (and a
leading tab or carriage return can hide such a character), so a user named ``=HYPERLINK(...)``
would run in the instructor's spreadsheet (OWASP: CSV injection). Every CSV the service writes
goes through :func:`to_csv`, which neutralises such text cells by prefixing a single quote, the
spreadsheet convention for "this is text".

Numbers are the service's own values (scores, seconds), never user text: they are written as
numbers, so a legitimate negative number stays ``-1.5`` and sums in the spreadsheet. Only ``int``
and ``float`` count as numbers; a string that looks like one (``"-1"``) is text and is quoted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """The cell as written: text that a spreadsheet would evaluate gets a leading ``'``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV text with a header line; every cell passes through :func:`spreadsheet_safe`."""
    return csv_lines([columns, *([row.get(column) for column in columns] for row in rows)])


def csv_lines(rows: Iterable[Sequence[Any]]) -> str:
    """Rows given as lists of cells, as CSV lines (a streamed export writes a chunk at a time); every cell
    passes through :func:`spreadsheet_safe`."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([spreadsheet_safe(cell) for cell in row])
    return out.getvalue()

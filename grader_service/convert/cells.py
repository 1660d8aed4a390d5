"""nbgrader cell metadata (schema v3) and the marker regions inside cell sources.

Our notebooks use nbgrader's format unchanged, so that instructors can keep authoring with the
nbgrader toolbar and existing course material keeps working. The rules here are the format's:

- `metadata.nbgrader = {grade, solution, locked, task, grade_id, points, schema_version}`;
  `checksum` and `cell_type` are added at release.
- A *solution* cell holds the student's answer; `### BEGIN SOLUTION` / `### END SOLUTION` delimit
  the part that is replaced by a stub in the student version (the whole cell when no markers).
- A *grade* cell is worth `points`. A grade cell that is not a solution cell is an autograded
  *test* cell; a grade cell that is also a solution cell (or a *task* cell) is graded by hand.
- A *locked* cell (test cells are always locked) is overwritten by the instructor's version when
  grading, whatever the student did to it.
- `BEGIN HIDDEN TESTS` / `END HIDDEN TESTS` delimit test code removed from the student version.
  As in nbgrader, a delimiter is any line *containing* the phrase (case-sensitive): `### BEGIN
  HIDDEN TESTS`, `# BEGIN HIDDEN TESTS`, the bare phrase, indented, with trailing text. The
  delimiter lines go with the region; an `END` without a `BEGIN` is dropped like nbgrader drops
  it. `remove_hidden_tests` is the one parser of these regions: the release, the feedback and the
  redaction of hidden-test code in what students see all use what it returns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 3

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "BEGIN HIDDEN TESTS"
END_HIDDEN = "END HIDDEN TESTS"
BEGIN_MARK_SCHEME = "BEGIN MARK SCHEME"
END_MARK_SCHEME = "END MARK SCHEME"

DEFAULT_CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
DEFAULT_TEXT_STUB = "YOUR ANSWER HERE"

GRADE_ID_RE = re.compile(r"^[a-zA-Z0-9_\-]+$")


def nbgrader_meta(cell: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cell's nbgrader metadata dict, or None when it has none (or it is not a dict)."""
    meta = cell.get("metadata") or {}
    value = meta.get("nbgrader") if isinstance(meta, Mapping) else None
    return value if isinstance(value, dict) else None


def is_grade(cell: Mapping[str, Any]) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta and meta.get("grade", False))


def is_solution(cell: Mapping[str, Any]) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta and meta.get("solution", False))


def is_task(cell: Mapping[str, Any]) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta and meta.get("task", False))


def is_locked(cell: Mapping[str, Any]) -> bool:
    """Locked as nbgrader defines it: never a solution cell, always a grade cell, else the flag."""
    meta = nbgrader_meta(cell)
    if not meta or meta.get("solution", False):
        return False
    if meta.get("grade", False):
        return True
    return bool(meta.get("locked", False))


def is_test(cell: Mapping[str, Any]) -> bool:
    """An autograded test cell: a code grade cell that is not an answer."""
    return cell.get("cell_type") == "code" and is_grade(cell) and not is_solution(cell)


def is_manual(cell: Mapping[str, Any]) -> bool:
    """A cell worth points that a person grades: graded answers and task cells."""
    return (is_grade(cell) and (is_solution(cell) or cell.get("cell_type") != "code")) or is_task(cell)


def grade_id(cell: Mapping[str, Any]) -> str | None:
    meta = nbgrader_meta(cell)
    if not meta:
        return None
    value = meta.get("grade_id")
    return value if isinstance(value, str) and value else None


def points(cell: Mapping[str, Any]) -> float:
    meta = nbgrader_meta(cell) or {}
    try:
        return float(meta.get("points", 0.0))
    except (TypeError, ValueError):
        return 0.0


def source_text(cell: Mapping[str, Any]) -> str:
    """Cell source as one string (the on-disk format allows a list of lines)."""
    src = cell.get("source", "")
    if isinstance(src, list):
        return "".join(str(part) for part in src)
    return src if isinstance(src, str) else ""


def compute_checksum(cell: Mapping[str, Any]) -> str:
    """The checksum nbgrader records at release (same inputs, so releases stay interchangeable).

    md5 over source, cell type, the grade/solution/locked flags, grade id and (grade cells) points.
    """
    h = hashlib.md5()
    h.update(source_text(cell).encode("utf-8"))
    h.update(str(cell.get("cell_type", "")).encode("utf-8"))
    h.update(str(is_grade(cell)).encode("utf-8"))
    h.update(str(is_solution(cell)).encode("utf-8"))
    h.update(str(is_locked(cell)).encode("utf-8"))
    h.update(str((nbgrader_meta(cell) or {}).get("grade_id", "")).encode("utf-8"))
    if is_grade(cell):
        h.update(str(points(cell)).encode("utf-8"))
    return h.hexdigest()


class MarkerError(ValueError):
    """Unbalanced or nested region markers in a cell."""


@dataclass(frozen=True)
class RegionResult:
    """What removing/replacing a marker region did."""

    text: str
    found: bool


def replace_solution_regions(text: str, stub: str) -> RegionResult:
    """Replace each `### BEGIN SOLUTION` ... `### END SOLUTION` block by `stub`, indented like the marker.

    A marker is a line whose stripped content is exactly the marker (as in nbgrader), so a string
    that merely mentions the phrase is left alone.
    """
    out: list[str] = []
    inside = False
    found = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            if inside:
                raise MarkerError(f"nested '{BEGIN_SOLUTION}'")
            inside = found = True
            indent = line[: line.find(BEGIN_SOLUTION)]
            out.extend(indent + stub_line for stub_line in stub.split("\n"))
        elif stripped == END_SOLUTION:
            if not inside:
                raise MarkerError(f"'{END_SOLUTION}' without a matching '{BEGIN_SOLUTION}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"'{BEGIN_SOLUTION}' without a matching '{END_SOLUTION}'")
    return RegionResult("\n".join(out), found)


def remove_regions(text: str, begin: str, end: str) -> RegionResult:
    """Drop every line from one containing `begin` to one containing `end` (nbgrader's substring rule)."""
    out: list[str] = []
    inside = False
    found = False
    for line in text.split("\n"):
        if begin in line:
            if inside:
                raise MarkerError(f"nested '{begin}'")
            inside = found = True
        elif end in line:
            if not inside:
                raise MarkerError(f"'{end}' without a matching '{begin}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"'{begin}' without a matching '{end}'")
    return RegionResult("\n".join(out), found)


@dataclass(frozen=True)
class HiddenTests:
    """What removing the hidden-test regions of a cell did."""

    text: str  # the cell as the student gets it
    found: bool
    lines: tuple[str, ...]  # every non-blank line removed (delimiters included), stripped


def remove_hidden_tests(text: str) -> HiddenTests:
    """Drop every hidden-test region, delimiters included, exactly as nbgrader 0.9's ClearHiddenTests.

    Raises MarkerError for a nested `BEGIN` or a `BEGIN` without an `END` (nbgrader refuses those
    too); a stray `END` line is dropped silently, as nbgrader does.
    """
    out: list[str] = []
    removed: list[str] = []
    inside = False
    found = False
    for line in text.split("\n"):
        if BEGIN_HIDDEN in line:
            if inside:
                raise MarkerError(f"nested '{BEGIN_HIDDEN}'")
            inside = found = True
        elif END_HIDDEN in line:
            inside = False
        elif not inside:
            out.append(line)
            continue
        # A delimiter line can carry code too ("assert x  # BEGIN HIDDEN TESTS"): it goes as well.
        if line.strip():
            removed.append(line.strip())
    if inside:
        raise MarkerError(f"'{BEGIN_HIDDEN}' without a matching '{END_HIDDEN}'")
    return HiddenTests("\n".join(out), found, tuple(removed))


def has_hidden_tests(text: str) -> bool:
    return any(BEGIN_HIDDEN in line for line in text.split("\n"))

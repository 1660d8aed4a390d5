"""The shape every preprocessor has: one concern, applied to a whole notebook.

A command (release, autograde, feedback) is a list of preprocessors run in order; each gets the
notebook and a shared `Context` and returns the (possibly new) notebook. Problems (for source
validation) and notes (what grading found and repaired, for the instructor) are collected in the
context instead of raised, so one run reports everything at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nbformat import NotebookNode

from ..errors import Problem


@dataclass
class Note:
    """Something grading found (tampering, repairs) that an instructor should see."""

    cell: str | None
    kind: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"cell": self.cell, "kind": self.kind, "message": self.message}


@dataclass
class Context:
    """Shared state of one notebook going through a pipeline."""

    notebook: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def problem(self, cell: str | None, text: str) -> None:
        self.problems.append({"notebook": self.notebook, "cell": cell, "problem": text})

    def note(self, cell: str | None, kind: str, message: str) -> None:
        self.notes.append(Note(cell, kind, message))


def cell_label(cell: NotebookNode, index: int) -> str:
    """How messages name a cell: its grade id, else its 1-based position."""
    meta = (cell.get("metadata") or {}).get("nbgrader")
    if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str) and meta["grade_id"]:
        return meta["grade_id"]
    return f"#{index + 1}"


class Preprocessor:
    """Base class: override `preprocess` (whole notebook) or `preprocess_cell` (one cell)."""

    def preprocess(self, nb: NotebookNode, ctx: Context) -> NotebookNode:
        for index, cell in enumerate(nb.cells):
            self.preprocess_cell(cell, ctx, index)
        return nb

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        """Per-cell hook for preprocessors that need nothing but the cell."""

    def __repr__(self) -> str:
        return type(self).__name__


def run_pipeline(nb: NotebookNode, ctx: Context, steps: Iterable[Preprocessor]) -> NotebookNode:
    for step in steps:
        nb = step.preprocess(nb, ctx)
    return nb

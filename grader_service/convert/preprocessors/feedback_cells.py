"""Preprocessors that prepare a graded notebook for the student's eyes (see `visibility`)."""

from __future__ import annotations

from typing import Any

from nbformat import NotebookNode
from nbformat.v4 import new_output

from .. import cells as nbcells
from ..visibility import WITHHELD_NOTICE
from .base import Context, Preprocessor

HIDDEN_NOTICE = "# (hidden tests ran here; their code is not shown)"
RESULT_KEYS = (
    "points", "max_points", "status", "partial", "error", "hidden_tests", "tampering",
    "manual_points", "extra_credit", "comment",
)  # fmt: skip


def _role(cell: NotebookNode) -> str:
    return (cell.metadata.get("grader") or {}).get("role", "")


class HideHiddenTestCode(Preprocessor):
    """Show test cells as the student got them: hidden-test regions removed, with a notice."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        text = nbcells.source_text(cell)
        if _role(cell) == "test" and nbcells.has_hidden_tests(text):
            visible = nbcells.remove_hidden_tests(text).text.rstrip("\n")
            cell.source = f"{visible}\n{HIDDEN_NOTICE}" if visible else HIDDEN_NOTICE


class WithholdOutputs(Preprocessor):
    """Every code cell from the taint point on shows a notice instead of its outputs.

    Every such cell, with or without outputs, so that not even the presence of output tells
    anything.
    """

    def __init__(self, first_withheld: int | None):
        self.first_withheld = first_withheld

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        if cell.cell_type != "code" or self.first_withheld is None or index < self.first_withheld:
            return
        cell.outputs = [new_output("stream", name="stdout", text=f"[{WITHHELD_NOTICE}]\n")]


class AttachResults(Preprocessor):
    """Put each graded cell's result, as the student may see it, into its metadata for the page."""

    def __init__(self, entry: dict[str, Any]):
        self.cells = entry.get("cells") or {}

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        grader = cell.metadata.get("grader")
        if not isinstance(grader, dict):
            return
        grader.pop("result", None)  # only what the gradebook says counts
        result = self.cells.get(grader.get("grade_id"))
        if isinstance(result, dict):
            grader["result"] = {key: result.get(key) for key in RESULT_KEYS}

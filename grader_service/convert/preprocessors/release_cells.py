"""Preprocessors that turn a validated source notebook into the student version.

Applied in nbgrader's order (lock, clear solutions, clear outputs, clear hidden tests, clear mark
scheme, checksums) so the result is JSON-equal to `nbgrader generate_assignment`'s.
"""

from __future__ import annotations

from nbformat import NotebookNode

from .. import cells as nbcells
from .base import Context, Preprocessor


class LockCells(Preprocessor):
    """Mark cells the student must not delete (answers, tests, read-only) or edit (tests, read-only)."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        if nbcells.is_solution(cell):
            cell.metadata["deletable"] = False
        elif nbcells.is_grade(cell) or nbcells.is_locked(cell):
            cell.metadata["deletable"] = False
            cell.metadata["editable"] = False


class ClearSolutions(Preprocessor):
    """Replace answers by stubs: marked regions in place, unmarked solution cells entirely."""

    def __init__(
        self, code_stub: str = nbcells.DEFAULT_CODE_STUB, text_stub: str = nbcells.DEFAULT_TEXT_STUB
    ):
        self.code_stub = code_stub
        self.text_stub = text_stub

    def preprocess(self, nb: NotebookNode, ctx: Context) -> NotebookNode:
        nb.metadata.pop("celltoolbar", None)
        return super().preprocess(nb, ctx)

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        stub = self.code_stub if cell.cell_type == "code" else self.text_stub
        result = nbcells.replace_solution_regions(nbcells.source_text(cell), stub)
        if result.found:
            cell.source = result.text
        elif nbcells.is_solution(cell):
            cell.source = stub


class ClearOutputs(Preprocessor):
    """No outputs, no execution counts, no output-related metadata (stale outputs prove nothing)."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("collapsed", None)
            cell.metadata.pop("scrolled", None)


class ClearHiddenTests(Preprocessor):
    """Remove `BEGIN/END HIDDEN TESTS` regions; collect the removed lines in `ctx.data["hidden_lines"]`.

    Those lines are what the service redacts from everything a student sees of a grading.
    """

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        text = nbcells.source_text(cell)
        result = nbcells.remove_hidden_tests(text)
        if result.text != text:  # a region, or a stray END line nbgrader drops too
            cell.source = result.text
        ctx.data.setdefault("hidden_lines", []).extend(result.lines)


class ClearMarkScheme(Preprocessor):
    """Remove `BEGIN/END MARK SCHEME` regions from task cells."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        result = nbcells.remove_regions(
            nbcells.source_text(cell), nbcells.BEGIN_MARK_SCHEME, nbcells.END_MARK_SCHEME
        )
        if result.found:
            cell.source = result.text


class ComputeChecksums(Preprocessor):
    """Record checksum and cell type of nbgrader cells, as nbgrader does at release."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        if nbcells.is_grade(cell) or nbcells.is_solution(cell) or nbcells.is_locked(cell):
            meta = cell.metadata["nbgrader"]
            meta["checksum"] = nbcells.compute_checksum(cell)
            meta["cell_type"] = cell.cell_type

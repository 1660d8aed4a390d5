"""Preprocessors that prepare a graded notebook for the student's eyes."""

from __future__ import annotations

from nbformat import NotebookNode

from .. import cells as nbcells
from .base import Context, Preprocessor

HIDDEN_NOTICE = "# (hidden tests ran here; their code is not shown)"


def _role(cell: NotebookNode) -> str:
    return (cell.metadata.get("grader") or {}).get("role", "")


class HideHiddenTestCode(Preprocessor):
    """Show test cells as the student got them: hidden-test regions removed, with a notice."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        text = nbcells.source_text(cell)
        if _role(cell) == "test" and nbcells.has_hidden_tests(text):
            visible = nbcells.remove_hidden_tests(text).text.rstrip("\n")
            cell.source = f"{visible}\n{HIDDEN_NOTICE}" if visible else HIDDEN_NOTICE
            cell.metadata.setdefault("grader", {})["hidden_tests"] = True


class ReduceHiddenTestErrors(Preprocessor):
    """Errors in cells with hidden tests keep name and message but lose the traceback (it quotes code)."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        if cell.cell_type != "code" or not (cell.metadata.get("grader") or {}).get("hidden_tests"):
            return
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]

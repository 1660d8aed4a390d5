"""Check an instructor's source notebook before anything is released from it."""

from __future__ import annotations

from numbers import Real

from nbformat import NotebookNode

from .. import cells as nbcells
from .base import Context, Preprocessor, cell_label


class ValidateSource(Preprocessor):
    """Report every metadata and marker problem (nbgrader schema v3 rules), naming each cell.

    Checked: schema version; grade/solution/locked/task types; grade ids present, well formed and
    unique; points present on grade cells, numeric and not negative; markdown grade cells being
    answers; task cells being markdown; solution, hidden-test and mark-scheme markers balanced,
    not nested, and only in cells of the right kind.
    """

    def preprocess(self, nb: NotebookNode, ctx: Context) -> NotebookNode:
        seen: dict[str, str] = {}
        for index, cell in enumerate(nb.cells):
            label = cell_label(cell, index)
            self._check_metadata(cell, ctx, label, seen)
            self._check_markers(cell, ctx, label)
        return nb

    def _check_metadata(self, cell: NotebookNode, ctx: Context, label: str, seen: dict[str, str]) -> None:
        raw = (cell.get("metadata") or {}).get("nbgrader")
        if raw is None:
            return
        if not isinstance(raw, dict):
            ctx.problem(label, "nbgrader metadata is not an object")
            return
        version = raw.get("schema_version")
        if version != nbcells.SCHEMA_VERSION:
            ctx.problem(label, f"nbgrader schema_version is {version!r}; only version 3 is supported")
        for flag in ("grade", "solution", "locked", "task"):
            if flag in raw and not isinstance(raw[flag], bool):
                ctx.problem(label, f"nbgrader '{flag}' must be true or false, not {raw[flag]!r}")
        grade, solution, locked, task = (bool(raw.get(f)) for f in ("grade", "solution", "locked", "task"))
        if grade or solution or locked or task:
            _check_grade_id(raw.get("grade_id"), ctx, label, seen)
        if "points" in raw:
            _check_points(raw["points"], ctx, label)
        elif grade or task:
            ctx.problem(label, "graded cell without points")
        _check_cell_type(cell.cell_type, grade, solution, task, ctx, label)

    def _check_markers(self, cell: NotebookNode, ctx: Context, label: str) -> None:
        text = nbcells.source_text(cell)
        try:
            found = nbcells.replace_solution_regions(text, "").found
        except nbcells.MarkerError as e:
            ctx.problem(label, f"malformed solution markers: {e}")
            found = False
        if found and not nbcells.is_solution(cell):
            ctx.problem(label, "solution markers in a cell that is not a solution cell")
        try:
            hidden = nbcells.remove_hidden_tests(text).found
        except nbcells.MarkerError as e:
            ctx.problem(label, f"malformed hidden-test markers: {e}")
            hidden = False
        if hidden and not nbcells.is_grade(cell):
            ctx.problem(label, "hidden-test markers in a cell that is not a graded test cell")
        try:
            scheme = nbcells.remove_regions(text, nbcells.BEGIN_MARK_SCHEME, nbcells.END_MARK_SCHEME).found
        except nbcells.MarkerError as e:
            ctx.problem(label, f"malformed mark-scheme markers: {e}")
            scheme = False
        if scheme and not nbcells.is_task(cell):
            ctx.problem(label, "mark-scheme markers in a cell that is not a task cell")


def _check_grade_id(gid: object, ctx: Context, label: str, seen: dict[str, str]) -> None:
    """A graded, solution, locked or task cell needs a well-formed grade_id no other cell uses."""
    if gid is None or gid == "":
        ctx.problem(label, "missing grade_id")
    elif not isinstance(gid, str) or not nbcells.GRADE_ID_RE.match(gid):
        ctx.problem(label, f"invalid grade_id {gid!r} (use letters, digits, '_' and '-')")
    elif gid in seen:
        ctx.problem(label, f"duplicate grade_id {gid!r} (also used by cell {seen[gid]})")
    else:
        seen[gid] = label


def _check_points(value: object, ctx: Context, label: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Real):
        ctx.problem(label, f"points must be a number, not {value!r}")
    elif value < 0:
        ctx.problem(label, f"negative points ({value})")


def _check_cell_type(
    cell_type: str, grade: bool, solution: bool, task: bool, ctx: Context, label: str
) -> None:
    """Task cells are markdown; a markdown answer is graded by hand, so it is both grade and solution."""
    if task:
        if cell_type != "markdown":
            ctx.problem(label, "a task cell must be a markdown cell")
    elif cell_type == "markdown":
        if grade and not solution:
            ctx.problem(label, "a markdown grade cell must also be a solution cell")
        if solution and not grade:
            ctx.problem(label, "a markdown solution cell must also be a grade cell (with points)")

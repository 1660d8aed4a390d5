"""Preprocessors that make a submission gradable: the instructor's cells back in charge.

Whatever the student did to the notebook, the cells that decide the score are the instructor's:
test cells and other locked cells are overwritten with the source version (hidden tests
included), deleted ones are re-inserted where they belong, changed cell types are repaired,
metadata is restored from the source (so inflated points mean nothing), and cells whose nbgrader
metadata was stripped are recognised by cell id, by content or by position. Every such finding
becomes a note for the instructor.

The pipeline (order matters):
StripGraderMetadata, MatchCells, DropDuplicateCells, NeutraliseForeignCells, RestoreProtectedCells,
RestoreAnswerCells, ReinsertDeletedCells, EnsureCellIds, AssignRoles.

They share `ctx.data["source"]`: the list of `SourceCell` built by `describe_source`.
"""

from __future__ import annotations

import copy
import difflib
import uuid
from dataclasses import dataclass

import nbformat
from nbformat import NotebookNode

from .. import cells as nbcells
from .base import Context, Preprocessor

PROTECTED_ROLES = ("test", "locked", "task")


@dataclass(frozen=True)
class SourceCell:
    """A cell of the instructor's notebook, classified once."""

    index: int
    cell: NotebookNode
    role: str  # test | locked | task | solution | manual | plain
    grade_id: str | None
    visible_source: str  # what the student was given (hidden tests removed)

    @property
    def protected(self) -> bool:
        return self.role in PROTECTED_ROLES


def source_role(cell: NotebookNode) -> str:
    if nbcells.is_task(cell):
        return "task"
    if nbcells.is_test(cell):
        return "test"
    if nbcells.is_grade(cell) and nbcells.is_solution(cell):
        return "manual"
    if nbcells.is_solution(cell):
        return "solution"
    if nbcells.is_grade(cell) or nbcells.is_locked(cell):
        return "locked"
    return "plain"


def describe_source(nb: NotebookNode) -> list[SourceCell]:
    described = []
    for index, cell in enumerate(nb.cells):
        text = nbcells.source_text(cell)
        visible = nbcells.remove_hidden_tests(text).text if nbcells.has_hidden_tests(text) else text
        described.append(SourceCell(index, cell, source_role(cell), nbcells.grade_id(cell), visible))
    return described


def _grader(cell: NotebookNode) -> dict:
    return cell.metadata.setdefault("grader", {})


def _same_text(a: str, b: str) -> bool:
    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip().splitlines())

    return norm(a) == norm(b)


class StripGraderMetadata(Preprocessor):
    """Drop `metadata.grader` (ours) and execution metadata a submission may carry: only we write it."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        cell.metadata.pop("grader", None)
        cell.metadata.pop("execution", None)


class MatchCells(Preprocessor):
    """Find, for each instructor cell with a grade id, the submission cell that stands for it.

    By grade id first; then, for cells whose metadata is gone, by cell id, by identical visible
    content, and finally by position between matched neighbours (only cells without an id, i.e.
    older notebook formats, and only when it is unambiguous or the content is similar).
    Annotates `metadata.grader` with `source_index`/`matched_by`, `duplicate_of`, or `foreign`.
    """

    def preprocess(self, nb: NotebookNode, ctx: Context) -> NotebookNode:
        source: list[SourceCell] = ctx.data["source"]
        by_gid = {s.grade_id: s for s in source if s.grade_id and s.role != "plain"}
        matched: dict[int, int] = {}  # source index -> submission index
        claimed: set[int] = set()
        for index, cell in enumerate(nb.cells):
            gid = nbcells.grade_id(cell)
            if gid is None:
                continue
            target = by_gid.get(gid)
            if target is None:
                _grader(cell)["foreign"] = gid
            elif target.index in matched:
                _grader(cell)["duplicate_of"] = gid
            else:
                matched[target.index] = index
                claimed.add(index)
                _grader(cell).update(source_index=target.index, matched_by="grade_id")

        def free(index: int) -> bool:
            cell = nb.cells[index]
            return index not in claimed and "duplicate_of" not in cell.metadata.get("grader", {})

        missing = [s for s in by_gid.values() if s.index not in matched]
        by_cell_id = {cell.get("id"): i for i, cell in enumerate(nb.cells) if cell.get("id")}
        for s in missing:
            cid = s.cell.get("id")
            by_id = by_cell_id.get(cid) if cid else None
            if by_id is not None and free(by_id):
                self._claim(nb, s, by_id, "cell id", matched, claimed)
        for s in [s for s in missing if s.index not in matched and s.protected]:
            for index, cell in enumerate(nb.cells):
                if free(index) and _same_text(nbcells.source_text(cell), s.visible_source):
                    self._claim(nb, s, index, "content", matched, claimed)
                    break
        for s in [s for s in missing if s.index not in matched and s.protected]:
            by_position = self._by_position(nb, source, s, matched, free)
            if by_position is not None:
                self._claim(nb, s, by_position, "position", matched, claimed)
        ctx.data["matched"] = matched
        return nb

    @staticmethod
    def _claim(nb: NotebookNode, s: SourceCell, index: int, how: str, matched: dict, claimed: set) -> None:
        matched[s.index] = index
        claimed.add(index)
        grader = _grader(nb.cells[index])
        grader.pop("foreign", None)
        grader.update(source_index=s.index, matched_by=how)

    @staticmethod
    def _by_position(
        nb: NotebookNode, source: list[SourceCell], s: SourceCell, matched: dict, free
    ) -> int | None:
        before = [matched[t.index] for t in source[: s.index] if t.index in matched]
        after = [matched[t.index] for t in source[s.index + 1 :] if t.index in matched]
        lo = max(before) + 1 if before else 0
        hi = min(after) if after else len(nb.cells)
        candidates = [
            i
            for i in range(lo, hi)
            if free(i) and not nb.cells[i].get("id") and nbcells.grade_id(nb.cells[i]) is None
        ]
        if not candidates:
            return None
        scored = [
            (difflib.SequenceMatcher(None, nbcells.source_text(nb.cells[i]), s.visible_source).ratio(), i)
            for i in candidates
        ]
        best_ratio, best = max(scored)
        if best_ratio >= 0.5:
            return best
        # Unambiguous slot: the source has exactly one unmatched protected cell here, and the
        # submission exactly one candidate.
        lo_src = max((t.index for t in source[: s.index] if t.index in matched), default=-1)
        hi_src = min((t.index for t in source[s.index + 1 :] if t.index in matched), default=len(source))
        unmatched_here = [
            t for t in source[lo_src + 1 : hi_src] if t.protected and t.grade_id and t.index not in matched
        ]
        if len(unmatched_here) == 1 and len(candidates) == 1:
            return candidates[0]
        return None


class DropDuplicateCells(Preprocessor):
    """A second copy of a graded or locked cell is removed; a second answer cell becomes ordinary."""

    def preprocess(self, nb: NotebookNode, ctx: Context) -> NotebookNode:
        source = {s.grade_id: s for s in ctx.data["source"] if s.grade_id}
        kept = []
        for cell in nb.cells:
            gid = cell.metadata.get("grader", {}).get("duplicate_of")
            if gid is None:
                kept.append(cell)
            elif source[gid].protected:
                ctx.note(gid, "tampering", f"a copy of the protected cell '{gid}' was removed")
            else:
                cell.metadata.pop("nbgrader", None)
                cell.metadata["grader"] = {}
                ctx.note(
                    gid,
                    "repair",
                    f"a second cell claiming to be answer '{gid}' is treated as an ordinary cell",
                )
                kept.append(cell)
        nb.cells = kept
        return nb


class NeutraliseForeignCells(Preprocessor):
    """Cells claiming grade ids the source does not have lose their nbgrader metadata (no points)."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        gid = cell.metadata.get("grader", {}).pop("foreign", None)
        if gid is not None:
            cell.metadata.pop("nbgrader", None)
            ctx.note(
                None,
                "tampering",
                f"cell #{index + 1} claims grade id '{gid}', which the source does not have",
            )


class RestoreProtectedCells(Preprocessor):
    """Overwrite matched test/locked cells with the instructor's version, noting what differed."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        s = _source_of(cell, ctx)
        if s is None or not s.protected:
            return
        gid = s.grade_id
        what = "test cell" if s.role == "test" else "locked cell"
        how = cell.metadata["grader"].get("matched_by")
        if how != "grade_id":
            ctx.note(
                gid, "tampering", f"{what} '{gid}' had its nbgrader metadata removed (recognised by {how})"
            )
        if cell.cell_type != s.cell.cell_type:
            ctx.note(
                gid, "tampering", f"{what} '{gid}' was changed from {s.cell.cell_type} to {cell.cell_type}"
            )
        if not _same_text(nbcells.source_text(cell), s.visible_source):
            ctx.note(gid, "tampering", f"{what} '{gid}' was edited; the instructor's version was run")
        _note_metadata_changes(cell, s, ctx)
        _overwrite(cell, s)


class RestoreAnswerCells(Preprocessor):
    """Answer cells keep the student's text but get the source's metadata and cell type back."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        s = _source_of(cell, ctx)
        if s is None or s.protected:
            return
        if cell.cell_type != s.cell.cell_type:
            ctx.note(
                s.grade_id,
                "repair",
                f"answer cell '{s.grade_id}' was changed from {s.cell.cell_type} to "
                f"{cell.cell_type}; changed back",
            )
            _set_type(cell, s.cell.cell_type)
        _note_metadata_changes(cell, s, ctx)
        cell.metadata["nbgrader"] = copy.deepcopy(s.cell.metadata["nbgrader"])


class ReinsertDeletedCells(Preprocessor):
    """Protected cells missing from the submission are inserted after their source predecessor."""

    def preprocess(self, nb: NotebookNode, ctx: Context) -> NotebookNode:
        present = {c.metadata.get("grader", {}).get("source_index") for c in nb.cells}
        used_ids = {c.get("id") for c in nb.cells}
        for s in ctx.data["source"]:
            if not s.protected or s.index in present:
                continue
            position = 0
            for i, c in enumerate(nb.cells):
                src_index = c.metadata.get("grader", {}).get("source_index")
                if src_index is not None and src_index < s.index:
                    position = i + 1
            cell = copy.deepcopy(s.cell)
            if nb.get("nbformat_minor", 5) >= 5:
                cell["id"] = cell.get("id") if cell.get("id") not in used_ids else uuid.uuid4().hex[:8]
                used_ids.add(cell["id"])
            else:
                cell.pop("id", None)
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
            cell.metadata["grader"] = {"source_index": s.index, "matched_by": "reinserted"}
            nb.cells.insert(position, cell)
            present.add(s.index)
            what = "test cell" if s.role == "test" else "locked cell"
            ctx.note(
                s.grade_id, "tampering", f"{what} '{s.grade_id}' was deleted; it was re-inserted and run"
            )
        return nb


class EnsureCellIds(Preprocessor):
    """nbformat 4.5 requires a unique id per cell; students' tools do not always keep that promise."""

    def preprocess(self, nb: NotebookNode, ctx: Context) -> NotebookNode:
        if nb.get("nbformat_minor", 0) < 5:
            for cell in nb.cells:
                cell.pop("id", None)
            return nb
        seen: set[str] = set()
        for cell in nb.cells:
            cid = cell.get("id")
            if not isinstance(cid, str) or not cid or cid in seen:
                cid = uuid.uuid4().hex[:8]
                cell["id"] = cid
            seen.add(cid)
        return nb


class AssignRoles(Preprocessor):
    """Record each cell's role (test/locked/task/solution/manual/student) for execution and feedback."""

    def preprocess_cell(self, cell: NotebookNode, ctx: Context, index: int) -> None:
        s = _source_of(cell, ctx)
        grader = cell.metadata.setdefault("grader", {})
        grader["role"] = s.role if s is not None and s.role != "plain" else "student"
        if s is not None and s.grade_id:
            grader["grade_id"] = s.grade_id


def reconcile_pipeline() -> list[Preprocessor]:
    return [
        StripGraderMetadata(),
        MatchCells(),
        DropDuplicateCells(),
        NeutraliseForeignCells(),
        RestoreProtectedCells(),
        RestoreAnswerCells(),
        ReinsertDeletedCells(),
        EnsureCellIds(),
        AssignRoles(),
    ]


# ---- helpers ---------------------------------------------------------------------------------------


def _source_of(cell: NotebookNode, ctx: Context) -> SourceCell | None:
    index = cell.metadata.get("grader", {}).get("source_index")
    return ctx.data["source"][index] if index is not None else None


def _note_metadata_changes(cell: NotebookNode, s: SourceCell, ctx: Context) -> None:
    theirs = nbcells.nbgrader_meta(cell)
    ours = s.cell.metadata["nbgrader"]
    if not theirs:
        return
    if ("points" in ours or "points" in theirs) and theirs.get("points") != ours.get("points"):
        ctx.note(
            s.grade_id,
            "tampering",
            f"points of '{s.grade_id}' were changed to {theirs.get('points')!r} in the submission; "
            f"the source's {ours.get('points')!r} counts",
        )
    for flag in ("grade", "solution", "locked", "task"):
        if bool(theirs.get(flag)) != bool(ours.get(flag)):
            ctx.note(s.grade_id, "tampering", f"nbgrader '{flag}' flag of '{s.grade_id}' was changed")


def _set_type(cell: NotebookNode, cell_type: str) -> None:
    if cell.cell_type == cell_type:
        return
    cell.cell_type = cell_type
    if cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    cell.pop("attachments", None)


def _overwrite(cell: NotebookNode, s: SourceCell) -> None:
    _set_type(cell, s.cell.cell_type)
    cell.source = nbcells.source_text(s.cell)
    grader = cell.metadata.get("grader", {})
    cell.metadata = nbformat.from_dict(copy.deepcopy(dict(s.cell.metadata)))
    cell.metadata["grader"] = grader
    if "attachments" in s.cell:
        cell["attachments"] = copy.deepcopy(s.cell["attachments"])

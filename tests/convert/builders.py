"""Small builders for synthetic nbgrader notebooks used by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode


def meta(
    grade_id: str,
    *,
    grade: bool = False,
    solution: bool = False,
    locked: bool = False,
    points: float | None = None,
    task: bool = False,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": task,
    }
    if points is not None:
        data["points"] = points
    return {"nbgrader": data}


def code(source: str, **kw: Any) -> NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if kw:
        cell.metadata.update(meta(**kw))
    return cell


def answer(grade_id: str, source: str) -> NotebookNode:
    return code(source, grade_id=grade_id, solution=True)


def graded(grade_id: str, source: str, points: float) -> NotebookNode:
    return code(source, grade_id=grade_id, grade=True, locked=True, points=points)


def locked(grade_id: str, source: str) -> NotebookNode:
    return code(source, grade_id=grade_id, locked=True)


def markdown(source: str, **kw: Any) -> NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source)
    if kw:
        cell.metadata.update(meta(**kw))
    return cell


def notebook(*cells: NotebookNode) -> NotebookNode:
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write(nb: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1))
    return path


def with_answers(
    release_nb: dict[str, Any], answers: dict[str, str], insert: dict[int, str] | None = None
) -> NotebookNode:
    """A submission: the release with answer cells replaced, and extra cells inserted at positions."""
    nb = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    for position, source in sorted((insert or {}).items(), reverse=True):
        nb.cells.insert(position, nbformat.v4.new_code_cell(source))
    return nb

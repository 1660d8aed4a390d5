"""`release`: the student version of an assignment, and its gradebook skeleton.

Pipeline per notebook: ValidateSource, then LockCells, ClearSolutions, ClearOutputs,
ClearHiddenTests, ClearMarkScheme, ComputeChecksums. The output is JSON-equal to what
`nbgrader generate_assignment` 0.9 writes for the same source. Nothing is executed.

Every notebook is validated before anything is written, so a source with problems leaves the
release directory untouched and the instructor gets all problems at once.

The gradebook skeleton (grade ids, max points, totals) and the lines of hidden-test code that were
removed are *returned*, not written into the release directory: that directory is exactly what
students download, and although the skeleton holds nothing secret (the points are in the released
metadata too) it is service data, not course material. The CLI can write the skeleton elsewhere
with `--gradebook`; the service keeps the hidden lines to redact them from what students see.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from . import cells as nbcells
from . import gradebook
from .errors import Problem, SourceValidationError, UnreadableNotebookError
from .notebooks import (
    copy_file,
    find_notebooks,
    iter_other_files,
    notebook_name,
    read_notebook,
    write_notebook,
)
from .preprocessors.base import Context, run_pipeline
from .preprocessors.release_cells import (
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutputs,
    ClearSolutions,
    ComputeChecksums,
    LockCells,
)
from .preprocessors.validate_source import ValidateSource


def release_pipeline(
    code_stub: str = nbcells.DEFAULT_CODE_STUB, text_stub: str = nbcells.DEFAULT_TEXT_STUB
) -> list:
    return [
        LockCells(),
        ClearSolutions(code_stub, text_stub),
        ClearOutputs(),
        ClearHiddenTests(),
        ClearMarkScheme(),
        ComputeChecksums(),
    ]


def load_source(source_dir: Path) -> dict[Path, NotebookNode]:
    """Read and validate every source notebook; raise SourceValidationError listing all problems."""
    if not source_dir.is_dir():
        raise SourceValidationError(
            [{"notebook": str(source_dir), "cell": None, "problem": "no such directory"}]
        )
    paths = find_notebooks(source_dir)
    if not paths:
        raise SourceValidationError(
            [{"notebook": str(source_dir), "cell": None, "problem": "no notebooks in the source directory"}]
        )
    problems: list[Problem] = []
    notebooks: dict[Path, NotebookNode] = {}
    for rel in paths:
        name = notebook_name(rel)
        try:
            nb = read_notebook(source_dir / rel)
        except UnreadableNotebookError as e:
            problems.append({"notebook": name, "cell": None, "problem": e.reason})
            continue
        ctx = Context(name)
        ValidateSource().preprocess(nb, ctx)
        problems.extend(ctx.problems)
        notebooks[rel] = nb
    if problems:
        raise SourceValidationError(problems)
    return notebooks


@dataclass(frozen=True)
class Release:
    """What releasing an assignment produced besides the files."""

    gradebook: dict[str, Any]  # the skeleton
    hidden_lines: list[str]  # every distinct non-blank line of hidden-test code removed, stripped


def release_notebook(
    source: NotebookNode, name: str, ctx: Context | None = None, **stubs: str
) -> NotebookNode:
    """The student version of one (validated) source notebook."""
    return run_pipeline(copy.deepcopy(source), ctx or Context(name), release_pipeline(**stubs))


def release_assignment(
    source_dir: Path,
    release_dir: Path,
    *,
    code_stub: str = nbcells.DEFAULT_CODE_STUB,
    text_stub: str = nbcells.DEFAULT_TEXT_STUB,
) -> Release:
    """Validate `source_dir`, write the student version to `release_dir`, return the skeleton.

    Raises SourceValidationError (nothing written) when the source has problems.
    """
    source_dir, release_dir = Path(source_dir), Path(release_dir)
    notebooks = load_source(source_dir)
    skeleton_notebooks = {}
    hidden: set[str] = set()
    for rel, nb in notebooks.items():
        name = notebook_name(rel)
        ctx = Context(name)
        student_version = release_notebook(nb, name, ctx, code_stub=code_stub, text_stub=text_stub)
        write_notebook(student_version, release_dir / rel)
        hidden.update(ctx.data.get("hidden_lines", []))
        skeleton_notebooks[name] = gradebook.skeleton_notebook(nb, rel)
    for rel in iter_other_files(source_dir):
        copy_file(source_dir / rel, release_dir / rel)
    return Release(gradebook.skeleton(skeleton_notebooks), sorted(hidden))

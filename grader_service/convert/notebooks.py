"""Reading, writing and finding notebooks, robustly and cheaply.

Submissions are untrusted input: a file may be empty, truncated, 20 MB of stale outputs or not a
notebook at all. Reading therefore never raises anything but `UnreadableNotebookError`, drops
outputs as early as possible when asked (they are never trusted and can be huge), and skips
nbformat's JSON-schema validation, which costs seconds on big files and buys nothing here: every
field we use is checked explicitly below.

Writing keeps cell sources as single strings (nbformat would split them into lists of lines) so a
release is JSON-equal to what `nbgrader generate_assignment` writes, and goes through a temporary
file plus `os.replace` so a reader never sees half a file and a symlink planted at the target is
replaced rather than followed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from .errors import UnreadableNotebookError

# Bigger than any sane notebook; protects the grader from a multi-GB "notebook".
DEFAULT_MAX_NOTEBOOK_BYTES = 100_000_000

# Never part of an assignment: editor and interpreter droppings.
IGNORED_NAMES = frozenset({".ipynb_checkpoints", "__pycache__", ".git", ".DS_Store"})
IGNORED_SUFFIXES = (".pyc",)

_CELL_TYPES = ("code", "markdown", "raw")


def read_notebook(
    path: Path, *, keep_outputs: bool = True, max_bytes: int = DEFAULT_MAX_NOTEBOOK_BYTES
) -> NotebookNode:
    """Parse `path` into a v4 NotebookNode with string sources; raise UnreadableNotebookError.

    With `keep_outputs=False` code cells come back with no outputs and no execution count.
    """
    try:
        size = path.stat().st_size
    except OSError as e:
        raise UnreadableNotebookError(str(path), f"cannot read: {e.strerror or e}") from None
    if size == 0:
        raise UnreadableNotebookError(str(path), "the file is empty")
    if size > max_bytes:
        raise UnreadableNotebookError(str(path), f"the file is too big ({size} bytes > {max_bytes})")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except UnicodeDecodeError:
        raise UnreadableNotebookError(str(path), "the file is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UnreadableNotebookError(str(path), f"not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, RecursionError, ValueError) as e:
        raise UnreadableNotebookError(str(path), f"cannot parse: {e}") from None
    return notebook_from_dict(data, str(path), keep_outputs=keep_outputs)


def notebook_from_dict(data: Any, name: str, *, keep_outputs: bool = True) -> NotebookNode:
    """Check the structure we rely on and normalise it (string sources, v4, dict metadata)."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise UnreadableNotebookError(name, "not a notebook (no list of cells)")
    major = data.get("nbformat")
    if major != 4:
        if major == 3 and isinstance(data.get("worksheets"), list):
            try:
                data = nbformat.convert(nbformat.from_dict(data), 4)
            except Exception as e:  # any failure means "unreadable"
                raise UnreadableNotebookError(name, f"cannot upgrade nbformat 3 notebook: {e}") from None
        else:
            raise UnreadableNotebookError(name, f"unsupported nbformat version {major!r}")
    cells = []
    for index, raw in enumerate(data["cells"]):
        if not isinstance(raw, dict):
            raise UnreadableNotebookError(name, f"cell {index} is not an object")
        cells.append(_normalise_cell(raw, keep_outputs=keep_outputs))
    metadata = data.get("metadata")
    nb = {
        "cells": cells,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "nbformat": 4,
        "nbformat_minor": data.get("nbformat_minor") if isinstance(data.get("nbformat_minor"), int) else 5,
    }
    return nbformat.from_dict(nb)


def _normalise_cell(raw: dict[str, Any], *, keep_outputs: bool) -> dict[str, Any]:
    cell = dict(raw)
    if cell.get("cell_type") not in _CELL_TYPES:
        cell["cell_type"] = "raw"
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(part for part in src if isinstance(part, str))
    cell["source"] = src if isinstance(src, str) else ""
    if not isinstance(cell.get("metadata"), dict):
        cell["metadata"] = {}
    if cell["cell_type"] == "code":
        outputs = cell.get("outputs")
        cell["outputs"] = outputs if keep_outputs and isinstance(outputs, list) else []
        if not keep_outputs or not isinstance(cell.get("execution_count"), int):
            cell["execution_count"] = None
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    return cell


def notebook_to_json(nb: dict[str, Any]) -> str:
    """Serialise as Jupyter does (1-space indent, UTF-8), keeping sources as single strings."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename over `path` (never follows a symlink)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_notebook(nb: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, notebook_to_json(nb))


def is_ignored(path: Path) -> bool:
    return any(part in IGNORED_NAMES for part in path.parts) or path.name.endswith(IGNORED_SUFFIXES)


def find_notebooks(directory: Path) -> list[Path]:
    """Notebooks under `directory`, as sorted relative paths (checkpoints etc. excluded)."""
    found = []
    for path in directory.rglob("*.ipynb"):
        rel = path.relative_to(directory)
        if not is_ignored(rel) and path.is_file():
            found.append(rel)
    return sorted(found)


def notebook_name(relpath: Path) -> str:
    """The gradebook key of a notebook: its relative path without `.ipynb`, with `/` separators."""
    return relpath.with_suffix("").as_posix()


def iter_other_files(directory: Path) -> Iterable[Path]:
    """Relative paths of the non-notebook files of an assignment (what release copies)."""
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if is_ignored(rel) or path.suffix == ".ipynb" or not path.is_file():
            continue
        yield rel


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)

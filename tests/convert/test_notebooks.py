"""Reading untrusted notebooks robustly; writing atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from grader_service.convert.errors import UnreadableNotebookError
from grader_service.convert.notebooks import find_notebooks, read_notebook, write_notebook


def test_empty_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "a.ipynb"
    path.write_bytes(b"")
    with pytest.raises(UnreadableNotebookError, match="empty"):
        read_notebook(path)


def test_truncated_json_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "a.ipynb"
    path.write_text('{"cells": [{"cell_type": "code", "sou')
    with pytest.raises(UnreadableNotebookError, match="not valid JSON"):
        read_notebook(path)


@pytest.mark.parametrize("data", [[], {"cells": 3}, {"cells": [1]}, {"cells": [], "nbformat": 2}])
def test_wrong_structure_is_unreadable(tmp_path: Path, data: object) -> None:
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps(data))
    with pytest.raises(UnreadableNotebookError):
        read_notebook(path)


def test_too_big_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {}}))
    with pytest.raises(UnreadableNotebookError, match="too big"):
        read_notebook(path, max_bytes=10)


def test_sources_are_joined_and_outputs_dropped_on_request(tmp_path: Path) -> None:
    path = tmp_path / "a.ipynb"
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["a = 1\n", "b = 2"],
                "metadata": {},
                "execution_count": 3,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "x" * 1000}],
            },
            {"cell_type": "weird", "source": "?", "metadata": []},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.write_text(json.dumps(nb))
    read = read_notebook(path, keep_outputs=False)
    assert read.cells[0].source == "a = 1\nb = 2"
    assert read.cells[0].outputs == [] and read.cells[0].execution_count is None
    assert read.cells[1].cell_type == "raw" and read.cells[1].metadata == {}


def test_write_replaces_a_planted_symlink_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out" / "a.ipynb"
    target.parent.mkdir()
    os.symlink(victim, target)
    write_notebook({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, target)
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and json.loads(target.read_text())["cells"] == []


def test_find_notebooks_skips_checkpoints(tmp_path: Path) -> None:
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.ipynb").write_text("{}")
    (tmp_path / "a.ipynb").write_text("{}")
    assert [p.as_posix() for p in find_notebooks(tmp_path)] == ["a.ipynb", "sub/b.ipynb"]

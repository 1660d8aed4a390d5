"""Source validation: every problem reported, each naming notebook, cell and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader_service.convert.errors import SourceValidationError
from grader_service.convert.release import load_source, release_assignment

from .builders import answer, code, graded, markdown, notebook, write


def problems_of(tmp_path: Path, *cells) -> list[dict]:
    write(notebook(*cells), tmp_path / "src" / "hw.ipynb")
    with pytest.raises(SourceValidationError) as info:
        load_source(tmp_path / "src")
    return info.value.problems


def test_duplicate_grade_ids(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, answer("a", "x = 1"), graded("a", "assert x", 1))
    assert problem == {
        "notebook": "hw",
        "cell": "a",
        "problem": "duplicate grade_id 'a' (also used by cell a)",
    }


def test_missing_grade_id_and_points(tmp_path: Path) -> None:
    bad = code("assert 1", grade_id="", grade=True, locked=True)
    found = problems_of(tmp_path, bad)
    texts = [p["problem"] for p in found]
    assert "missing grade_id" in texts and "graded cell without points" in texts
    assert all(p["cell"] == "#1" for p in found)


def test_negative_points_and_non_numeric_points(tmp_path: Path) -> None:
    found = problems_of(tmp_path, graded("t1", "assert 1", -1), graded("t2", "assert 1", "many"))
    assert {(p["cell"], p["problem"]) for p in found} == {
        ("t1", "negative points (-1)"),
        ("t2", "points must be a number, not 'many'"),
    }


def test_malformed_markers(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        answer("a", "### BEGIN SOLUTION\nx = 1"),
        graded("t", "### BEGIN HIDDEN TESTS\nassert x", 1),
        code("### BEGIN SOLUTION\ny = 2\n### END SOLUTION"),
        answer("b", "### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS"),
    )
    texts = {(p["cell"], p["problem"]) for p in found}
    assert (
        "a",
        "malformed solution markers: '### BEGIN SOLUTION' without a matching '### END SOLUTION'",
    ) in texts
    assert (
        "t",
        "malformed hidden-test markers: 'BEGIN HIDDEN TESTS' without a matching 'END HIDDEN TESTS'",
    ) in texts
    assert ("#3", "solution markers in a cell that is not a solution cell") in texts
    assert ("b", "hidden-test markers in a cell that is not a graded test cell") in texts


def test_markdown_grade_cell_must_be_an_answer(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, markdown("Explain", grade_id="m", grade=True, points=2))
    assert problem["problem"] == "a markdown grade cell must also be a solution cell"


def test_error_message_lists_every_problem(tmp_path: Path) -> None:
    write(notebook(graded("t", "assert 1", -2), graded("t", "assert 2", 1)), tmp_path / "src" / "hw.ipynb")
    with pytest.raises(SourceValidationError) as info:
        release_assignment(tmp_path / "src", tmp_path / "rel")
    text = str(info.value)
    assert "hw, cell t: negative points (-2)" in text and "duplicate grade_id 't'" in text
    assert not (tmp_path / "rel").exists(), "nothing is written for an invalid source"


def test_unreadable_and_empty_source(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(SourceValidationError, match="no notebooks"):
        load_source(tmp_path / "src")
    (tmp_path / "src" / "x.ipynb").write_text("{oops")
    with pytest.raises(SourceValidationError, match="not valid JSON"):
        load_source(tmp_path / "src")

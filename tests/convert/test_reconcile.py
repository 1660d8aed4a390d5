"""Reconciliation preprocessors, one at a time and as the pipeline."""

from __future__ import annotations

import copy

import nbformat

from grader_service.convert.preprocessors.base import Context, run_pipeline
from grader_service.convert.preprocessors.reconcile import (
    MatchCells,
    StripGraderMetadata,
    describe_source,
    reconcile_pipeline,
)

from .builders import answer, code, graded, locked, markdown, notebook

SOURCE = notebook(
    markdown("intro"),
    locked("setup", "import math"),
    answer("a", "def a():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
    graded("test_a", "assert a() == 1\n### BEGIN HIDDEN TESTS\nassert a() + 1 == 2\n### END HIDDEN TESTS", 2),
    answer("b", "def b():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION"),
    graded("test_b", "assert b() == 2", 1),
)
for i, c in enumerate(SOURCE.cells):
    c["id"] = f"c{i}"


def student_copy() -> nbformat.NotebookNode:
    nb = copy.deepcopy(SOURCE)
    nb.cells[3].source = "assert a() == 1"  # what the release shows
    nb.cells[2].source = "def a():\n    return 1"
    nb.cells[4].source = "def b():\n    return 2"
    return nb


def reconcile(nb) -> tuple[nbformat.NotebookNode, Context]:
    ctx = Context("hw", data={"source": describe_source(SOURCE)})
    return run_pipeline(nb, ctx, reconcile_pipeline()), ctx


def roles(nb) -> list[tuple[str, str | None]]:
    return [(c.metadata["grader"]["role"], c.metadata["grader"].get("grade_id")) for c in nb.cells]


def test_untouched_submission_gets_hidden_tests_back_and_no_notes() -> None:
    nb, ctx = reconcile(student_copy())
    assert "BEGIN HIDDEN TESTS" in nb.cells[3].source
    assert nb.cells[2].source == "def a():\n    return 1", "answers are the student's"
    assert ctx.notes == []
    assert roles(nb) == [
        ("student", None),
        ("locked", "setup"),
        ("solution", "a"),
        ("test", "test_a"),
        ("solution", "b"),
        ("test", "test_b"),
    ]


def test_metadata_stripped_test_is_found_by_cell_id_and_restored() -> None:
    nb = student_copy()
    nb.cells[5].metadata = {}
    nb.cells[5].source = "assert True"
    nb, ctx = reconcile(nb)
    assert nb.cells[5].source == "assert b() == 2" and nb.cells[5].metadata["nbgrader"]["points"] == 1
    assert {n.message for n in ctx.notes} >= {
        "test cell 'test_b' had its nbgrader metadata removed (recognised by cell id)",
        "test cell 'test_b' was edited; the instructor's version was run",
    }


def test_metadata_stripped_without_ids_is_found_by_content_or_position() -> None:
    nb = student_copy()
    for c in nb.cells:
        del c["id"]
    nb.nbformat_minor = 4
    nb.cells[5].metadata = {}  # same content: found by content
    nb.cells[3].metadata = {}
    nb.cells[3].source = "pass"  # different content, alone in its slot: found by position
    nb, ctx = reconcile(nb)
    assert [c.metadata["grader"]["role"] for c in nb.cells].count("test") == 2
    assert len(nb.cells) == 6
    assert any("recognised by content" in n.message for n in ctx.notes)
    assert any("recognised by position" in n.message for n in ctx.notes)


def test_deleted_test_is_reinserted_after_its_predecessor() -> None:
    nb = student_copy()
    del nb.cells[3]
    nb, ctx = reconcile(nb)
    assert roles(nb)[3] == ("test", "test_a") and len(nb.cells) == 6
    assert [n.message for n in ctx.notes] == ["test cell 'test_a' was deleted; it was re-inserted and run"]


def test_changed_cell_type_and_inflated_points_are_repaired() -> None:
    nb = student_copy()
    nb.cells[5].cell_type = "markdown"
    del nb.cells[5]["outputs"], nb.cells[5]["execution_count"]
    nb.cells[3].metadata["nbgrader"]["points"] = 100
    nb, ctx = reconcile(nb)
    assert nb.cells[5].cell_type == "code" and nb.cells[5].outputs == []
    assert nb.cells[3].metadata["nbgrader"]["points"] == 2
    messages = " ".join(n.message for n in ctx.notes)
    assert "changed from code to markdown" in messages and "changed to 100" in messages


def test_foreign_and_duplicate_cells_lose_their_claims() -> None:
    nb = student_copy()
    fake = graded("bonus", "assert True", 50)
    copy_of_test = copy.deepcopy(nb.cells[5])
    copy_of_test["id"] = "copy"
    nb.cells.extend([fake, copy_of_test])
    nb, ctx = reconcile(nb)
    assert len(nb.cells) == 7, "the duplicate test was removed"
    assert "nbgrader" not in nb.cells[6].metadata and roles(nb)[6] == ("student", None)
    messages = " ".join(n.message for n in ctx.notes)
    assert "claims grade id 'bonus'" in messages and "copy of the protected cell 'test_b'" in messages


def test_student_cannot_preset_grader_metadata() -> None:
    nb = student_copy()
    nb.cells.append(code("x = 1"))
    nb.cells[-1].metadata["grader"] = {"role": "test", "grade_id": "test_b", "result": {"points": 99}}
    ctx = Context("hw", data={"source": describe_source(SOURCE)})
    nb = StripGraderMetadata().preprocess(nb, ctx)
    assert "grader" not in nb.cells[-1].metadata
    MatchCells().preprocess(nb, ctx)
    assert ctx.data["matched"][5] == 5

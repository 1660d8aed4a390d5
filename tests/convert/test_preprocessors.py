"""Release and feedback preprocessors, one at a time."""

from __future__ import annotations

import nbformat

from grader_service.convert.preprocessors.base import Context
from grader_service.convert.preprocessors.feedback_cells import HideHiddenTestCode, WithholdOutputs
from grader_service.convert.preprocessors.release_cells import (
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutputs,
    ClearSolutions,
    ComputeChecksums,
    LockCells,
)

from .builders import answer, code, graded, locked, markdown, notebook


def run(preprocessor, *cells):
    nb = notebook(*cells)
    return preprocessor.preprocess(nb, Context("hw")).cells


def test_lock_cells() -> None:
    a, t, lk, plain = run(
        LockCells(), answer("a", "x"), graded("t", "assert x", 1), locked("l", "y"), code("z")
    )
    assert a.metadata["deletable"] is False and "editable" not in a.metadata
    assert t.metadata["deletable"] is False and t.metadata["editable"] is False
    assert lk.metadata["editable"] is False
    assert "deletable" not in plain.metadata


def test_clear_solutions_whole_cell_and_notebook_toolbar() -> None:
    nb = notebook(answer("a", "x = 42"), markdown("42", grade_id="m", grade=True, solution=True, points=1))
    nb.metadata["celltoolbar"] = "Create Assignment"
    nb = ClearSolutions().preprocess(nb, Context("hw"))
    assert [c.source for c in nb.cells] == [
        "# YOUR CODE HERE\nraise NotImplementedError()",
        "YOUR ANSWER HERE",
    ]
    assert "celltoolbar" not in nb.metadata


def test_clear_outputs() -> None:
    cell = code("print(1)")
    cell.outputs = [nbformat.v4.new_output("stream", text="1")]
    cell.execution_count = 3
    cell.metadata.update(collapsed=True, scrolled=True, tags=["keep"])
    (out,) = run(ClearOutputs(), cell)
    assert out.outputs == [] and out.execution_count is None and out.metadata == {"tags": ["keep"]}


def test_clear_hidden_tests_and_mark_scheme() -> None:
    (t,) = run(ClearHiddenTests(), graded("t", "a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS\nc", 1))
    assert t.source == "a\nc"
    task = markdown(
        "Do it\n### BEGIN MARK SCHEME\nsecret\n### END MARK SCHEME", grade_id="k", task=True, points=1
    )
    (k,) = run(ClearMarkScheme(), task)
    assert k.source == "Do it"


def test_compute_checksums_only_for_nbgrader_cells() -> None:
    t, plain = run(ComputeChecksums(), graded("t", "assert 1", 1), code("x"))
    assert len(t.metadata["nbgrader"]["checksum"]) == 32 and t.metadata["nbgrader"]["cell_type"] == "code"
    assert "nbgrader" not in plain.metadata


def test_feedback_hides_hidden_test_code_and_withholds_outputs_from_the_first_hidden_test() -> None:
    before = code("print('mine')")
    before.outputs = [nbformat.v4.new_output("stream", name="stdout", text="mine\n")]
    cell = graded(
        "t", "assert f(1)\n### BEGIN HIDDEN TESTS\nassert f(2) == 'secret'\n### END HIDDEN TESTS", 1
    )
    cell.metadata["grader"] = {"role": "test", "grade_id": "t"}
    cell.outputs = [
        nbformat.v4.new_output(
            "error", ename="AssertionError", evalue="", traceback=["assert f(2) == 'secret'"]
        )
    ]
    after = code("print(stash)")
    after.outputs = [nbformat.v4.new_output("stream", name="stdout", text="c2VjcmV0\n")]
    quiet = code("x = 1")
    nb = notebook(before, cell, after, quiet)
    ctx = Context("hw")
    nb = WithholdOutputs(1).preprocess(HideHiddenTestCode().preprocess(nb, ctx), ctx)
    assert "secret" not in nb.cells[1].source and "hidden tests ran here" in nb.cells[1].source
    assert nb.cells[0].outputs[0]["text"] == "mine\n"
    for withheld in nb.cells[1:]:
        (notice,) = withheld.outputs
        assert "Output not shown" in notice["text"]

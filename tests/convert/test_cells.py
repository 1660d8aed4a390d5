"""nbgrader metadata helpers, checksums and marker regions."""

from __future__ import annotations

import json

import pytest

from grader_service.convert import cells as nbcells

from .builders import answer, code, graded, markdown


def test_roles_follow_nbgrader_rules() -> None:
    t = graded("t", "assert True", 2)
    a = answer("a", "x = 1")
    manual = markdown("text", grade_id="m", grade=True, solution=True, points=3)
    assert nbcells.is_test(t) and nbcells.is_locked(t) and not nbcells.is_manual(t)
    assert nbcells.is_solution(a) and not nbcells.is_locked(a) and not nbcells.is_test(a)
    assert nbcells.is_manual(manual) and not nbcells.is_test(manual)
    assert nbcells.points(t) == 2.0 and nbcells.grade_id(t) == "t"
    assert nbcells.grade_id(code("x")) is None


def test_checksum_matches_what_nbgrader_recorded(corpus) -> None:
    nb = json.loads((corpus / "release" / "numpy" / "numpy_hw.ipynb").read_text())
    checked = 0
    for cell in nb["cells"]:
        recorded = cell["metadata"].get("nbgrader", {}).get("checksum")
        if recorded:
            assert nbcells.compute_checksum(cell) == recorded
            checked += 1
    assert checked == 14


def test_solution_region_is_replaced_with_indented_stub() -> None:
    src = "def f():\n    x = 1\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n# after"
    result = nbcells.replace_solution_regions(src, "# YOUR CODE HERE\nraise NotImplementedError()")
    assert result.found
    assert (
        result.text == "def f():\n    x = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n# after"
    )


def test_mentioning_the_marker_in_a_string_is_not_a_marker() -> None:
    src = 'print("### BEGIN SOLUTION")'
    assert not nbcells.replace_solution_regions(src, "stub").found


@pytest.mark.parametrize(
    "src, message",
    [
        ("### BEGIN SOLUTION\nx", "without a matching"),
        ("x\n### END SOLUTION", "without a matching"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
    ],
)
def test_malformed_solution_markers_raise(src: str, message: str) -> None:
    with pytest.raises(nbcells.MarkerError, match=message):
        nbcells.replace_solution_regions(src, "stub")


def test_hidden_tests_are_removed_with_their_markers() -> None:
    src = "assert a\n### BEGIN HIDDEN TESTS\nassert b\n### END HIDDEN TESTS"
    result = nbcells.remove_hidden_tests(src)
    assert result.found and result.text == "assert a"
    assert nbcells.has_hidden_tests(src) and not nbcells.has_hidden_tests(result.text)

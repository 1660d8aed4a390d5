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


# Every spelling nbgrader 0.9's ClearHiddenTests accepts: a delimiter is any line that contains
# the phrase (case-sensitive), whatever comes before or after it. (source, student version,
# lines the release must record for redaction)
NBGRADER_SPELLINGS = [
    pytest.param(
        "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS",
        "assert f(1) == 1",
        ["### BEGIN HIDDEN TESTS", "assert f(2) == 4", "### END HIDDEN TESTS"],
        id="triple-hash",
    ),
    pytest.param(
        "# BEGIN HIDDEN TESTS\nassert f(2) == 4\n# END HIDDEN TESTS\nassert f(1) == 1",
        "assert f(1) == 1",
        ["# BEGIN HIDDEN TESTS", "assert f(2) == 4", "# END HIDDEN TESTS"],
        id="single-hash",
    ),
    pytest.param(
        "x = 1\nBEGIN HIDDEN TESTS\nassert f(2) == 4\nEND HIDDEN TESTS",
        "x = 1",
        ["BEGIN HIDDEN TESTS", "assert f(2) == 4", "END HIDDEN TESTS"],
        id="no-prefix",
    ),
    pytest.param(
        "for i in range(3):\n    assert f(i) >= 0\n    ### BEGIN HIDDEN TESTS\n    assert f(i) == i * i\n"
        "    ### END HIDDEN TESTS\nprint('done')",
        "for i in range(3):\n    assert f(i) >= 0\nprint('done')",
        ["### BEGIN HIDDEN TESTS", "assert f(i) == i * i", "### END HIDDEN TESTS"],
        id="indented",
    ),
    pytest.param(
        "\t#BEGIN HIDDEN TESTS\n\tassert g() is None\n\t#END HIDDEN TESTS\npass",
        "pass",
        ["#BEGIN HIDDEN TESTS", "assert g() is None", "#END HIDDEN TESTS"],
        id="tab-no-space",
    ),
    pytest.param(
        "// BEGIN HIDDEN TESTS\nassert(f(2) == 4);\n// END HIDDEN TESTS",
        "",
        ["// BEGIN HIDDEN TESTS", "assert(f(2) == 4);", "// END HIDDEN TESTS"],
        id="other-language-comment",
    ),
    pytest.param(
        "### BEGIN HIDDEN TESTS (do not share) ###\nassert f(3) == 9\n### END HIDDEN TESTS ###",
        "",
        ["### BEGIN HIDDEN TESTS (do not share) ###", "assert f(3) == 9", "### END HIDDEN TESTS ###"],
        id="trailing-text",
    ),
    pytest.param(
        "assert f(1) == 1\nassert f(5) == 25  # BEGIN HIDDEN TESTS\nassert f(6) == 36\n# END HIDDEN TESTS",
        "assert f(1) == 1",
        ["assert f(5) == 25  # BEGIN HIDDEN TESTS", "assert f(6) == 36", "# END HIDDEN TESTS"],
        id="code-on-the-delimiter-line",
    ),
    pytest.param(
        "a = 1\n# BEGIN HIDDEN TESTS\nassert a\n# END HIDDEN TESTS\nb = 2\n"
        "# BEGIN HIDDEN TESTS\nassert b == 2\n# END HIDDEN TESTS\nc = 3",
        "a = 1\nb = 2\nc = 3",
        [
            "# BEGIN HIDDEN TESTS",
            "assert a",
            "# END HIDDEN TESTS",
            "# BEGIN HIDDEN TESTS",
            "assert b == 2",
            "# END HIDDEN TESTS",
        ],
        id="two-regions",
    ),
    pytest.param(
        "x = 1\r\n### BEGIN HIDDEN TESTS\r\nassert x == 1\r\n### END HIDDEN TESTS\r\ny = 2",
        "x = 1\r\ny = 2",
        ["### BEGIN HIDDEN TESTS", "assert x == 1", "### END HIDDEN TESTS"],
        id="crlf",
    ),
    pytest.param(
        'print("BEGIN HIDDEN TESTS")\nassert f(7) == 49\nprint("END HIDDEN TESTS")',
        "",
        ['print("BEGIN HIDDEN TESTS")', "assert f(7) == 49", 'print("END HIDDEN TESTS")'],
        id="phrase-inside-a-string",
    ),
    pytest.param(
        "### BEGIN HIDDEN TESTS\n\n   \nassert h()\n### END HIDDEN TESTS",
        "",
        ["### BEGIN HIDDEN TESTS", "assert h()", "### END HIDDEN TESTS"],
        id="blank-lines-not-recorded",
    ),
    pytest.param(
        "assert f(1) == 1\n### END HIDDEN TESTS\nassert f(2) == 4",
        "assert f(1) == 1\nassert f(2) == 4",
        ["### END HIDDEN TESTS"],
        id="stray-end-dropped",
    ),
    pytest.param(
        "# begin hidden tests\nassert f(2) == 4\n# end hidden tests",
        "# begin hidden tests\nassert f(2) == 4\n# end hidden tests",
        [],
        id="lower-case-is-not-a-delimiter",
    ),
    pytest.param(
        "# BEGIN HIDDEN  TESTS\nassert f(2) == 4",
        "# BEGIN HIDDEN  TESTS\nassert f(2) == 4",
        [],
        id="different-spacing-is-not-a-delimiter",
    ),
]


def nbgrader_clear_hidden_tests(text: str) -> str:
    """nbgrader 0.9.6's ClearHiddenTests._remove_hidden_test_region, restated as its rule reads."""
    kept, inside = [], False
    for line in text.split("\n"):
        if "BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "END HIDDEN TESTS" in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


@pytest.mark.parametrize("src, student, hidden", NBGRADER_SPELLINGS)
def test_every_nbgrader_spelling_of_hidden_tests(src: str, student: str, hidden: list[str]) -> None:
    result = nbcells.remove_hidden_tests(src)
    assert result.text == student == nbgrader_clear_hidden_tests(src)
    assert list(result.lines) == hidden
    assert result.found == nbcells.has_hidden_tests(src) == any("BEGIN HIDDEN TESTS" in h for h in hidden)


@pytest.mark.parametrize(
    "src, message",
    [
        ("### BEGIN HIDDEN TESTS\nassert x", "without a matching"),
        ("# BEGIN HIDDEN TESTS\n# BEGIN HIDDEN TESTS\n# END HIDDEN TESTS", "nested"),
    ],
)
def test_malformed_hidden_test_markers_raise(src: str, message: str) -> None:
    with pytest.raises(nbcells.MarkerError, match=message):
        nbcells.remove_hidden_tests(src)

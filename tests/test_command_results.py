"""grader.yaml and harness results as pure data: what validates, the messages naming each problem,
the gradebook the results become, and what a student sees of it."""

from __future__ import annotations

import json
import time

import pytest

from grader_service.command import results, spec

STAGE = "stages:\n  - name: t\n    command: [x]\n    results: stdout\n"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("a.py", True), ("dir/a.py", False), ("src/a.c", True), ("src/x/y/a.c", True), ("src/a.h", False),
        ("srca.c", False), ("Makefile", True), ("makefile", False),
    ],
)  # fmt: skip
def test_submission_globs_keep_star_within_one_directory(path: str, allowed: bool) -> None:
    parsed = spec.parse('submission:\n  files: ["*.py", "src/**/*.c", "Makefile"]\n' + STAGE)
    assert parsed.allows(path) is allowed


def test_no_files_key_allows_any_file() -> None:
    assert spec.parse(STAGE).allows("any/thing.bin")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (STAGE + "other: 1\n", "grader.yaml: (top level): unknown key 'other'"),
        ("stages:\n  - name: t\n    command: []\n    results: stdout\n", "grader.yaml: stages[0].command:"),
        ("stages:\n  - name: t\n    command: [x]\n    timeout: 1e9\n    results: stdout\n",
         "grader.yaml: stages[0].timeout:"),
        ("stages:\n  - name: t\n    command: [x]\n    memory: lots\n    results: stdout\n",
         "grader.yaml: stages[0].memory: 'lots': not a number or a quantity such as 512Mi"),
        ("stages:\n  - name: t\n    command: [x]\n    network: maybe\n    results: stdout\n",
         "grader.yaml: stages[0].network: not true or false"),
        ("stages:\n  - name: 'a b'\n    command: [x]\n    results: stdout\n", "grader.yaml: stages[0].name:"),
        (STAGE + "  - name: t\n    command: [y]\n", "stages[1].name: 't' is the name of an earlier stage"),
        ("stages:\n  - name: t\n    command: [x]\n", "no stage has `results`"),
        ("stages:\n  - name: t\n    command: [x]\n    results: /job/results/../../etc/passwd\n",
         "stages[0].results"),
        ("submission:\n  files: ['a/../../b']\n" + STAGE, "submission.files[0]"),
        ("- a list\n", "grader.yaml: (top level): not an object"),
    ],
)  # fmt: skip
def test_a_bad_grader_yaml_names_the_field(text: str, message: str) -> None:
    with pytest.raises(spec.SpecError) as raised:
        spec.parse(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tests": [{"score": 1}, {"score": 1}, {"score": "x"}]}, "tests[2].score: not a number"),
        ({"tests": [{"max_score": 1}]}, "tests[0]: 'score' is missing"),
        ({"tests": [{"score": 1, "visibility": "secret"}]}, 'tests[0].visibility: "secret" is not one of'),
        ({"tests": [{"score": 1, "points": 2}]}, "tests[0]: unknown key 'points'"),
        ({"tests": {"score": 1}}, "tests: not a list"),
        ({"output": "no scores"}, "neither `tests` nor `score` is given"),
        ({"tests": [{"score": 1, "max_score": -1}]}, "tests[0].max_score:"),
        ({"tests": [{"score": True}]}, "tests[0].score: not a number"),
    ],
)
def test_malformed_results_name_the_problem(data: object, message: str) -> None:
    with pytest.raises(results.ResultsError) as raised:
        results.parse(json.dumps(data))
    assert message in str(raised.value)


@pytest.mark.parametrize("text", ["not json", '{"score": NaN}', "[" * 100 + "]" * 100, "{" * 10])
def test_results_that_are_no_json_or_too_deep_are_refused(text: str) -> None:
    with pytest.raises(results.ResultsError):
        results.parse(text)


def test_the_last_json_object_printed_is_the_results_and_hostile_output_costs_little() -> None:
    assert json.loads(results.last_json_object('{"a": 1}\nlog\n{"b":\n  2}\n\n')) == {"b": 2}
    with pytest.raises(results.ResultsError):
        results.last_json_object('{"a": 1}\ntrailing words\n')
    hostile = '\n{"a":' * 20_000
    started = time.monotonic()
    with pytest.raises(results.ResultsError):
        results.last_json_object(hostile)
    assert time.monotonic() - started < 2


def test_the_gradebook_has_the_tests_as_cells_and_the_scores_add_up() -> None:
    parsed = results.parse(json.dumps({"tests": [
        {"name": "a", "score": 1, "max_score": 1},
        {"name": "a", "score": 0.5, "max_score": 2},
        {"score": 0, "max_score": 1, "status": "failed"},
    ]}))  # fmt: skip
    book = results.to_gradebook(parsed, 0.5, [])
    cells = book["notebooks"]["results"]["cells"]
    assert list(cells) == ["a", "a (2)", "Test 3"]
    assert [(c["points"], c["status"], c["partial"]) for c in cells.values()] == [
        (1.0, "passed", False), (0.5, "failed", True), (0.0, "failed", False)
    ]  # fmt: skip
    assert (book["score"], book["max_score"], book["kind"], book["engine"]) == (
        1.5,
        4.0,
        "autograde",
        "command",
    )


def test_a_top_level_score_wins_through_an_adjustment_row() -> None:
    book = results.to_gradebook(results.parse('{"score": 7, "max_score": 10}'), 0.1, [])
    assert (book["score"], book["max_score"]) == (7.0, 10.0)
    book = results.to_gradebook(
        results.parse('{"score": 1, "tests": [{"score": 2, "max_score": 2}]}'), 0.1, []
    )
    assert (
        book["score"] == 1.0 and book["notebooks"]["results"]["cells"][results.ADJUSTMENT]["points"] == -1.0
    )


def test_students_see_a_tests_output_only_as_its_visibility_allows() -> None:
    tests = [{"name": v, "score": 1, "max_score": 1, "output": f"out-{v}", "visibility": v}
             for v in ("visible", "hidden", "after_due_date", "after_published")]  # fmt: skip
    book = results.to_gradebook(results.parse(json.dumps({"tests": tests})), 0.1, [{"name": "s"}])

    def shown(due_passed: bool, published: bool) -> set[str]:
        view = results.student_view(book, due_passed, published)
        assert "stages" not in view and view["score"] == 4.0
        return {k for k, c in view["notebooks"]["results"]["cells"].items() if c["output"]}

    assert shown(False, False) == {"visible"}
    assert shown(True, False) == {"visible", "after_due_date"}
    assert shown(True, True) == {"visible", "after_due_date", "after_published"}
    assert book["notebooks"]["results"]["cells"]["hidden"]["output"] == "out-hidden"  # staff: all of it
    page = results.feedback_html(book)
    assert "out-visible" in page and "out-hidden" not in page and "out-after" not in page

"""Grading by hand in the instructor's grading view, and a student submitting a command assignment
from the panel; clicked through in Chromium against the real service."""

from __future__ import annotations

import copy
import json
import re
import textwrap
from pathlib import Path

from .conftest import EXAMPLES, OUTPUT, open_grader_from_menu, open_lab

EXPLAIN = {
    "grade": True, "solution": True, "locked": False, "grade_id": "explain", "points": 3, "schema_version": 3,
}  # fmt: skip


def with_manual_cell(notebook: Path, answer: str) -> dict:
    """The notebook with a markdown answer graded by hand (3 points) appended."""
    nb = json.loads(notebook.read_text())
    nb["cells"].append(
        {"cell_type": "markdown", "metadata": {"nbgrader": copy.deepcopy(EXPLAIN)}, "source": answer}
    )
    return nb


def test_instructor_grades_a_cell_by_hand_saves_and_moves_to_the_next(
    page, lab_for, course, svc, tmp_path: Path
) -> None:
    from grader_client import GraderClient

    with GraderClient(course.url, svc.token("root", admin=True)) as admin:
        admin.set_role("intro", "carol", "student")
    source = tmp_path / "essay"
    source.mkdir()
    nb = with_manual_cell(EXAMPLES / "source" / "basics" / "basics.ipynb", "YOUR ANSWER HERE")
    (source / "basics.ipynb").write_text(json.dumps(nb))
    with GraderClient(course.url, course.tokens["ins"]) as ins:
        ins.create_assignment("intro", "essay", due_date="2099-01-01T00:00:00Z", feedback_policy="immediate")
        ins.upload_assignment("intro", "essay", source)
        ins.release_assignment("intro", "essay")
    ids = []
    for who, token, answer in (
        ("alice", course.tokens["alice"], "Doubling adds x to itself."),
        ("carol", svc.token("carol"), "No idea."),
    ):
        folder = tmp_path / who
        folder.mkdir()
        sent = with_manual_cell(EXAMPLES / "submission" / "basics.ipynb", answer)
        (folder / "basics.ipynb").write_text(json.dumps(sent))
        with GraderClient(course.url, token) as student:
            submission = student.submit("intro", "essay", folder)
            student.wait("intro", "essay", submission.id)
            ids.append(submission.id)

    lab = lab_for("ins")
    open_lab(page, lab)
    open_grader_from_menu(page)
    page.get_by_role("tab", name="Course management").click()
    page.get_by_role("button", name="essay").click()
    admin = page.get_by_role("region", name="Manage essay")
    admin.get_by_role("button", name="Grade queue").click()
    view = admin.get_by_role("region", name=f"Grading submission {ids[0]}")
    view.wait_for()
    view.get_by_text("Doubling adds x to itself.").wait_for()  # the submitted notebook, rendered
    facts = view.locator(".jp-grader-facts")
    assert facts.locator(".jp-grader-manual-status").inner_text() == "needed"
    before = facts.locator(".jp-grader-final-score").inner_text()
    assert before == "10/13", before

    cell = view.get_by_role("group", name="Grade of explain")
    points = cell.get_by_label("Points (0–3)")
    assert (points.get_attribute("min"), points.get_attribute("max")) == ("0", "3")
    points.fill("4")  # over the maximum: said, not sent
    view.get_by_role("button", name="Save grades").click()
    view.get_by_role("alert").get_by_text("Points of explain must be between 0 and 3").wait_for()
    points.fill("2")
    cell.get_by_label("Comment").fill("Right idea, no example.")
    view.get_by_role("button", name="Save grades").click()
    view.get_by_role("status").get_by_text("Saved.").wait_for()
    facts.locator(".jp-grader-final-score", has_text="12/13").wait_for()
    assert facts.locator(".jp-grader-manual-status").inner_text() == "done"
    history = view.locator(".jp-grader-history")
    history.locator("li", has_text="explain").wait_for(state="attached")
    assert re.search(r"ins: explain: points — → 2, comment — → Right idea", history.inner_text()), (
        history.inner_text()
    )
    assert "Right idea, no example." in cell.get_by_label("Comment").input_value()
    # The submissions table below follows.
    row = admin.locator("table.jp-grader-submissions tbody tr", has_text="alice")
    row.get_by_text("12/13").wait_for()
    assert "done" in row.inner_text() and "needs grading" not in cell.inner_text()
    # The picture in docs/jupyterlab.md: the graded answer, the scores above it.
    cell.scroll_into_view_if_needed()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "jupyterlab-grading.png"))

    # Another tutor saves meanwhile: this view's save is refused (409), said, and their grades shown.
    with GraderClient(course.url, course.tokens["ins"]) as other:
        other.set_grades("intro", "essay", ids[0], {"explain": {"points": 2.5}})
    points.fill("3")
    view.get_by_role("button", name="Save grades").click()
    view.get_by_role("alert").get_by_text("changed by someone else").wait_for()
    view.locator("input[value='2.5']").wait_for()
    facts.locator(".jp-grader-final-score", has_text="12.5/13").wait_for()

    # Alt+→: the next submission waiting for a person (this one has left the queue).
    points.focus()
    page.keyboard.press("Alt+ArrowRight")
    following = admin.get_by_role("region", name=f"Grading submission {ids[1]}")
    following.get_by_text("No idea.").wait_for()
    assert "of carol" in following.locator("h3").inner_text()


GRADER_YAML = """
submission:
  files: ["*.py"]
stages:
  - name: test
    command: ["python3", "-c", "import json, sys; sys.path.insert(0, '/job/submission'); import solution; ok = solution.square(3) == 9; json.dump({'tests': [{'name': 'square(3)', 'score': 3 if ok else 0, 'max_score': 3, 'output': 'nine' if ok else 'wrong'}]}, open('/job/results/results.json', 'w'))"]
    results: /job/results/results.json
    timeout: 30
"""  # noqa: E501


def test_student_submits_a_command_assignment_from_the_panel_and_sees_the_score(
    page, lab_for, course, tmp_path: Path
) -> None:
    from grader_client import GraderClient

    source = tmp_path / "squares"
    source.mkdir()
    (source / "grader.yaml").write_text(textwrap.dedent(GRADER_YAML))
    with GraderClient(course.url, course.tokens["ins"]) as ins:
        ins.create_assignment(
            "intro", "squares", kind="command", due_date="2099-01-01T00:00:00Z", feedback_policy="immediate"
        )
        ins.upload_assignment("intro", "squares", source)
        ins.release_assignment("intro", "squares")

    lab = lab_for("alice")
    open_lab(page, lab)
    open_grader_from_menu(page)
    card = page.locator("article.jp-grader-assignment", has_text="squares")
    card.get_by_text("Submit sends the files of intro/squares/").wait_for()
    card.get_by_role("button", name="Fetch").click()
    card.get_by_text("Fetched into intro/squares/").wait_for()
    folder = lab.root / "intro" / "squares"
    # A file the assignment does not take: the service's refusal, shown as it said it.
    (folder / "notes.txt").write_text("draft")
    (folder / "solution.py").write_text("def square(x):\n    return x * x\n")
    card.get_by_role("button", name="Submit").click()
    card.get_by_role("alert").get_by_text("notes.txt").wait_for()
    (folder / "notes.txt").unlink()
    card.get_by_role("button", name="Submit").click()
    card.locator(".jp-grader-status", has_text="Graded: 3/3").wait_for(timeout=120_000)
    table = card.locator("table.jp-grader-tests")
    table.wait_for()
    row = table.locator("tbody tr")
    assert row.count() == 1 and re.sub(r"\s+", " ", row.inner_text()).strip() == "square(3) 3/3 passed nine"

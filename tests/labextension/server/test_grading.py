"""Grading by hand through the Lab server (per-cell grades, queue, history, the submitted notebooks),
and command assignments submitted from a folder in the Lab root; all against the real service."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .conftest import EXAMPLES
from .test_relay import wait_graded

A = "lectures/intro/assignments"
EXPLAIN = {
    "grade": True, "solution": True, "locked": False, "grade_id": "explain", "points": 3, "schema_version": 3,
}  # fmt: skip


def with_manual_cell(notebook: Path, answer: str) -> dict[str, Any]:
    """The notebook with a markdown answer graded by hand (3 points) appended."""
    nb = json.loads(notebook.read_text())
    nb["cells"].append(
        {"cell_type": "markdown", "metadata": {"nbgrader": copy.deepcopy(EXPLAIN)}, "source": answer}
    )
    return nb


def manual_assignment(course, root: Path, name: str) -> None:
    """A released copy of the example with a hand-graded answer (immediate feedback)."""
    source = root / f"{name}-source"
    source.mkdir()
    nb = with_manual_cell(EXAMPLES / "source" / "basics" / "basics.ipynb", "YOUR ANSWER HERE")
    (source / "basics.ipynb").write_text(json.dumps(nb))
    with course.client("ins") as ins:
        ins.create_assignment("intro", name, due_date="2099-01-01T00:00:00Z", feedback_policy="immediate")
        ins.upload_assignment("intro", name, source)
        ins.release_assignment("intro", name)


def submit_answer(course, root: Path, who: str, name: str, answer: str) -> int:
    folder = root / f"{who}-{name}"
    folder.mkdir()
    nb = with_manual_cell(EXAMPLES / "submission" / "basics.ipynb", answer)
    (folder / "basics.ipynb").write_text(json.dumps(nb))
    with course.client(who) as client:
        return client.submit("intro", name, folder).id


@pytest.fixture(scope="module")
def essay(course, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, int]:
    """Assignment 'essay' with a hand-graded answer, and the submissions of alice and bob (in order)."""
    root = tmp_path_factory.mktemp("essay")
    manual_assignment(course, root, "essay")
    first = submit_answer(course, root, "alice", "essay", "Doubling adds x to itself.")
    second = submit_answer(course, root, "bob", "essay", "No idea.")
    return first, second


async def test_grade_cells_by_hand_with_queue_history_and_conflicts(api, login, essay) -> None:
    first, second = essay
    login("ins")
    sub = f"{A}/essay/submissions/{first}"
    graded = await wait_graded(api, "essay", first)
    await wait_graded(api, "essay", second)
    assert graded["manual_status"] == "needed", graded

    status, queue = await api("GET", f"{A}/essay/grading-queue")
    assert status == 200, queue
    assert [(i["id"], i["user"], i["previous"], i["next"]) for i in queue["items"]] == [
        (first, "alice", None, second),
        (second, "bob", first, None),
    ]

    # The submitted notebook, as the student sent it, for the view to render.
    status, body = await api("GET", f"{sub}/notebooks")
    assert status == 200, body
    (notebook,) = body["notebooks"]
    assert notebook["path"] == "basics.ipynb" and notebook["error"] is None
    answer = [c for c in notebook["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "explain"]
    assert answer and answer[0]["source"] == "Doubling adds x to itself."

    status, grades = await api("GET", f"{sub}/grades")
    assert status == 200, grades
    explain = {g["grade_id"]: g for g in grades["items"]}["explain"]
    assert explain["needs_manual"] is True and explain["max"] == 3 and explain["manual"] is None
    version = grades["version"]

    # Out of range: the service's message passes through; nothing changes.
    status, error = await api(
        "PUT", f"{sub}/grades", {"version": version, "grades": {"explain": {"points": 4}}}
    )
    assert status in (400, 422) and "explain" in error["message"], error
    status, error = await api("PUT", f"{sub}/grades", {"grades": ["explain"]})
    assert status == 400 and "grade_id" in error["message"]
    status, error = await api("PUT", f"{sub}/grades", {"grades": {}, "version": "1"})
    assert status == 400 and "version" in error["message"]

    change = {"explain": {"points": 1.5, "comment": "half", "extra_credit": 0.5}}
    status, saved = await api("PUT", f"{sub}/grades", {"version": version, "grades": change})
    assert status == 200, saved
    explain = {g["grade_id"]: g for g in saved["items"]}["explain"]
    assert (explain["manual"], explain["comment"], explain["extra_credit"]) == (1.5, "half", 0.5)
    assert saved["manual_status"] == "done" and saved["version"] > version
    status, after = await api("GET", sub)
    assert after["score"] == graded["score"] + 2.0, (graded, after)

    # A second tutor working from the old version is told (409), not overwritten.
    status, error = await api(
        "PUT", f"{sub}/grades", {"version": version, "grades": {"explain": {"points": 3}}}
    )
    assert status == 409, error
    status, current = await api("GET", f"{sub}/grades")
    assert {g["grade_id"]: g for g in current["items"]}["explain"]["manual"] == 1.5

    status, history = await api("GET", f"{sub}/history")
    assert status == 200, history
    (entry,) = [h for h in history["items"] if h["what"] == "explain"]
    assert entry["user"] == "ins" and entry["new"] == {"points": 1.5, "comment": "half", "extra_credit": 0.5}

    status, queue = await api("GET", f"{A}/essay/grading-queue")
    assert [i["id"] for i in queue["items"]] == [second]


async def test_students_neither_see_the_queue_nor_grade(api, login, essay) -> None:
    """Not even their own submission; nor another's submitted notebooks or history."""
    first, second = essay
    login("alice")
    await wait_graded(api, "essay", first)
    status, error = await api("GET", f"{A}/essay/grading-queue")
    assert status == 403, error
    status, error = await api(
        "PUT", f"{A}/essay/submissions/{first}/grades", {"grades": {"explain": {"points": 3}}}
    )
    assert status == 403, error
    for what in ("notebooks", "history", "grades"):
        status, error = await api("GET", f"{A}/essay/submissions/{second}/{what}")
        assert status in (403, 404), (what, error)


GRADER_YAML = """
submission:
  files: ["*.py"]
stages:
  - name: test
    command: ["python3", "/job/grader/harness.py"]
    results: /job/results/results.json
    timeout: 30
"""
HARNESS = """
import json, sys
sys.path.insert(0, '/job/submission')
import solution
tests = [
    {'name': 'square(2)', 'score': 1 if solution.square(2) == 4 else 0, 'max_score': 1, 'output': 'two'},
    {'name': 'square(3)', 'score': 2 if solution.square(3) == 9 else 0, 'max_score': 2, 'output': 'three'},
]
json.dump({'tests': tests}, open('/job/results/results.json', 'w'))
"""


async def test_a_command_assignment_is_created_uploaded_and_submitted_from_a_folder(
    api, login, jp_root_dir: Path
) -> None:
    login("ins")
    status, created = await api(
        "POST", A, {"name": "squares", "kind": "command", "feedback_policy": "immediate"}
    )
    assert status == 201 and created["kind"] == "command", created
    source = jp_root_dir / "course" / "squares"
    source.mkdir(parents=True)
    (source / "grader.yaml").write_text(textwrap.dedent(GRADER_YAML))
    (source / "harness.py").write_text(textwrap.dedent(HARNESS))
    status, uploaded = await api("POST", f"{A}/squares/source", {"path": "course/squares"})
    assert status == 200 and uploaded["has_source"] is True, uploaded
    status, released = await api("POST", f"{A}/squares/release")
    assert status == 200, released

    login("alice")
    status, fetched = await api("POST", f"{A}/squares/fetch", {})
    # No files for students (the harness stays private), but the folder their work goes into.
    assert status == 200 and (fetched["path"], fetched["files"]) == ("intro/squares", []), fetched
    folder = jp_root_dir / "intro" / "squares"
    assert folder.is_dir() and not any(folder.iterdir())
    (folder / "solution.py").write_text("def square(x):\n    return x * x if x != 3 else 0\n")

    # A file the assignment does not take: the service's 422 names it, word for word.
    (folder / "notes.txt").write_text("not python")
    status, error = await api("POST", f"{A}/squares/submissions", {"path": "intro/squares"})
    assert status == 422 and "notes.txt" in error["message"], error
    (folder / "notes.txt").unlink()

    status, submission = await api("POST", f"{A}/squares/submissions", {"path": "intro/squares"})
    assert status == 201, submission
    graded = await wait_graded(api, "squares", submission["id"])
    assert graded["auto_status"] == "graded" and (graded["score"], graded["max_score"]) == (1.0, 3.0), graded
    status, book = await api("GET", f"{A}/squares/submissions/{submission['id']}/gradebook")
    assert status == 200, book
    (entry,) = book["notebooks"].values()
    cells = {c["grade_id"]: (c["points"], c["max_points"], c["status"]) for c in entry["cells"].values()}
    assert cells == {"square(2)": (1.0, 1.0, "passed"), "square(3)": (0.0, 2.0, "failed")}

"""`release`: the student version equals nbgrader's; the skeleton is returned, not shipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader_service.convert.release import release_assignment

from .builders import answer, graded, markdown, notebook, write


@pytest.mark.parametrize("assignment", ["basics", "numpy", "slow"])
def test_release_is_json_equal_to_nbgrader(corpus: Path, tmp_path: Path, assignment: str) -> None:
    skeleton = release_assignment(corpus / "source" / assignment, tmp_path / "release").gradebook
    expected_files = sorted(p.name for p in (corpus / "release" / assignment).iterdir())
    assert sorted(p.name for p in (tmp_path / "release").iterdir()) == expected_files
    for name in expected_files:
        mine = json.loads((tmp_path / "release" / name).read_text())
        theirs = json.loads((corpus / "release" / assignment / name).read_text())
        assert mine == theirs
    assert not (tmp_path / "release" / "gradebook.json").exists()
    assert skeleton["kind"] == "skeleton"


def test_skeleton_lists_graded_cells_and_totals(corpus: Path, tmp_path: Path, expected: dict) -> None:
    skeleton = release_assignment(corpus / "source" / "numpy", tmp_path / "release").gradebook
    nb = skeleton["notebooks"]["numpy_hw"]
    assert {gid: c["max_points"] for gid, c in nb["cells"].items()} == expected["assignments"]["numpy"][
        "tests"
    ]
    assert nb["max_score"] == skeleton["max_score"] == 15.0
    assert [gid for gid, c in nb["cells"].items() if c["hidden_tests"]] == ["test_moving_average_hidden"]


def test_stubs_are_configurable_and_markdown_answers_stubbed(tmp_path: Path) -> None:
    write(
        notebook(
            answer("a", "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
            answer("b", "x = 2"),
            markdown("The answer is 42", grade_id="essay", grade=True, solution=True, points=2),
            graded("t", "assert f() == 1", 1),
        ),
        tmp_path / "src" / "hw.ipynb",
    )
    (tmp_path / "src" / "data").mkdir()
    (tmp_path / "src" / "data" / "table.csv").write_text("a,b\n")
    skeleton = release_assignment(tmp_path / "src", tmp_path / "rel", code_stub="pass  # TODO").gradebook
    cells = json.loads((tmp_path / "rel" / "hw.ipynb").read_text())["cells"]
    assert cells[0]["source"] == "def f():\n    pass  # TODO"
    assert cells[1]["source"] == "pass  # TODO"
    assert cells[2]["source"] == "YOUR ANSWER HERE"
    assert (tmp_path / "rel" / "data" / "table.csv").read_text() == "a,b\n"
    assert skeleton["notebooks"]["hw"]["cells"]["essay"]["kind"] == "manual"
    assert skeleton["max_score"] == 3.0


def test_release_does_not_execute_code(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    write(notebook(graded("t", f"open({str(marker)!r}, 'w').close()", 1)), tmp_path / "src" / "hw.ipynb")
    release_assignment(tmp_path / "src", tmp_path / "rel")
    assert not marker.exists()


def test_cli_release(corpus: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader_service.convert.cli",
            "release",
            "-i",
            str(corpus / "source" / "basics"),
            "-o",
            str(tmp_path / "rel"),
            "--gradebook",
            str(tmp_path / "skeleton.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert json.loads(line) == {"status": "released", "max_score": 10.0, "notebooks": {"basics": 10.0}}
    assert json.loads((tmp_path / "skeleton.json").read_text())["max_score"] == 10.0


def test_cli_release_invalid_source_exits_2(tmp_path: Path) -> None:
    write(notebook(graded("t", "assert 1", -1)), tmp_path / "src" / "hw.ipynb")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader_service.convert.cli",
            "release",
            "-i",
            str(tmp_path / "src"),
            "-o",
            str(tmp_path / "rel"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["problems"] == [
        {"notebook": "hw", "cell": "t", "problem": "negative points (-1)"}
    ]


def test_release_records_the_hidden_lines_it_removed(tmp_path: Path) -> None:
    """One parser: the lines the release removes are the lines the service redacts, in every spelling."""
    from grader_service.storage.release import _convert

    from .test_cells import NBGRADER_SPELLINGS

    cells = [answer("a", "def f(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION")]
    expected: set[str] = set()
    for i, case in enumerate(NBGRADER_SPELLINGS):
        src, student, hidden = case.values
        if any("BEGIN HIDDEN TESTS" in line for line in hidden):
            cells.append(graded(f"t{i}", src, 1))
            expected.update(hidden)
    write(notebook(*cells), tmp_path / "src" / "hw.ipynb")

    released = _convert(tmp_path / "src", tmp_path / "rel")

    assert set(released.hidden_lines) == expected and len(expected) > 20
    student_version = (tmp_path / "rel" / "hw.ipynb").read_text()
    code_lines = [line for line in expected if "HIDDEN TESTS" not in line]
    assert code_lines and not [line for line in code_lines if line in student_version]

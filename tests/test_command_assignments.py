"""Command assignments through the service: kind, grader.yaml checked on upload, submissions checked
against submission.files, graded by the harness's results, shown to students by each test's
visibility, and the same score, regrade and override paths as notebooks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .conftest import World, zip_dir
from .grading_utils import submission, submit_files, wait_graded

A = "lectures/ml/assignments"

GRADER_YAML = """
max_score: 4
submission:
  files: ["*.py"]
  max_bytes: 100_000
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
    {'name': 'square(2)', 'score': 1 if solution.square(2) == 4 else 0, 'max_score': 1,
     'output': 'visible output', 'visibility': 'visible'},
    {'name': 'square(3)', 'score': 1 if solution.square(3) == 9 else 0, 'max_score': 1,
     'output': 'SECRET hidden output', 'visibility': 'hidden'},
    {'name': 'square(4)', 'score': 2 if solution.square(4) == 16 else 0, 'max_score': 2,
     'output': 'LATER after the due date', 'visibility': 'after_due_date'},
]
json.dump({'tests': tests, 'output': 'overall'}, open('/job/results/results.json', 'w'))
"""


def source(tmp_path: Path, grader_yaml: str = GRADER_YAML) -> bytes:
    directory = tmp_path / "source"
    directory.mkdir(exist_ok=True)
    (directory / "grader.yaml").write_text(textwrap.dedent(grader_yaml))
    (directory / "harness.py").write_text(textwrap.dedent(HARNESS))
    return zip_dir(directory)


def upload(world: World, name: str, data: bytes):
    return world.client("instructor").put(
        f"{A}/{name}/files", data=data, headers={"Content-Type": "application/zip"}
    )


@pytest.fixture(scope="module")
def command_assignment(world: World, tmp_path_factory: pytest.TempPathFactory) -> str:
    ins = world.client("instructor")
    r = ins.post(A, json={"name": "squares", "kind": "command", "due_date": "2099-01-01T00:00:00Z"})
    assert r.status_code == 201 and r.json()["kind"] == "command", r.text
    assert upload(world, "squares", source(tmp_path_factory.mktemp("src"))).status_code == 200
    r = ins.patch(f"{A}/squares", json={"status": "released"})
    assert r.status_code == 200, r.text
    assert r.json()["max_score"] == 4.0  # grader.yaml's, for grade tables before any grading
    return "squares"


def test_assignments_are_notebooks_unless_created_as_commands(world: World) -> None:
    ins = world.client("instructor")
    assert ins.get(f"{A}/tiny").json()["kind"] == "notebook"
    r = ins.post(A, json={"name": "kinds", "kind": "shell"})
    assert r.status_code == 400 and "kind" in r.json()["message"]
    assert ins.post(A, json={"name": "kinds"}).json()["kind"] == "notebook"
    assert ins.patch(f"{A}/kinds", json={"kind": "command"}).json()["kind"] == "command"
    assert world.client("student").get(f"{A}/tiny").json()["kind"] == "notebook"
    # Released, the kind is fixed.
    assert ins.patch(f"{A}/tiny", json={"kind": "command"}).status_code == 409


@pytest.mark.parametrize(
    ("grader_yaml", "named"),
    [
        ("stages:\n  - name: t\n    command: [x]\n    results: stdout\n    colour: red\n", "stages[0]: unknown key 'colour'"),
        ("stages:\n  - name: t\n    results: stdout\n", "stages[0]: 'command' is missing"),
        ("stages:\n  - name: t\n    command: [x]\n    timeout: soon\n    results: stdout\n", "stages[0].timeout"),
        ("stages:\n  - name: t\n    command: [x]\n    timeout: 0\n    results: stdout\n", "stages[0].timeout"),
        ("submission:\n  files: ['../*.py']\nstages:\n  - name: t\n    command: [x]\n    results: stdout\n",
         "submission.files[0]"),
        ("submission:\n  files: ['/etc/*']\nstages:\n  - name: t\n    command: [x]\n    results: stdout\n",
         "submission.files[0]"),
        ("stages:\n  - name: t\n    command: [x]\n    results: /etc/passwd\n", "stages[0].results"),
        ("stages: [", "not YAML"),
    ],
)  # fmt: skip
def test_a_bad_grader_yaml_is_refused_naming_the_field(
    world: World, tmp_path: Path, grader_yaml: str, named: str
) -> None:
    ins = world.client("instructor")
    name = "badyaml"
    if ins.get(f"{A}/{name}").status_code == 404:
        assert ins.post(A, json={"name": name, "kind": "command"}).status_code == 201

    r = upload(world, name, source(tmp_path, grader_yaml))

    assert r.status_code == 422, r.text
    assert named in r.json()["message"], r.json()
    assert ins.get(f"{A}/{name}").json()["has_source"] is False


def test_a_source_without_grader_yaml_is_refused(world: World, tmp_path: Path) -> None:
    ins = world.client("instructor")
    assert ins.post(A, json={"name": "noyaml", "kind": "command"}).status_code == 201
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "harness.py").write_text("print()")
    r = upload(world, "noyaml", zip_dir(tmp_path / "src"))
    assert r.status_code == 422 and "grader.yaml" in r.json()["message"]


def test_a_file_outside_submission_files_is_refused_naming_it(world: World, command_assignment: str) -> None:
    files = {"solution.py": b"def square(x): return x * x\n", "notes/evil.sh": b"rm -rf /"}
    r = submit_files(world.client("student"), "ml", command_assignment, files)
    assert r.status_code == 422 and "'notes/evil.sh'" in r.json()["message"], r.text
    r = submit_files(world.client("student"), "ml", command_assignment, {"big.py": b"#" * 200_000})
    assert r.status_code == 413, r.text


def test_a_submission_is_graded_by_the_harness_and_students_see_what_visibility_allows(
    world: World, command_assignment: str
) -> None:
    files = {"solution.py": b"def square(x): return x * x if x != 3 else 0\n"}
    r = submit_files(world.client("student"), "ml", command_assignment, files)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    events = wait_graded(world.client("tutor"), sid)
    assert events[-1]["auto_status"] == "graded", events
    got = submission(world.client("tutor"), "ml", command_assignment, sid)
    assert (got["score"], got["max_score"]) == (3.0, 4.0)
    base = f"{A}/{command_assignment}/submissions/{sid}"
    staff_book = world.client("tutor").get(f"{base}/gradebook").json()
    assert "SECRET hidden output" in json.dumps(staff_book)

    assert world.client("instructor").post(f"{A}/{command_assignment}/feedback-release").status_code == 200
    student = world.client("student")
    book = student.get(f"{base}/gradebook").json()
    tests = book["notebooks"]["results"]["cells"]
    assert tests["square(2)"]["output"] == "visible output"
    assert tests["square(3)"]["points"] == 0.0 and tests["square(3)"]["output"] == ""
    assert tests["square(4)"]["output"] == ""  # the due date is in 2099
    assert "SECRET" not in json.dumps(book) and "LATER" not in json.dumps(book)
    page = student.get(f"{base}/feedback")
    assert page.status_code == 200, page.text
    assert "visible output" in page.text and "SECRET" not in page.text and "LATER" not in page.text

    # Past the due date, after_due_date tests show their output; hidden ones never do.
    ins = world.client("instructor")
    assert (
        ins.patch(f"{A}/{command_assignment}", json={"due_date": "2020-01-01T00:00:00Z"}).status_code == 200
    )
    book = student.get(f"{base}/gradebook").json()
    assert "LATER after the due date" in json.dumps(book) and "SECRET" not in json.dumps(book)
    # A student whose extension runs on is judged by their own due date.
    extension = f"{A}/{command_assignment}/extensions/stu"
    assert ins.put(extension, json={"due_date": "2099-06-01T00:00:00Z"}).status_code in (200, 201)
    assert "LATER" not in json.dumps(student.get(f"{base}/gradebook").json())
    assert ins.delete(extension).status_code == 204
    assert (
        ins.patch(f"{A}/{command_assignment}", json={"due_date": "2099-01-01T00:00:00Z"}).status_code == 200
    )


def test_a_regrade_and_a_manual_score_work_as_for_notebooks(world: World, command_assignment: str) -> None:
    files = {"solution.py": b"def square(x): return 0\n"}
    sid = submit_files(world.client("student"), "ml", command_assignment, files).json()["id"]
    assert wait_graded(world.client("tutor"), sid)[-1]["auto_status"] == "graded"
    base = f"{A}/{command_assignment}/submissions/{sid}"
    r = world.client("instructor").post(f"{base}/autograde")
    assert r.status_code in (200, 202), r.text
    events = wait_graded(world.client("tutor"), sid)
    assert events[-1]["auto_status"] == "graded"
    assert submission(world.client("tutor"), "ml", command_assignment, sid)["score"] == 0.0
    r = world.client("tutor").patch(base, json={"manual_score": 3.5})
    assert r.status_code == 200, r.text
    assert submission(world.client("tutor"), "ml", command_assignment, sid)["score"] == 3.5


def test_each_test_of_the_results_is_a_cell_people_can_grade(world: World, command_assignment: str) -> None:
    files = {"solution.py": b"def square(x): return x * x if x != 3 else 0\n"}
    sid = submit_files(world.client("student"), "ml", command_assignment, files).json()["id"]
    assert wait_graded(world.client("tutor"), sid)[-1]["auto_status"] == "graded"
    base = f"{A}/{command_assignment}/submissions/{sid}"
    tutor = world.client("tutor")
    cells = {c["grade_id"]: c for c in tutor.get(f"{base}/grades").json()["items"]}
    assert {name: (c["auto"], c["max"], c["needs_manual"]) for name, c in cells.items()} == {
        "square(2)": (1, 1, False),
        "square(3)": (0, 1, False),
        "square(4)": (2, 2, False),
    }
    r = tutor.put(
        f"{base}/grades", json={"grades": {"square(3)": {"points": 0.5, "comment": "off by <one>"}}}
    )
    assert r.status_code == 200, r.text
    assert submission(tutor, "ml", command_assignment, sid)["final_score"] == 3.5
    assert (
        world.client("student")
        .put(f"{base}/grades", json={"grades": {"square(3)": {"points": 1}}})
        .status_code
        == 403
    )

    assert world.client("instructor").post(f"{A}/{command_assignment}/feedback-release").status_code == 200
    page = world.client("student").get(f"{base}/feedback")
    assert page.status_code == 200, page.text
    assert "Score: 3.5 / 4" in page.text and "off by &lt;one&gt;" in page.text and "<one>" not in page.text
    assert "SECRET" not in page.text


NET_HARNESS = """
import json, socket, sys
try:
    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3).close()
    reached = 1
except OSError:
    reached = 0
print(json.dumps({'tests': [{'name': 'reached the service', 'score': reached, 'max_score': 1}]}))
"""


def test_a_stage_cannot_reach_the_service(world: World, tmp_path: Path) -> None:
    """The network is off by default: a stage connecting to the service's own port gets nowhere."""
    ins = world.client("instructor")
    assert ins.post(A, json={"name": "netprobe", "kind": "command"}).status_code == 201
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "grader.yaml").write_text(
        "stages:\n  - name: probe\n"
        f"    command: [python3, /job/grader/probe.py, '{world.service.port}']\n"
        "    results: stdout\n    network: true\n"
    )
    (tmp_path / "src" / "probe.py").write_text(NET_HARNESS)
    assert upload(world, "netprobe", zip_dir(tmp_path / "src")).status_code == 200
    assert ins.patch(f"{A}/netprobe", json={"status": "released"}).status_code == 200
    r = submit_files(world.client("student"), "ml", "netprobe", {"x.txt": b"-"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert wait_graded(world.client("tutor"), sid)[-1]["auto_status"] == "graded"
    book = world.client("tutor").get(f"{A}/netprobe/submissions/{sid}/gradebook").json()
    assert book["notebooks"]["results"]["cells"]["reached the service"]["points"] == 0.0

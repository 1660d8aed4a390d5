"""Autograde survives hostile or broken submissions and leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import pytest

from grader_service.convert.autograde import autograde
from grader_service.convert.errors import GradingError
from grader_service.convert.release import release_assignment

from .builders import answer, graded, markdown, notebook, with_answers, write
from .conftest import SUBREAPER_UNDER_QEMU, kernel_processes, only_notebook, pid_alive, points, stage

SOURCE_CELLS = [
    answer("f", "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"),
    graded("test_f", "assert f(1) == 2", 1),
    answer("g", "def g(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    graded("test_g", "assert g(2) == 4", 1),
    answer("h", "def h(x):\n    ### BEGIN SOLUTION\n    return x - 1\n    ### END SOLUTION"),
    graded("test_h", "assert h(1) == 0", 1),
]
CORRECT = {
    "f": "def f(x):\n    return x + 1",
    "g": "def g(x):\n    return 2 * x",
    "h": "def h(x):\n    return x - 1",
}

CHILDREN = """
import subprocess, sys
sleeper = subprocess.Popen(["sleep", "300"])
daemon_code = (
    "import os, sys, time\\n"
    "if os.fork() == 0:\\n"
    "    os.setsid()\\n"
    "    if os.fork() == 0:\\n"
    "        print(os.getpid(), flush=True)\\n"
    "        time.sleep(300)\\n"
)
launcher = subprocess.Popen([sys.executable, "-c", daemon_code], stdout=subprocess.PIPE, text=True)
daemon = int(launcher.stdout.readline())
print("PIDS", sleeper.pid, daemon)
def f(x):
    return x + 1
"""


@pytest.fixture(scope="module")
def assignment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("robust")
    write(notebook(*SOURCE_CELLS), root / "source" / "robust.ipynb")
    release_assignment(root / "source", root / "release")
    return {
        "root": root,
        "source": root / "source",
        "release": json.loads((root / "release" / "robust.ipynb").read_text()),
    }


def make(assignment: dict, name: str, **answers: str) -> Path:
    directory = assignment["root"] / "submissions" / name
    write(with_answers(assignment["release"], {**CORRECT, **answers}), directory / "robust.ipynb")
    return directory


def outputs_text(output: Path, name: str = "robust.ipynb") -> str:
    nb = json.loads((output / name).read_text())
    return "".join(o.get("text", "") for c in nb["cells"] for o in c.get("outputs", []))


def test_sys_exit_in_a_cell_does_not_stop_grading(assignment: dict, grade_case) -> None:
    _, book, _ = grade_case(make(assignment, "sys_exit", g="import sys\nsys.exit(3)"), assignment["source"])
    assert points(book) == {"test_f": 1.0, "test_g": 0.0, "test_h": 1.0}
    assert only_notebook(book)["cells"]["test_g"]["error"]["name"] == "NameError"


def test_os_exit_kills_the_kernel_later_cells_fail(assignment: dict, grade_case) -> None:
    _, book, _ = grade_case(make(assignment, "os_exit", g="import os\nos._exit(1)"), assignment["source"])
    assert points(book) == {"test_f": 1.0, "test_g": 0.0, "test_h": 0.0}
    entry = only_notebook(book)
    assert entry["execution"]["kernel"] == "died"
    assert entry["cells"]["test_h"]["error"]["name"] == "KernelDied"


def test_interruptible_loop_times_out_and_grading_continues(assignment: dict, grade_case) -> None:
    started = time.monotonic()
    _, book, _ = grade_case(
        make(assignment, "loop", g="while True:\n    pass"), assignment["source"], cell_timeout=2
    )
    assert time.monotonic() - started < 15
    assert points(book) == {"test_f": 1.0, "test_g": 0.0, "test_h": 1.0}


def test_loop_ignoring_the_interrupt_gets_the_kernel_replaced(assignment: dict, grade_case) -> None:
    """The old kernel is killed with its processes; later cells run in a fresh one (test_timeouts.py)."""
    before = kernel_processes()
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    started = time.monotonic()
    _, book, _ = grade_case(
        make(assignment, "stubborn", g=code), assignment["source"], cell_timeout=2, interrupt_grace=1
    )
    assert time.monotonic() - started < 15
    assert points(book) == {"test_f": 1.0, "test_g": 0.0, "test_h": 1.0}
    entry = only_notebook(book)
    assert entry["execution"]["kernel"] == "ok" and entry["execution"]["kernel_restarts"] == 1
    assert entry["cells"]["test_g"]["error"]["name"] == "NameError"
    assert kernel_processes() - before == set()


def test_a_test_cell_that_times_out_fails_with_timeout(assignment: dict, grade_case) -> None:
    code = "def g(x):\n    while True:\n        pass"
    _, book, _ = grade_case(make(assignment, "slow_test", g=code), assignment["source"], cell_timeout=2)
    cells = only_notebook(book)["cells"]
    assert cells["test_g"]["status"] == "timeout" and cells["test_g"]["points"] == 0.0
    assert cells["test_h"]["points"] == 1.0


@pytest.mark.emulation_artifact(
    "the whole notebook gets 5 s: emulated, the kernel's start alone can take that long, so even the "
    "first test may not run"
)
def test_total_time_limit(assignment: dict, grade_case) -> None:
    started = time.monotonic()
    _, book, _ = grade_case(
        make(assignment, "total", g="import time\ntime.sleep(60)"),
        assignment["source"],
        cell_timeout=30,
        timeout=5,
    )
    assert time.monotonic() - started < 20
    entry = only_notebook(book)
    assert points(book) == {"test_f": 1.0, "test_g": 0.0, "test_h": 0.0}
    assert entry["cells"]["test_h"]["error"]["name"] == "TimeLimit"
    assert entry["execution"]["time_limit_reached"] is True


def test_output_is_capped_per_cell_with_a_notice(assignment: dict, grade_case) -> None:
    code = "for _ in range(50):\n    print('x' * 100_000)\n" + CORRECT["f"]
    _, book, output = grade_case(
        make(assignment, "flood", f=code), assignment["source"], output_limit=100_000
    )
    assert points(book) == {"test_f": 1.0, "test_g": 1.0, "test_h": 1.0}
    nb = json.loads((output / "robust.ipynb").read_text())
    flooded = nb["cells"][0]["outputs"]
    assert sum(len(o.get("text", "")) for o in flooded) < 110_000
    assert "output truncated by the grader" in flooded[-1]["text"]


def test_a_single_oversized_message_is_dropped_and_grading_goes_on(assignment: dict, grade_case) -> None:
    code = "import sys\nsys.stdout.write('y' * 3_000_000)\nsys.stdout.flush()\n" + CORRECT["f"]
    g_code = "print('still here')\n" + CORRECT["g"]
    _, book, output = grade_case(
        make(assignment, "huge_message", f=code, g=g_code),
        assignment["source"],
        max_message_size=1_000_000,
        iopub_timeout=2,
    )
    assert points(book) == {"test_f": 1.0, "test_g": 1.0, "test_h": 1.0}
    assert "still here" in outputs_text(output)
    assert (output / "robust.ipynb").stat().st_size < 100_000


def test_twenty_megabyte_notebook(assignment: dict, grade_case) -> None:
    nb = with_answers(assignment["release"], CORRECT)
    nb.cells[0].outputs = [{"output_type": "stream", "name": "stdout", "text": "z" * 20_000_000}]
    directory = assignment["root"] / "submissions" / "big"
    write(nb, directory / "robust.ipynb")
    assert (directory / "robust.ipynb").stat().st_size > 20_000_000
    started = time.monotonic()
    _, book, output = grade_case(directory, assignment["source"])
    assert time.monotonic() - started < 20
    assert points(book) == {"test_f": 1.0, "test_g": 1.0, "test_h": 1.0}
    assert (output / "robust.ipynb").stat().st_size < 100_000, "stale outputs are not carried over"


def test_missing_notebook_scores_zero_and_the_rest_is_graded(assignment: dict, tmp_path: Path) -> None:
    source = stage(assignment["source"], tmp_path / "src")
    write(notebook(*SOURCE_CELLS[:2]), source / "second.ipynb")
    submission = stage(make(assignment, "only_one"), tmp_path / "sub")
    summary = autograde(submission, source, tmp_path / "out", cell_timeout=10)
    assert summary["notebooks"]["robust"] == {"status": "graded", "score": 3.0, "max_score": 3.0}
    assert summary["notebooks"]["second"] == {"status": "missing", "score": 0.0, "max_score": 1.0}
    book = json.loads((tmp_path / "out" / "gradebook.json").read_text())
    assert book["notebooks"]["second"]["cells"]["test_f"]["error"]["name"] == "MissingNotebook"
    assert summary["score"] == 3.0 and summary["max_score"] == 4.0


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def children_graded(assignment: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One grading of a submission whose kernel starts a child in its process group and a
    double-forked setsid daemon; what the checks below need to know about it."""
    tmp_path = tmp_path_factory.mktemp("children")
    # A private HOME and temp root for the grader, so other users of this machine cannot
    # disturb the "nothing written" check.
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    source = stage(assignment["source"], tmp_path / "src")
    submission = stage(make(assignment, "children", f=CHILDREN), tmp_path / "sub")
    source_before, submission_before = _tree_digest(source), _tree_digest(submission)
    kernels_before = kernel_processes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setattr(tempfile, "tempdir", str(temp))
        autograde(submission, source, tmp_path / "out", cell_timeout=10)
    text = outputs_text(tmp_path / "out")
    sleeper, daemon = (int(x) for x in text.split("PIDS ", 1)[1].split()[:2])
    return {
        "sleeper": sleeper,
        "daemon": daemon,
        "stray_kernels": kernel_processes() - kernels_before,
        "source_changed": _tree_digest(source) != source_before,
        "submission_changed": _tree_digest(submission) != submission_before,
        "home": list(home.iterdir()),
        "temp": list(temp.iterdir()),
        "output": sorted(p.name for p in (tmp_path / "out").iterdir()),
    }


def test_child_processes_die_and_nothing_is_written_outside_the_output(children_graded: dict) -> None:
    assert not pid_alive(children_graded["sleeper"]), "child in the kernel's process group"
    assert children_graded["stray_kernels"] == set()
    assert not children_graded["source_changed"] and not children_graded["submission_changed"]
    assert children_graded["home"] == [], "nothing in HOME"
    assert children_graded["temp"] == [], "the kernel's private directory is gone"
    assert children_graded["output"] == ["gradebook.json", "robust.ipynb"]


@pytest.mark.emulation_artifact(SUBREAPER_UNDER_QEMU)
def test_a_double_forked_daemon_dies_too(children_graded: dict) -> None:
    assert not pid_alive(children_graded["daemon"]), "double-forked setsid daemon"


def test_could_not_grade(assignment: dict, tmp_path: Path) -> None:
    submission = stage(make(assignment, "cannot"), tmp_path / "sub")
    with pytest.raises(GradingError, match="no such directory"):
        autograde(submission, tmp_path / "nope", tmp_path / "out")
    with pytest.raises(GradingError, match="must not contain or be inside"):
        autograde(submission, assignment["source"], submission / "out")
    with pytest.raises(GradingError, match="could not be started"):
        autograde(
            submission,
            assignment["source"],
            tmp_path / "out2",
            kernel_python="/bin/false",
            startup_timeout=10,
        )


def test_manual_cells_are_listed_as_needing_grading(tmp_path: Path) -> None:
    write(
        notebook(
            answer("f", "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"),
            graded("test_f", "assert f(1) == 2", 1),
            markdown("Explain f.", grade_id="essay", grade=True, solution=True, points=4),
            markdown("Plot something nice.", grade_id="task1", task=True, locked=True, points=2),
        ),
        tmp_path / "source" / "hw.ipynb",
    )
    release_assignment(tmp_path / "source", tmp_path / "release")
    nb = with_answers(
        json.loads((tmp_path / "release" / "hw.ipynb").read_text()), {"f": CORRECT["f"], "essay": "Because."}
    )
    write(nb, tmp_path / "sub" / "hw.ipynb")
    summary = autograde(tmp_path / "sub", tmp_path / "source", tmp_path / "out", cell_timeout=10)
    assert summary["score"] == 1.0 and summary["max_score"] == 7.0 and summary["needs_manual_grading"] is True
    entry = json.loads((tmp_path / "out" / "gradebook.json").read_text())["notebooks"]["hw"]
    assert entry["needs_manual"] == ["essay", "task1"]
    assert entry["cells"]["essay"] == {
        "grade_id": "essay", "kind": "manual", "max_points": 4.0, "hidden_tests": False, "points": None,
        "status": "needs-manual", "partial": False, "error": None, "duration_s": None, "tampering": [],
        "withheld": False,
    }  # fmt: skip


def test_credit_a_test_gives_regardless_of_the_answer_is_not_counted(tmp_path: Path) -> None:
    """Documented deviation from nbgrader: points a test awards even to wrong answers (here one
    point for `f` merely being callable) are deducted, because the grader cannot tell them from
    points a cheat obtains. nbgrader would give 3 here."""
    check = "_s = 0\nif callable(f):\n    _s += 1\ntry:\n    _s += 2 * (f(2) == 3)\nexcept Exception:\n    pass\n_s"
    write(notebook(SOURCE_CELLS[0], graded("test_f", check, 3)), tmp_path / "source" / "hw.ipynb")
    release_assignment(tmp_path / "source", tmp_path / "release")
    nb = with_answers(json.loads((tmp_path / "release" / "hw.ipynb").read_text()), {"f": CORRECT["f"]})
    write(nb, tmp_path / "sub" / "hw.ipynb")
    autograde(tmp_path / "sub", tmp_path / "source", tmp_path / "out", cell_timeout=10)
    cell = json.loads((tmp_path / "out" / "gradebook.json").read_text())["notebooks"]["hw"]["cells"]["test_f"]
    assert cell["points"] == 2.0 and "deducted" in cell["tampering"][0]

"""A cell stopped by its timeout keeps what it did: the kernel survives with its definitions.

Each submission defines correct answers and then blocks, in one of the ways a cell can block
(sleeping, waiting for a child, for a thread, looping in Python or in C, swallowing interrupts).
The tests after it must score exactly as if the cell had ended after its definitions. Where the
kernel cannot be brought back (student code swallows every interrupt, or never returns to the
interpreter), it is replaced by a fresh one: the tests that lost their definitions fail, their
feedback says why, the rest of the notebook is still graded, and the grading stays bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader_service.convert.feedback import generate_feedback
from grader_service.convert.forked_kernel import KernelLauncher
from grader_service.convert.release import release_assignment
from grader_service.convert.visibility import student_view

from .builders import answer, graded, notebook, with_answers, write
from .conftest import kernel_processes, only_notebook, points

CELL_TIMEOUT = 1.0
GRACE = 1.0

SOURCE_CELLS = [
    answer(
        "fg",
        "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n"
        "def g(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
    ),
    graded("test_f", "assert f(1) == 2\nassert f(-1) == 0", 2),
    graded("test_g", "assert g(2) == 4", 3),
    answer("h", "def h(x):\n    ### BEGIN SOLUTION\n    return x - 1\n    ### END SOLUTION"),
    graded("test_h", "assert h(1) == 0", 5),
]
DEFINITIONS = "def f(x):\n    return x + 1\ndef g(x):\n    return 2 * x\n"
H = "def h(x):\n    return x - 1"
FULL = {"test_f": 2.0, "test_g": 3.0, "test_h": 5.0}

IGNORES_SIGINT = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
# Blocks the interrupt stops, or that ends once the notebook's processes are killed.
RECOVERABLE = {
    "time_sleep": "import time\ntime.sleep(60)",
    "subprocess_sleep": "import subprocess\nsubprocess.run(['sleep', '60'])",
    "thread_join": "import threading, time\nt = threading.Thread(target=time.sleep, args=(60,))\nt.start()\nt.join()",
    "busy_loop": "while True:\n    pass",
    "long_loop": "total = 0\nfor i in range(10**12):\n    total += i",
    "child_ignores_sigint": f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {IGNORES_SIGINT!r}])",
    # system() ignores SIGINT while it waits: only killing the child ends the wait.
    "os_system_child_ignores_sigint": (
        f"import os, shlex, sys\nos.system(shlex.join([sys.executable, '-c', {IGNORES_SIGINT!r}]))"
    ),
    "child_in_own_session": (
        "import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True).wait()"
    ),
    "pool_worker": (
        "import concurrent.futures, time\n"
        "with concurrent.futures.ProcessPoolExecutor(1) as pool:\n"
        "    pool.submit(time.sleep, 60).result()"
    ),
    "signal_pause": "import signal\nsignal.pause()",
    "select_forever": "import select, os\nr, w = os.pipe()\nselect.select([r], [], [])",
    # Ends without an error: the grader check carried by the cell's request ran once, already.
    "catches_the_interrupt_once": "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    pass",
}
# Blocks no interrupt ends: the kernel is replaced.
UNRECOVERABLE = {
    "swallows_every_interrupt": (
        "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
    ),
    "swallows_base_exception": (
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    ),
    "ignores_sigint": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
    "handler_that_returns": "import signal\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True:\n    pass",
    "loop_in_c": "import itertools\nmax(itertools.count())",
}


@pytest.fixture(scope="module")
def assignment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("timeouts")
    write(notebook(*SOURCE_CELLS), root / "source" / "timeouts.ipynb")
    release_assignment(root / "source", root / "release")
    return {
        "root": root,
        "source": root / "source",
        "release": json.loads((root / "release" / "timeouts.ipynb").read_text()),
    }


def make(assignment: dict, name: str, **answers: str) -> Path:
    directory = assignment["root"] / "submissions" / name
    write(
        with_answers(assignment["release"], {"fg": DEFINITIONS, "h": H, **answers}),
        directory / "timeouts.ipynb",
    )
    return directory


@pytest.fixture(scope="module")
def launcher() -> Iterator[KernelLauncher]:
    launcher = KernelLauncher.fork()
    yield launcher
    launcher.close()


def grade(
    assignment: dict, grade_case, name: str, launcher: KernelLauncher | None = None, **answers: str
) -> tuple[dict, Path, float]:
    started = time.monotonic()
    _, book, output = grade_case(
        make(assignment, name, **answers),
        assignment["source"],
        cell_timeout=CELL_TIMEOUT,
        interrupt_grace=GRACE,
        kernel_launcher=launcher,
    )
    return book, output, time.monotonic() - started


def cell_text(output: Path, index: int) -> str:
    nb = json.loads((output / "timeouts.ipynb").read_text())
    return "".join(o.get("text", "") for o in nb["cells"][index].get("outputs", []))


@pytest.mark.parametrize("block", sorted(RECOVERABLE))
def test_definitions_before_a_block_survive_the_timeout(assignment: dict, grade_case, block: str) -> None:
    before = kernel_processes()
    book, output, took = grade(assignment, grade_case, block, fg=DEFINITIONS + RECOVERABLE[block])
    entry = only_notebook(book)
    assert points(book) == FULL
    assert entry["execution"]["kernel"] == "ok" and entry["execution"]["kernel_restarts"] == 0
    assert "stopped by the grader: this cell exceeded its time limit of 1 s" in cell_text(output, 0)
    assert not [n for n in entry["notes"] if n["kind"] == "timeout"]
    assert took < 20
    assert kernel_processes() - before == set()


@pytest.mark.parametrize("block", sorted(UNRECOVERABLE))
def test_an_unrecoverable_kernel_is_replaced_and_the_tests_it_cost_say_so(
    assignment: dict, grade_case, block: str
) -> None:
    before = kernel_processes()
    book, output, took = grade(assignment, grade_case, block, fg=DEFINITIONS + UNRECOVERABLE[block])
    entry = only_notebook(book)
    # f and g were lost with the kernel; h, defined after it, is graded in the fresh one.
    assert points(book) == {"test_f": 0.0, "test_g": 0.0, "test_h": 5.0}
    assert entry["execution"]["kernel"] == "ok" and entry["execution"]["kernel_restarts"] == 1
    assert entry["cells"]["test_f"]["error"]["name"] == "NameError"
    notes = {n["cell"]: n["message"] for n in entry["notes"] if n["kind"] == "timeout"}
    assert set(notes) == {"test_f", "test_g"}
    assert "could not be recovered after the timeout in cell #1 ('fg')" in notes["test_f"]
    assert "did not stop when interrupted; the kernel was killed" in cell_text(output, 0)
    assert took < 20
    assert kernel_processes() - before == set()


def test_the_feedback_says_why_a_test_was_lost(assignment: dict, grade_case, tmp_path: Path) -> None:
    book, output, _ = grade(
        assignment, grade_case, "feedback", fg=DEFINITIONS + UNRECOVERABLE["ignores_sigint"]
    )
    view = student_view(book)
    messages = [n["message"] for n in only_notebook(view)["notes"] if n["cell"] == "test_g"]
    assert messages and "could not be recovered after the timeout" in messages[0]
    (page,) = generate_feedback(output, tmp_path / "feedback")
    assert "could not be recovered after the timeout in cell #1" in page.read_text()


def test_a_test_that_swallows_interrupts_scores_nothing_and_the_rest_is_graded(
    assignment: dict, grade_case
) -> None:
    looping_g = (
        "def g(x):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass"
    )
    book, _, took = grade(
        assignment, grade_case, "test_loops", fg=DEFINITIONS.replace("def g", "def _g") + looping_g
    )
    entry = only_notebook(book)
    # test_f ran before; test_g is stuck and costs the kernel; test_h's answer runs in the new one.
    assert points(book) == {"test_f": 2.0, "test_g": 0.0, "test_h": 5.0}
    assert entry["cells"]["test_g"]["status"] == "timeout"
    assert entry["cells"]["test_g"]["error"]["name"] == "KernelUnresponsive"
    assert entry["execution"]["kernel_restarts"] == 1
    assert took < 30


def test_restarts_are_bounded(assignment: dict, grade_case) -> None:
    """Every answer cell hanging for good: three fresh kernels at most, then grading stops."""
    stuck = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    sub = assignment["root"] / "submissions" / "always_stuck"
    nb = with_answers(assignment["release"], {"fg": stuck, "h": stuck}, insert={1: stuck, 3: stuck, 5: stuck})
    write(nb, sub / "timeouts.ipynb")
    before = kernel_processes()
    started = time.monotonic()
    _, book, _ = grade_case(sub, assignment["source"], cell_timeout=0.5, interrupt_grace=0.5)
    entry = only_notebook(book)
    assert points(book) == {"test_f": 0.0, "test_g": 0.0, "test_h": 0.0}
    assert entry["execution"]["kernel"] == "killed" and entry["execution"]["kernel_restarts"] == 3
    assert "could not be recovered after the timeout in cell" in entry["cells"]["test_h"]["error"]["message"]
    assert time.monotonic() - started < 40
    assert kernel_processes() - before == set()


def test_the_total_time_limit_still_applies(assignment: dict, grade_case) -> None:
    swallow = UNRECOVERABLE["swallows_every_interrupt"]
    started = time.monotonic()
    _, book, _ = grade_case(
        make(assignment, "total", fg=DEFINITIONS + swallow, h=H + "\n" + swallow),
        assignment["source"],
        cell_timeout=3,
        interrupt_grace=1,
        timeout=5,
    )
    entry = only_notebook(book)
    assert sum(points(book).values()) == 0.0
    assert time.monotonic() - started < 25
    assert entry["execution"]["kernel_restarts"] <= 1


@pytest.mark.parametrize(
    "block, expected",
    [
        ("os_system_child_ignores_sigint", FULL),
        ("catches_the_interrupt_once", FULL),
        ("ignores_sigint", {"test_f": 0.0, "test_g": 0.0, "test_h": 5.0}),
    ],
)
def test_forked_kernels_too(
    assignment: dict, grade_case, launcher: KernelLauncher, block: str, expected: dict
) -> None:
    """As the fork server grades: kernels are the launcher's children, their processes still ours to end."""
    code = RECOVERABLE.get(block) or UNRECOVERABLE[block]
    book, output, took = grade(assignment, grade_case, f"forked_{block}", launcher, fg=DEFINITIONS + code)
    entry = only_notebook(book)
    assert points(book) == expected
    assert entry["execution"]["kernel_restarts"] == (0 if expected == FULL else 1)
    assert "stopped by the grader" in cell_text(output, 0)
    assert took < 20

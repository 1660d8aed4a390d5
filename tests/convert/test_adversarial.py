"""Student code must not be able to raise its score. One submission per cheat.

Every submission has the same *wrong* answers, whose genuine score is known (GENUINE), plus one
cheat cell. A cheat that is prevented leaves exactly the genuine score; one that can only be
detected zeroes the affected tests (never more than genuine) and leaves a tampering note.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from grader_service.convert.release import release_assignment

from .builders import answer, graded, locked, markdown, notebook, with_answers, write
from .conftest import SUBREAPER_UNDER_QEMU, needs_landlock, only_notebook, points

SOURCE_CELLS = [
    markdown("# Cheats\nAnswer the questions."),
    locked("imports", "import math\nimport colorsys\nfrom math import isclose"),
    answer("area", "def area(r):\n    ### BEGIN SOLUTION\n    return math.pi * r * r\n    ### END SOLUTION"),
    graded("test_area", "assert isclose(area(1), math.pi)\nassert math.isclose(area(2), 4 * math.pi)", 2),
    answer(
        "mean3",
        "def mean3(a, b, c):\n    ### BEGIN SOLUTION\n    return (a + b + c) / 3\n    ### END SOLUTION",
    ),
    graded("test_mean", "assert sorted([mean3(3, 3, 3), 1]) == [1, 3]", 1),
    answer(
        "count_even",
        "def count_even(xs):\n    ### BEGIN SOLUTION\n    return sum(1 for x in xs if x % 2 == 0)\n    ### END SOLUTION",
    ),
    graded(
        "test_partial",
        "_ok = 0\nfor _xs, _n in [([], 0), ([2], 1), ([1, 3], 0), ([2, 4, 5], 2), ([0], 1), ([7, 8], 1)]:\n"
        "    try:\n        _ok += count_even(_xs) == _n\n    except Exception:\n        pass\n_ok * 0.5",
        3,
    ),
    graded(
        "test_hidden",
        "assert count_even([2]) == 1\n### BEGIN HIDDEN TESTS\nassert count_even([1, 2, 3, 4]) == 2\n### END HIDDEN TESTS",
        1,
    ),
    answer(
        "brightness",
        "def brightness(rgb):\n    ### BEGIN SOLUTION\n    return max(rgb)\n    ### END SOLUTION",
    ),
    graded(
        "test_brightness", "assert brightness((0.2, 0.4, 0.6)) == colorsys.rgb_to_hsv(0.2, 0.4, 0.6)[2]", 1
    ),
]

WRONG = {
    "area": "def area(r):\n    return 0",
    "mean3": "def mean3(a, b, c):\n    return 0",
    "count_even": "def count_even(xs):\n    return 0",
    "brightness": "def brightness(rgb):\n    return 0",
}
# What the wrong answers genuinely earn: count_even == 0 is right for two of six cases.
GENUINE = {
    "test_area": 0.0,
    "test_mean": 0.0,
    "test_partial": 1.0,
    "test_hidden": 0.0,
    "test_brightness": 0.0,
}
CORRECT = {
    "area": "def area(r):\n    return math.pi * r * r",
    "mean3": "def mean3(a, b, c):\n    return (a + b + c) / 3",
    "count_even": "def count_even(xs):\n    return sum(1 for x in xs if x % 2 == 0)",
    "brightness": "def brightness(rgb):\n    return max(rgb)",
}

# Cheats the guard puts aside before tests run: the score is exactly the genuine one.
PREVENTED = {
    "ast_transformer": """
        import ast
        class _Strip(ast.NodeTransformer):
            def visit_Assert(self, node):
                return ast.Pass()
            def visit_Module(self, node):
                self.generic_visit(node)
                body = node.body or [ast.Pass()]
                handler = ast.ExceptHandler(type=None, name=None, body=[ast.Pass()])
                node.body = [ast.Try(body=body, handlers=[handler], orelse=[], finalbody=[])]
                return ast.fix_missing_locations(node)
        get_ipython().ast_transformers.append(_Strip())
    """,
    "input_transformer": """
        def _neuter(lines):
            return [line.replace("assert ", "_ = ") for line in lines]
        get_ipython().input_transformers_cleanup.append(_neuter)
        get_ipython().input_transformers_post.append(_neuter)
    """,
    "patched_showtraceback": """
        from IPython.core.interactiveshell import ExecutionResult
        ip = get_ipython()
        ip.showtraceback = lambda *a, **k: None
        type(ip)._showtraceback = lambda *a, **k: None
        # ...and make the reply say "ok" too, so no trace of the failure reaches the grader.
        ExecutionResult.error_in_exec = property(lambda self: None, lambda self, value: None)
    """,
    "sys_excepthook": """
        import sys
        sys.excepthook = lambda *args: None
        get_ipython().set_custom_exc((Exception,), lambda shell, etype, evalue, tb, tb_offset=None: None)
    """,
    "displayhook_partial_credit": """
        ip = get_ipython()
        plain = ip.display_formatter.formatters["text/plain"]
        plain.for_type(float, lambda obj, p, cycle: p.text("3.0"))
        plain.for_type(int, lambda obj, p, cycle: p.text("3"))
        ip.displayhook.compute_format_data = lambda result: ({"text/plain": "3.0"}, {})
    """,
    "event_hooks": """
        def _forgive(result):
            result.error_in_exec = None
            result.error_before_exec = None
        get_ipython().events.register("post_run_cell", _forgive)
        get_ipython().events.register("pre_run_cell", lambda info: None)
        get_ipython().showtraceback = lambda *a, **k: None
    """,
    "patched_builtins_and_helpers": """
        import builtins, math
        builtins.sorted = lambda *a, **k: [1, 3]
        math.isclose = lambda *a, **k: True
        isclose = lambda *a, **k: True
    """,
    "rebound_module_name": """
        import types
        math = types.SimpleNamespace(pi=0, isclose=lambda *a, **k: True)
        colorsys = types.SimpleNamespace(rgb_to_hsv=lambda *a: (0, 0, 0))
    """,
    "session_rewrites_replies": """
        session = get_ipython().kernel.session
        _send = session.send
        def _send_ok(stream, msg_or_type, content=None, *args, **kwargs):
            if isinstance(msg_or_type, str) and msg_or_type == "error":
                return None
            if isinstance(msg_or_type, str) and msg_or_type == "execute_reply" and content:
                content = dict(content, status="ok")
            return _send(stream, msg_or_type, content, *args, **kwargs)
        session.send = _send_ok
    """,
}

# Without the guard these raise the score (shown by test_cheats_are_real_without_the_guard), so the
# tests above can fail. sys.excepthook and custom exception handlers never affect the reply status
# in IPython, so they gain nothing even unguarded; they are checked anyway.
EFFECTIVE_UNGUARDED = sorted(set(PREVENTED) - {"sys_excepthook"})

# Cheats that survive the guard (a thread re-installs them continuously): detected, zeroed.
THREAD_CHEAT = """
    import ast, threading, time
    class _Strip(ast.NodeTransformer):
        def visit_Assert(self, node):
            return ast.Pass()
        def visit_Module(self, node):
            self.generic_visit(node)
            handler = ast.ExceptHandler(type=None, name=None, body=[ast.Pass()])
            node.body = [ast.Try(body=node.body or [ast.Pass()], handlers=[handler], orelse=[], finalbody=[])]
            return ast.fix_missing_locations(node)
    _t = _Strip()
    def _keep():
        ip = get_ipython()
        while True:
            if _t not in ip.ast_transformers:
                ip.ast_transformers.append(_t)
            time.sleep(0.0005)
    threading.Thread(target=_keep, daemon=True).start()
    time.sleep(0.05)
"""

TARGETED_THREAD_CHEAT = """
    import threading, time
    def _rewrite(lines):
        text = "".join(lines)
        if "count_even([2]) == 1" in text or "isclose(area(1)" in text:
            return ["pass\\n"]
        return lines
    def _keep():
        ip = get_ipython()
        while True:
            if _rewrite not in ip.input_transformers_post:
                ip.input_transformers_post.append(_rewrite)
            time.sleep(0.0005)
    threading.Thread(target=_keep, daemon=True).start()
    time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def assignment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cheats")
    write(notebook(*SOURCE_CELLS), root / "source" / "cheats.ipynb")
    release_assignment(root / "source", root / "release")
    release = json.loads((root / "release" / "cheats.ipynb").read_text())
    return {"root": root, "source": root / "source", "release": release}


def submission(
    assignment: dict, name: str, cheat: str, answers: dict | None = None, files: dict | None = None
) -> Path:
    nb = with_answers(assignment["release"], answers or WRONG, insert={2: textwrap.dedent(cheat)})
    directory = assignment["root"] / "submissions" / name
    write(nb, directory / "cheats.ipynb")
    for rel, text in (files or {}).items():
        (directory / rel).write_text(textwrap.dedent(text))
    return directory


@pytest.fixture(scope="module")
def honest(assignment: dict, grade_case) -> tuple:
    return grade_case(submission(assignment, "honest", "x = 1"), assignment["source"])


def test_honest_wrong_answers_earn_the_genuine_score(honest: tuple) -> None:
    _, book, _ = honest
    assert points(book) == GENUINE
    entry = only_notebook(book)
    assert book["tampering"] is False
    assert [n for n in entry["notes"] if n["kind"] in ("tampering", "integrity")] == []


def test_honest_correct_answers_earn_everything(assignment: dict, grade_case) -> None:
    _, book, _ = grade_case(submission(assignment, "correct", "x = 1", answers=CORRECT), assignment["source"])
    assert points(book) == {
        "test_area": 2.0,
        "test_mean": 1.0,
        "test_partial": 3.0,
        "test_hidden": 1.0,
        "test_brightness": 1.0,
    }
    assert book["tampering"] is False


@pytest.mark.parametrize("name", sorted(PREVENTED))
def test_prevented_cheats_earn_only_the_genuine_score(assignment: dict, grade_case, name: str) -> None:
    _, book, _ = grade_case(submission(assignment, name, PREVENTED[name]), assignment["source"])
    assert points(book) == GENUINE


def test_correct_answers_with_a_cheat_left_in_still_pass(assignment: dict, grade_case) -> None:
    """Prevention, not punishment: a student who also fiddled with the kernel keeps honest points."""
    cheat = PREVENTED["patched_builtins_and_helpers"] + "\n" + PREVENTED["displayhook_partial_credit"]
    _, book, _ = grade_case(
        submission(assignment, "correct_plus", cheat, answers=CORRECT), assignment["source"]
    )
    assert points(book) == {
        "test_area": 2.0,
        "test_mean": 1.0,
        "test_partial": 3.0,
        "test_hidden": 1.0,
        "test_brightness": 1.0,
    }
    notes = " ".join(f"{n['message']} ({n.get('detail')})" for n in only_notebook(book)["notes"])
    assert "set aside while protected cells ran" in notes and "builtins.sorted" in notes


def test_a_cheat_in_a_failing_cell_right_before_a_test_is_still_set_aside(
    assignment: dict, grade_case
) -> None:
    """The guard's step before a test rides on the previous cell's request only if that cell
    succeeds; after a failure it must still run, on its own. Without it the patched `isclose`
    would let test_area's mutation run pass, and the test would be zeroed."""
    cheat = textwrap.dedent(PREVENTED["patched_builtins_and_helpers"])
    failing_area = f"{CORRECT['area']}\n{cheat}\nraise RuntimeError('and then the cell fails')"
    _, book, _ = grade_case(
        submission(assignment, "failing_cheat", "x = 1", answers={**CORRECT, "area": failing_area}),
        assignment["source"],
    )
    assert points(book) == {
        "test_area": 2.0,
        "test_mean": 1.0,
        "test_partial": 3.0,
        "test_hidden": 1.0,
        "test_brightness": 1.0,
    }
    notes = " ".join(f"{n['message']} ({n.get('detail')})" for n in only_notebook(book)["notes"])
    assert "set aside while protected cells ran" in notes and "math.isclose" in notes


@pytest.mark.parametrize("cheat", [THREAD_CHEAT, TARGETED_THREAD_CHEAT], ids=["generic", "targeted"])
def test_cheats_that_survive_the_guard_are_detected_and_zeroed(
    assignment: dict, grade_case, cheat: str
) -> None:
    _, book, _ = grade_case(submission(assignment, "thread" + str(len(cheat)), cheat), assignment["source"])
    got = points(book)
    assert all(got[gid] <= GENUINE[gid] for gid in GENUINE), got
    assert book["tampering"] is True
    entry = only_notebook(book)
    assert entry["cells"]["test_hidden"]["tampering"], "the cheated test carries a note"
    assert entry["cells"]["test_area"]["points"] == 0.0


def test_fake_kernel_and_shadow_modules_in_the_submission_are_ignored(assignment: dict, grade_case) -> None:
    files = {
        "ipykernel_launcher.py": "raise SystemExit('fake kernel')\n",
        "colorsys.py": "def rgb_to_hsv(r, g, b):\n    return (0, 0, 0)\n",
    }
    _, book, _ = grade_case(submission(assignment, "shadow", "x = 1", files=files), assignment["source"])
    assert points(book) == GENUINE


@pytest.fixture(scope="module")
def gradebook_forged(assignment: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The student guesses the output path, writes a full-marks gradebook, and starts a process
    (in a session of its own) that keeps rewriting it; graded once for the checks below, where no
    Landlock fence keeps the kernel out of the output directory (see the fenced variant below)."""
    from grader_service.convert.autograde import autograde

    from .conftest import stage

    tmp_path = tmp_path_factory.mktemp("forged")
    output = tmp_path / "output"
    output.mkdir()
    forged = json.dumps({"score": 100, "notebooks": {}})
    cheat = f"""
        import subprocess, sys, os
        path = {str(output / "gradebook.json")!r}
        open(path, "w").write({forged!r})
        open({str(output / "cheats.ipynb")!r}, "w").write("{{}}")
        code = "import time\\nwhile True:\\n    open(%r, 'w').write(%r)\\n    time.sleep(0.01)" % (path, {forged!r})
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        print("CHILD", child.pid)
    """
    sub = stage(submission(assignment, "gradebook", cheat), tmp_path / "sub")
    source = stage(assignment["source"], tmp_path / "src")
    autograde(sub, source, output, cell_timeout=10, fence_kernels=False)
    book = json.loads((output / "gradebook.json").read_text())
    nb = json.loads((output / "cheats.ipynb").read_text())
    texts = "".join(o.get("text", "") for c in nb["cells"] for o in c.get("outputs", []))
    return {"book": book, "notebook": nb, "child": int(texts.split("CHILD ", 1)[1].split()[0])}


@needs_landlock
def test_a_fenced_kernel_cannot_write_the_output_directory(assignment: dict, tmp_path: Path) -> None:
    from grader_service.convert.autograde import autograde

    from .conftest import stage

    output = tmp_path / "output"
    output.mkdir()
    cheat = f"""
        import os
        for path in ({str(output / "gradebook.json")!r}, {str(output / "cheats.ipynb")!r}):
            try:
                open(path, "w").write('{{"score": 100}}')
                print("WROTE", path)
            except PermissionError:
                print("REFUSED", path)
        try:
            os.listdir({str(output)!r})
        except PermissionError:
            print("REFUSED listing")
    """
    sub = stage(submission(assignment, "fenced_writer", cheat), tmp_path / "sub")
    autograde(sub, stage(assignment["source"], tmp_path / "src"), output, cell_timeout=10)
    book = json.loads((output / "gradebook.json").read_text())
    nb = json.loads((output / "cheats.ipynb").read_text())
    texts = "".join(o.get("text", "") for c in nb["cells"] for o in c.get("outputs", []))
    assert points(book) == GENUINE
    assert "WROTE" not in texts and texts.count("REFUSED") == 3, texts


@pytest.mark.emulation_artifact(
    SUBREAPER_UNDER_QEMU + ", so the writer survives grading and rewrites the gradebook (in the service, "
    "the job's PID namespace ends it)"
)
def test_writing_the_gradebook_from_the_kernel_changes_nothing(gradebook_forged: dict) -> None:
    book = gradebook_forged["book"]
    assert points(book) == GENUINE
    assert len(gradebook_forged["notebook"]["cells"]) > 5
    assert any("output directory" in n["message"] for n in only_notebook(book)["notes"])


@pytest.mark.emulation_artifact(SUBREAPER_UNDER_QEMU)
def test_the_gradebook_writer_process_is_killed(gradebook_forged: dict) -> None:
    from .conftest import pid_alive

    assert not pid_alive(gradebook_forged["child"]), "the student's writer process was killed"


@pytest.mark.parametrize("fence", [pytest.param(True, marks=needs_landlock), False])
def test_reading_the_source_notebook_earns_nothing(assignment: dict, tmp_path: Path, fence: bool) -> None:
    """The student knows where the source is and executes the instructor's solutions from it: a
    kernel fenced off the source (Landlock) cannot open it; an unfenced one is caught reading it
    (its grader watches the source) and every later test is zeroed."""
    from grader_service.convert.autograde import autograde

    from .conftest import stage

    source = stage(assignment["source"], tmp_path / "src")
    cheat = f"""
        import json
        for cell in json.load(open({str(source / "cheats.ipynb")!r}))["cells"]:
            if cell["metadata"].get("nbgrader", {{}}).get("solution"):
                print("STOLEN", "".join(cell["source"]))
                exec("".join(cell["source"]).replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""))
    """
    # The stolen solutions are defined in the cheat cell, the (wrong) answers after it would
    # override them, so answer cells are left as stubs: everything rides on the stolen code.
    stubs = {gid: "pass" for gid in WRONG}
    sub = stage(submission(assignment, "reader", cheat, answers=stubs), tmp_path / "sub")
    autograde(sub, source, tmp_path / "out", cell_timeout=10, fence_kernels=fence)
    book = json.loads((tmp_path / "out" / "gradebook.json").read_text())
    nb = json.loads((tmp_path / "out" / "cheats.ipynb").read_text())
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert sum(points(book).values()) == 0.0
    if fence:
        assert "PermissionError" in outputs and "STOLEN" not in outputs
    else:
        assert book["tampering"] is True
        assert any("accessed the instructor's files" in n["message"] for n in only_notebook(book)["notes"])


def test_stale_outputs_and_fake_results_are_not_trusted(assignment: dict, grade_case) -> None:
    nb = with_answers(assignment["release"], WRONG)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.outputs = [
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "metadata": {},
                    "data": {"text/plain": "3.0"},
                }
            ]
            cell.execution_count = 1
    directory = assignment["root"] / "submissions" / "stale"
    write(nb, directory / "cheats.ipynb")
    _, book, _ = grade_case(directory, assignment["source"])
    assert points(book) == GENUINE


def test_answer_code_displaying_extra_numbers_cannot_raise_partial_credit(
    assignment: dict, grade_case
) -> None:
    answers = dict(WRONG, count_even="def count_even(xs):\n    get_ipython().displayhook(3.0)\n    return 0")
    _, book, _ = grade_case(
        submission(assignment, "display_extra", "x = 1", answers=answers), assignment["source"]
    )
    assert points(book)["test_partial"] <= GENUINE["test_partial"]


@pytest.mark.parametrize("name", EFFECTIVE_UNGUARDED + ["thread"])
def test_cheats_are_real_without_the_guard(assignment: dict, grade_case, name: str) -> None:
    """The same submissions graded with the guard and mutation runs off score above genuine."""
    cheat = THREAD_CHEAT if name == "thread" else PREVENTED[name]
    _, book, _ = grade_case(
        submission(assignment, "unguarded_" + name, cheat),
        assignment["source"],
        guard=False,
        mutation_runs=False,
    )
    assert sum(points(book).values()) > sum(GENUINE.values())

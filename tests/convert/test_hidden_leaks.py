"""Hidden tests run in the student's kernel; nothing the kernel produces from then on reaches the student.

Each submission answers correctly and tries one way to get at the hidden test while it runs
(caller frames, code constants, `linecache`, `inspect.stack()`, IPython's input history, `gc`,
tracebacks, an exception class named after it, a file, the kernel's own stderr) and to bring it
out, encoded (base64, rot13, hex, reversed, split over several outputs, character codes), in the
hidden test itself or in a later cell: printed, displayed, raised, or put in a visible test's
failure message. Every exfiltration is tagged `LEAK` (spelled so in no source) followed by its
payload, so the tests can
check both that the attack worked (the staff's gradebook and graded notebook show it) and that the
student's view (the gradebook's student view and the feedback page) shows none of it.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from grader_service.convert.feedback import generate_feedback
from grader_service.convert.release import release_assignment
from grader_service.convert.visibility import student_view

from .builders import answer, code, graded, markdown, notebook, with_answers, write
from .conftest import only_notebook

SECRET = "zebra-quartz-hidden-41"
HIDDEN_LINE = "assert f(13) == 169"

SOURCE_CELLS = [
    markdown("# Leaks"),
    answer("f", "def f(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"),
    graded("test_visible", 'assert f(2) == 4, "f(2) should be 4"', 1),
    answer("g", "def g(s):\n    ### BEGIN SOLUTION\n    return s[::-1]\n    ### END SOLUTION"),
    graded(
        "test_hidden",
        'assert g("ab") == "ba"\n### BEGIN HIDDEN TESTS\n'
        f'_probe = "{SECRET}"\nassert g(_probe) == _probe[::-1], "g must reverse any string"\n{HIDDEN_LINE}\n'
        "### END HIDDEN TESTS",
        2,
    ),
    markdown("## More"),
    code("print('instructor cell after the hidden test')", grade_id="after_info", locked=True),
    graded("test_after", 'assert f(3) == 9, f"f(3) gave {f(3)!r}"', 1),
]

CORRECT = {"f": "def f(x):\n    return x * x", "g": "def g(s):\n    return s[::-1]"}

# Student cells placed before the hidden test (they define the spy) and after it (they print).
# Every exfiltration writes LEAK> or LEAK_ followed by the payload.
ATTACKS: dict[str, tuple[str, str]] = {
    "frame_constants_base64_later": (
        """
        import sys, base64, builtins
        def g(s):
            consts = sys._getframe(1).f_code.co_consts
            builtins._stash = base64.b64encode(repr(consts).encode()).decode()
            return s[::-1]
        """,
        "print('LE' + 'AK>' + __import__('builtins')._stash)",
    ),
    "linecache_rot13_in_exception": (
        """
        import sys, codecs, linecache
        def g(s):
            if len(s) > 5:
                name = sys._getframe(1).f_code.co_filename
                raise ValueError('LE' + 'AK>' + codecs.encode(''.join(linecache.getlines(name)), 'rot13'))
            return s[::-1]
        """,
        "pass",
    ),
    "input_history_hex_later": (
        "def g(s):\n    return s[::-1]",
        "print('LE' + 'AK>' + ''.join(In).encode().hex())\nprint('LE' + 'AK>' + repr(_ih[-3:]).encode().hex())",
    ),
    "gc_strings_reversed_split_over_outputs": (
        "def g(s):\n    return s[::-1]",
        """
        import gc
        _found = sorted({r for o in gc.get_objects() for r in gc.get_referents(o)
                 if isinstance(r, str) and 'assert g(' in r}, key=len)
        _blob = ''.join(_found)[::-1].encode().hex()
        for _i in range(0, len(_blob), 40):
            print('LE' + 'AK>' + _blob[_i:_i + 40])
        """,
    ),
    "inspect_stack_char_codes_displayed": (
        """
        import inspect, builtins
        def g(s):
            frames = inspect.stack()
            builtins._codes = [ord(c) for f in frames for line in (f.code_context or []) for c in line]
            return s[::-1]
        """,
        """
        from IPython.display import HTML, display
        display(HTML('<b>LE' + 'AK>' + '.'.join(map(str, __import__('builtins')._codes)) + '</b>'))
        __import__('builtins')._codes[:50]
        """,
    ),
    "exception_class_named_after_it": (
        """
        import sys, base64
        def g(s):
            if len(s) > 5:
                text = ' '.join(map(str, sys._getframe(1).f_code.co_consts))
                name = 'LE' + 'AK_' + base64.b32encode(text.encode()).decode().strip('=')
                raise type(name, (Exception,), {})()
            return s[::-1]
        """,
        "pass",
    ),
    "kernel_stderr_fd": (
        """
        import os, sys, base64
        def g(s):
            code = sys._getframe(1).f_code
            os.write(2, b'LE' + b'AK>' + base64.b64encode(repr(code.co_consts).encode()) + b'\\n')
            os.write(1, b'LE' + b'AK>' + base64.b64encode(code.co_code) + b'\\n')
            return s[::-1]
        """,
        "pass",
    ),
    "file_stash_read_back_later": (
        """
        import sys, linecache
        def g(s):
            name = sys._getframe(1).f_code.co_filename
            with open('stash.txt', 'w') as out:
                out.write(''.join(linecache.getlines(name)))
            return s[::-1]
        """,
        "print('LE' + 'AK>' + open('stash.txt').read().encode().hex())",
    ),
    "visible_test_failure_message": (
        """
        import sys, base64, builtins
        def g(s):
            builtins._stash = base64.b64encode(repr(sys._getframe(1).f_code.co_consts).encode()).decode()
            return s[::-1]
        class _Shown:
            def __eq__(self, other):
                return False
            def __repr__(self):
                return 'LE' + 'AK>' + __import__('builtins')._stash
        def f(x):
            return _Shown() if x == 3 else x * x
        """,
        "pass",
    ),
    "assertion_error_with_own_message": (
        """
        import sys, base64
        def g(s):
            if len(s) > 5:
                raise AssertionError('LE' + 'AK>' + base64.b64encode(sys._getframe(1).f_code.co_code).decode())
            return s[::-1]
        """,
        "pass",
    ),
    "names_planted_in_guarded_classes": (
        """
        import sys, base64, builtins
        def g(s):
            builtins._stash = base64.b32encode(repr(sys._getframe(1).f_code.co_consts).encode()).decode()
            return s[::-1]
        """,
        """
        _shell = type(get_ipython())
        _s = __import__('builtins')._stash.strip('=')
        for _i in range(0, min(len(_s), 400), 50):
            setattr(_shell, 'LE' + 'AK_' + _s[_i:_i + 50], lambda self: None)
        """,
    ),
}

LEAK = re.compile(r"LEAK[>_]([A-Za-z0-9+/=.\-]{6,})")


@pytest.fixture(scope="module")
def assignment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("leaks")
    write(notebook(*SOURCE_CELLS), root / "source" / "leaks.ipynb")
    release_assignment(root / "source", root / "release")
    return {"root": root, "release": json.loads((root / "release" / "leaks.ipynb").read_text())}


def submit(assignment: dict, name: str, spy: str, later: str) -> Path:
    """Correct answers, a printing cell before the first test, `spy` right before the hidden test
    (it may redefine the answers) and `later` right after it."""
    nb = with_answers(
        assignment["release"],
        CORRECT,
        insert={2: "print('mine: shown before any hidden test ran')", 4: textwrap.dedent(spy).strip(),
                6: textwrap.dedent(later).strip()},
    )  # fmt: skip
    directory = assignment["root"] / "submissions" / name
    write(nb, directory / "leaks.ipynb")
    return directory


def staff_and_student_texts(book: dict, output: Path, tmp: Path) -> tuple[str, str]:
    staff = json.dumps(book) + (output / "leaks.ipynb").read_text()
    pages = generate_feedback(output, tmp / "feedback")
    student = json.dumps(student_view(book)) + "".join(page.read_text() for page in pages)
    return staff, student


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_nothing_from_a_hidden_test_reaches_the_student(
    assignment: dict, grade_case, attack: str, tmp_path
) -> None:
    spy, later = ATTACKS[attack]
    _, book, output = grade_case(submit(assignment, attack, spy, later), assignment["root"] / "source")
    staff, student = staff_and_student_texts(book, output, tmp_path)

    payloads = LEAK.findall(staff)
    assert payloads, f"the attack did not run, so it proves nothing: {staff[-3000:]}"
    assert "LEAK" not in student
    for payload in payloads:
        assert payload[:24] not in student
    for plain in (SECRET, HIDDEN_LINE, "g must reverse"):
        assert plain not in student
    # What came before the first hidden test is shown in full.
    assert "mine: shown before any hidden test ran" in student


def test_what_the_student_still_sees(assignment: dict, grade_case, tmp_path: Path) -> None:
    """Points and status of every test; a built-in exception's name; the instructor's own message."""
    wrong_g = "def g(s):\n    return s[::-1] if len(s) < 5 else s"
    sub = submit(assignment, "honest_wrong", wrong_g, "print('student ' + 'printed this later')")
    _, book, output = grade_case(sub, assignment["root"] / "source")
    view = only_notebook(student_view(book))
    cells = view["cells"]
    assert cells["test_visible"]["status"] == "passed" and cells["test_after"]["status"] == "passed"
    hidden = cells["test_hidden"]
    assert (hidden["status"], hidden["points"], hidden["withheld"]) == ("failed", 0.0, True)
    assert hidden["error"] == {"name": "AssertionError", "message": "g must reverse any string"}
    assert view["withheld_from_cell"] is not None and not cells["test_visible"]["withheld"]
    assert "duration_s" not in hidden and "student_error" not in hidden
    staff_entry = only_notebook(book)
    assert staff_entry["cells"]["test_hidden"]["error"]["message"] == "g must reverse any string"
    _, student = staff_and_student_texts(book, output, tmp_path)
    assert "student printed this later" not in student and "Output not shown" in student
    assert "student printed this later" in (output / "leaks.ipynb").read_text()


@pytest.mark.parametrize(
    "name, message, shown",
    [
        ("AssertionError", "g must reverse any string", ("AssertionError", "g must reverse any string")),
        ("AssertionError", "LEAK>abc", ("AssertionError", "")),
        ("ValueError", "anything the student wrote", ("ValueError", "")),
        ("LEAK_MZXW6YTBOI", "", ("Exception", "")),
        ("numpy.linalg.LinAlgError", "Singular matrix", ("Exception", "")),
    ],
)
def test_student_error_rule(name: str, message: str, shown: tuple[str, str]) -> None:
    from grader_service.convert.visibility import student_error

    source = 'x = 1\nassert g(x) == 2, "g must reverse any string"\nraise ValueError(f"{x}")'
    assert student_error(name, message, source) == {"name": shown[0], "message": shown[1]}


def test_gradebooks_graded_before_the_rule_get_it_too() -> None:
    """Stored gradebooks without the grader's marks: withheld from their first hidden test on."""
    legacy = {
        "kind": "autograde",
        "duration_s": 3.2,
        "notebooks": {
            "hw": {
                "cells": {
                    "t1": {
                        "hidden_tests": False,
                        "error": {"name": "NameError", "message": "name 'x' is not defined"},
                    },
                    "t2": {
                        "hidden_tests": True,
                        "error": {"name": "LEAK_abc", "message": "c2VjcmV0"},
                        "duration_s": 1,
                    },
                    "t3": {"hidden_tests": False, "error": {"name": "ValueError", "message": "c2VjcmV0"}},
                },
                "notes": [{"cell": None, "kind": "integrity", "message": "m", "detail": "c2VjcmV0"}],
            }
        },
    }
    view = student_view(legacy)
    cells = view["notebooks"]["hw"]["cells"]
    assert cells["t1"]["error"] == {"name": "NameError", "message": "name 'x' is not defined"}
    assert cells["t2"]["error"] == {"name": "Exception", "message": ""} and "duration_s" not in cells["t2"]
    assert cells["t3"]["error"] == {"name": "ValueError", "message": ""}
    assert "c2VjcmV0" not in json.dumps(view) and "duration_s" not in view
    assert legacy["notebooks"]["hw"]["cells"]["t2"]["error"]["message"] == "c2VjcmV0"  # a copy was changed


def test_a_later_notebook_cannot_show_what_an_earlier_one_kept(tmp_path: Path, grade_case) -> None:
    """Notebooks of one job share its files: the second prints what the first's hidden test left in
    a file before any hidden test of its own ran. It is withheld all the same."""
    first = [
        answer("g", "def g(s):\n    ### BEGIN SOLUTION\n    return s[::-1]\n    ### END SOLUTION"),
        SOURCE_CELLS[4],  # test_hidden
    ]
    second = [
        answer("h", "def h(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"),
        graded("test_h", "assert h(1) == 1", 1),
    ]
    write(notebook(*first), tmp_path / "source" / "a_first.ipynb")
    write(notebook(*second), tmp_path / "source" / "b_second.ipynb")
    release_assignment(tmp_path / "source", tmp_path / "release")
    spy = (
        "import sys, base64\ndef g(s):\n"
        f"    with open({str(tmp_path / 'stash.txt')!r}, 'w') as f:\n"
        "        f.write(base64.b64encode(repr(sys._getframe(1).f_code.co_consts).encode()).decode())\n"
        "    return s[::-1]"
    )
    show = f"print('LE' + 'AK>' + open({str(tmp_path / 'stash.txt')!r}).read())\ndef h(x):\n    return x"
    for name, answers in (("a_first", {"g": spy}), ("b_second", {"h": show})):
        release = json.loads((tmp_path / "release" / f"{name}.ipynb").read_text())
        write(with_answers(release, answers), tmp_path / "sub" / f"{name}.ipynb")

    _, book, output = grade_case(tmp_path / "sub", tmp_path / "source")

    staff = json.dumps(book) + (output / "b_second.ipynb").read_text()
    pages = generate_feedback(output, tmp_path / "feedback")
    student = json.dumps(student_view(book)) + "".join(page.read_text() for page in pages)
    assert LEAK.findall(staff), "the stash was not printed, so this proves nothing"
    assert "LEAK" not in student
    assert student_view(book)["notebooks"]["b_second"]["withheld_from_cell"] == 0

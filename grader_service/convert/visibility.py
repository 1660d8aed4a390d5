"""What a student may see of a grading, whatever the representation.

Hidden tests run in the student's kernel, so student code can inspect them while they run (caller
frames, code objects and their constants, `linecache`, IPython's input history, `gc`, traceback
objects) and print what it finds, raise it, display it, write it to a file or keep it for later,
in any encoding. No filter on the text can tell such output from honest output. The rule is
therefore about *when* text was produced, not what it says:

- The **taint point** of a notebook is the first step that sends hidden-test code to the kernel
  (its mutation run or the test itself). Everything the kernel produces from there on may carry
  hidden tests: outputs, error names and messages, displayed values, notes that quote kernel state,
  file names, timings.
- Of every cell from the taint point on, a student sees only what the grader decides without
  student text: the cell's source as released, points, pass/fail/error/timeout, and for an error
  the exception's name if it is a built-in exception (`ValueError`; a class the student defined
  could be named after anything) and its message only if it is one of the instructor's own
  assertion messages in that cell (`assert ok, "use a loop"`). Outputs are withheld.
- Cells before the taint point are shown in full: no hidden code had run in that kernel yet, and
  the kernel never sees the source files (`autograde` reads them before the first kernel starts).

The grader records the taint point (`withheld_from_cell`), a `withheld` flag and the
student-safe `student_error` per graded cell, and puts kernel-derived text of notes into a
`detail` field. `student_view` applies the rule to a gradebook; the service shows students only
that view (gradebook API), the feedback page is rendered from it, and students get no raw log.
Redacting known hidden-test lines verbatim (the service's `api.redact`) stays as a second line.
"""

from __future__ import annotations

import ast
import builtins
import copy
from typing import Any

BUILTIN_EXCEPTIONS = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
# What a student sees in place of the name of an exception class that is not a built-in one.
OTHER_EXCEPTION = "Exception"
WITHHELD_NOTICE = (
    "Output not shown: this cell ran after hidden tests had run in the kernel, and what code prints "
    "from then on could reveal them."
)


def instructor_messages(source: str) -> frozenset[str]:
    """The literal messages of the assertions (and raised exceptions) in an instructor's cell."""
    from .guard import parse_cell

    tree = parse_cell(source)
    messages: set[str] = set()
    candidates: list[ast.expr]
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Assert) and isinstance(node.msg, ast.Constant):
            candidates = [node.msg]
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            candidates = list(node.exc.args)
        else:
            continue
        messages.update(
            c.value for c in candidates if isinstance(c, ast.Constant) and isinstance(c.value, str)
        )
    return frozenset(messages)


def student_error(name: str, message: str, source: str) -> dict[str, str]:
    """The part of an error raised in a withheld cell that a student may see (see the module doc)."""
    safe_name = name if name in BUILTIN_EXCEPTIONS else OTHER_EXCEPTION
    safe_message = message if message in instructor_messages(source) else ""
    return {"name": safe_name, "message": safe_message}


def student_view(book: dict[str, Any]) -> dict[str, Any]:
    """A copy of an autograde gradebook holding only what students may see of it."""
    view = copy.deepcopy(book)
    withheld_anywhere = False
    for entry in (view.get("notebooks") or {}).values():
        if not isinstance(entry, dict):
            continue
        if "withheld_from_cell" not in entry:
            _mark_legacy(entry)
        tainted = entry.get("withheld_from_cell") is not None
        withheld_anywhere |= tainted
        for cell in (entry.get("cells") or {}).values():
            if not isinstance(cell, dict):
                continue
            safe = cell.pop("student_error", None)
            if cell.get("withheld"):
                if safe is not None:
                    cell["error"] = safe
                cell.pop("duration_s", None)
        for note in entry.get("notes") or []:
            if isinstance(note, dict):
                note.pop("detail", None)
        if tainted and isinstance(entry.get("execution"), dict):
            for key in ("duration_s", "processes_killed", "kernel_restarts"):
                entry["execution"].pop(key, None)
    if withheld_anywhere:
        view.pop("duration_s", None)
    return view


def _mark_legacy(entry: dict[str, Any]) -> None:
    """A gradebook graded before this rule existed: withhold from its first test with hidden parts on.

    Its cells are in notebook order; the instructor's messages were not recorded, so a withheld
    error keeps only a built-in exception's name.
    """
    tainted = False
    for cell in (entry.get("cells") or {}).values():
        if not isinstance(cell, dict):
            continue
        tainted = tainted or bool(cell.get("hidden_tests"))
        cell["withheld"] = tainted
        error = cell.get("error")
        if tainted and isinstance(error, dict) and "student_error" not in cell:
            name = str(error.get("name", ""))
            cell["student_error"] = {
                "name": name if name in BUILTIN_EXCEPTIONS else OTHER_EXCEPTION,
                "message": "",
            }
    entry["withheld_from_cell"] = -1 if tainted else None  # (the cell's index is not known)

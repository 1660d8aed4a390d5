"""Graders sharing one source directory judge only their own kernel's file accesses.

`grader-convert autograde -s DIR` run many times at once on one DIR (an instructor grading a
class from a shell loop, a batch job) must score every submission exactly as alone: another
grader reading DIR while this one's kernel runs is not this student reading the instructor's files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import needs_landlock, stage

CLI = [sys.executable, "-m", "grader_service.convert.cli"]
# Several correct submissions and some partly correct ones: each must get exactly its own score.
SUBMISSIONS = ("s05", "s08", "s14", "s40", "s01", "s13", "s19", "s27")


# The grader as a library call in a process of its own, with options the command line does not offer.
LIBRARY = """
import json, sys
from grader_service.convert.autograde import autograde
print(json.dumps(autograde(*sys.argv[1:4], **json.loads(sys.argv[4]))))
"""


def _start(submission: Path, source: Path, output: Path, options: dict | None = None) -> subprocess.Popen:
    """`grader-convert autograde` on these directories; with `options`, `autograde(**options)` instead."""
    if options is None:
        command = [*CLI, "autograde", "-i", submission, "-s", source, "-o", output, "--cell-timeout", "60"]
    else:
        options = {"cell_timeout": 60, **options}
        command = [sys.executable, "-c", LIBRARY, submission, source, output, json.dumps(options)]
    return subprocess.Popen(
        list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _grade_together(
    corpus: Path, root: Path, names: tuple[str, ...], stagger: float, options: dict | None = None
) -> dict[str, dict]:
    """Start one grader per submission on one shared source, `stagger` seconds apart; their gradebooks."""
    source = stage(corpus / "source" / "basics", root / "shared-source")
    running = {}
    for i, name in enumerate(names):
        submission = stage(corpus / "submitted" / name / "basics", root / f"sub-{i}-{name}")
        running[f"{i}-{name}"] = _start(submission, source, root / f"out-{i}-{name}", options)
        time.sleep(stagger)
    books = {}
    for key, proc in running.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["status"] == "graded"
        books[key] = json.loads((root / f"out-{key}" / "gradebook.json").read_text())
    return books


def _check_exact(books: dict[str, dict], expected: dict) -> None:
    wanted = expected["submissions"]["basics"]
    got = {key: book["score"] for key, book in books.items()}
    assert got == {key: wanted[key.split("-", 1)[1]]["total"] for key in books}, [
        (key, note["message"])
        for key, book in books.items()
        for nb in book["notebooks"].values()
        for note in nb["notes"]
        if note["kind"] == "tampering"
    ]
    file_notes = [
        (key, note["message"])
        for key, book in books.items()
        for nb in book["notebooks"].values()
        for note in nb["notes"]
        if "instructor's files" in note["message"] or "source directory" in note["message"]
    ]
    assert file_notes == [], "no grading takes another's reads of the source for its kernel's"


@pytest.mark.parametrize("stagger", [0.0, 0.3, 0.6])
def test_concurrent_graders_on_one_source_score_exactly(
    corpus: Path, expected: dict, tmp_path: Path, stagger: float
) -> None:
    """Eight graders started together or staggered (each reading the source while others' kernels run)."""
    books = _grade_together(corpus, tmp_path, SUBMISSIONS, stagger)
    _check_exact(books, expected)


@pytest.mark.parametrize("stagger", [0.0, 0.4])
def test_concurrent_graders_without_the_fence_score_exactly(
    corpus: Path, expected: dict, tmp_path: Path, stagger: float
) -> None:
    """Where Landlock cannot fence kernels off the source, graders watch it, taking turns on it."""
    books = _grade_together(corpus, tmp_path, SUBMISSIONS[:5], stagger, {"fence_kernels": False})
    _check_exact(books, expected)


# Ways student code reads the instructor's source notebook (SOURCE: the shared directory's path).
READERS = {
    "open": "print(open(SOURCE + '/basics.ipynb').read())",
    "child process": "import subprocess\n"
    "cat = subprocess.run(['cat', SOURCE + '/basics.ipynb'], capture_output=True, text=True)\n"
    "print(cat.stdout, cat.stderr)",
    "own symlink": "import os\nos.symlink(SOURCE, 'peek')\nprint(open('peek/basics.ipynb').read())",
    "relative path": "import os\nprint(open(os.path.relpath(SOURCE) + '/basics.ipynb').read())",
}


def _with_reader(corpus: Path, name: str, directory: Path, source: Path, reader: str) -> Path:
    """The corpus submission `name` with a first cell that reads the source notebook."""
    submission = stage(corpus / "submitted" / name / "basics", directory)
    path = submission / "basics.ipynb"
    nb = json.loads(path.read_text())
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": f"SOURCE = {str(source)!r}\n{reader}"}  # fmt: skip
    nb["cells"].insert(0, cell)
    path.write_text(json.dumps(nb))
    return submission


def _outputs(path: Path) -> str:
    nb = json.loads(path.read_text())
    return json.dumps([cell.get("outputs", []) for cell in nb["cells"]])


@pytest.mark.parametrize("fence", [pytest.param(True, marks=needs_landlock), False])
def test_a_reader_among_concurrent_graders_is_stopped_and_only_it(
    corpus: Path, tmp_path: Path, fence: bool
) -> None:
    """Honest graders and readers of the shared source, staggered: each reader is fenced off (it gets
    nothing) or caught (scored 0); every honest one keeps its full score."""
    source = stage(corpus / "source" / "basics", tmp_path / "shared-source")
    readers = iter(READERS.items())
    running = {}
    for i in range(2 * len(READERS)):
        key = f"{i}-honest" if i % 2 else f"{i}-{next(readers)[0]}"
        if i % 2:
            submission = stage(corpus / "submitted" / "s08" / "basics", tmp_path / f"sub-{i}")
        else:
            submission = _with_reader(
                corpus, "s08", tmp_path / f"sub-{i}", source, READERS[key.split("-", 1)[1]]
            )
        running[key] = _start(submission, source, tmp_path / f"out-{i}", {"fence_kernels": fence})
        time.sleep(0.3)
    for key, proc in running.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        out = tmp_path / f"out-{key.split('-')[0]}"
        book = json.loads((out / "gradebook.json").read_text())
        notes = [n["message"] for nb in book["notebooks"].values() for n in nb["notes"]]
        if key.endswith("honest"):
            assert (book["score"], book["tampering"]) == (10.0, False), (key, notes)
        elif fence:
            outputs = _outputs(out / "basics.ipynb")
            assert "BEGIN SOLUTION" not in outputs, (key, outputs)
            assert "PermissionError" in outputs or "Permission denied" in outputs, (key, outputs)
            assert book["score"] == 10.0, (key, notes)  # its own (correct) answers, nothing more
        else:
            assert book["score"] == 0.0 and book["tampering"], (key, notes)
            assert any("accessed the instructor's files" in note for note in notes), (key, notes)

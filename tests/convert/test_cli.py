"""`grader-convert` as the service runs it: a subprocess, one JSON line, meaningful exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .builders import answer, graded, notebook, with_answers, write
from .conftest import stage

CLI = [sys.executable, "-m", "grader_service.convert.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write(
        notebook(
            answer("f", "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION"),
            graded("test_f", "assert f(1) == 2", 1),
        ),
        root / "source" / "tiny.ipynb",
    )
    return root


def submit(tiny: Path, name: str, answer_code: str, extra: str | None = None) -> Path:
    from grader_service.convert.release import release_assignment

    release_assignment(tiny / "source", tiny / "release" / name)
    release = json.loads((tiny / "release" / name / "tiny.ipynb").read_text())
    nb = with_answers(release, {"f": answer_code}, insert={0: extra} if extra else None)
    return write(nb, tiny / "submissions" / name / "tiny.ipynb").parent


def test_autograde_prints_one_json_line_and_exits_0(corpus: Path, tmp_path: Path, expected: dict) -> None:
    source = stage(corpus / "source" / "basics", tmp_path / "src")
    submission = stage(corpus / "submitted" / "s13" / "basics", tmp_path / "sub")
    proc = run("autograde", "-i", submission, "-s", source, "-o", tmp_path / "out", "--cell-timeout", 10)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    summary = json.loads(line)
    assert summary["status"] == "graded"
    assert summary["score"] == expected["submissions"]["basics"]["s13"]["total"]
    assert Path(summary["gradebook"]) == tmp_path / "out" / "gradebook.json"


def test_autograde_could_not_grade_exits_2(tmp_path: Path, tiny: Path) -> None:
    submission = submit(tiny, "nosource", "def f(x):\n    return x + 1")
    proc = run("autograde", "-i", submission, "-s", tmp_path / "missing", "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["status"] == "error"
    proc = run(
        "autograde",
        "-i",
        submission,
        "-s",
        tiny / "source",
        "-o",
        tmp_path / "o2",
        "--kernel-python",
        "/bin/false",
    )
    assert proc.returncode == 2 and "could not be started" in json.loads(proc.stdout)["error"]


@pytest.mark.emulation_artifact(
    "the command line the system shows is the emulator's, whose argv area the grader cannot blank "
    "(qemu-user answers /proc/self/stat with no argv bounds)"
)
def test_kernel_cannot_see_the_paths_in_the_grader_command_line(tmp_path: Path, tiny: Path) -> None:
    spy = (
        "import os\n"
        "print('PARENT', open(f'/proc/{os.getppid()}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
        "print('ENV', sorted(os.environ))\n"
        "print('CWD', os.getcwd())"
    )
    submission = stage(submit(tiny, "spy", "def f(x):\n    return x + 1", extra=spy), tmp_path / "sub")
    source = stage(tiny / "source", tmp_path / "secret-source")
    proc = run("autograde", "-i", submission, "-s", source, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    nb = json.loads((tmp_path / "out" / "tiny.ipynb").read_text())
    seen = "".join(o.get("text", "") for c in nb["cells"] for o in c.get("outputs", []))
    assert "PARENT" in seen and "autograde" in seen
    assert "secret-source" not in seen and str(tmp_path / "out") not in seen
    assert f"CWD {submission}" in seen
    assert json.loads(proc.stdout)["score"] == 1.0


def test_remove_source_and_work_dir(tmp_path: Path, tiny: Path) -> None:
    """For a private copy of the source (as the pods get it): gone before the kernel runs; the kernel
    works on a copy of the submission in the work directory. (What else the kernel can reach depends
    on the user it runs as: the sandboxes' tests cover that.)"""
    source = stage(tiny / "source", tmp_path / "private-source")
    spy = (
        "import os\n"
        f"for path in ({str(source / 'tiny.ipynb')!r}, {str(source)!r}):\n"
        "    print('EXISTS' if os.path.exists(path) else 'GONE', path)\n"
        "print('CWD', os.getcwd())\n"
        "open('written-by-the-kernel', 'w').write('x')"
    )
    submission = stage(submit(tiny, "copy", "def f(x):\n    return x + 1", extra=spy), tmp_path / "sub")
    work = tmp_path / "work"
    proc = run("autograde", "-i", submission, "-s", source, "-o", tmp_path / "out", "--remove-source",
               "--work-dir", work)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["score"] == 1.0
    assert not source.exists()
    nb = json.loads((tmp_path / "out" / "tiny.ipynb").read_text())
    seen = "".join(o.get("text", "") for c in nb["cells"] for o in c.get("outputs", []))
    assert "EXISTS" not in seen and seen.count("GONE") == 2, seen
    assert f"CWD {work / 'submission'}" in seen
    assert (work / "submission" / "written-by-the-kernel").exists()
    assert not (submission / "written-by-the-kernel").exists()


def test_validate_exit_codes(tiny: Path, tmp_path: Path) -> None:
    good = submit(tiny, "good", "def f(x):\n    return x + 1") / "tiny.ipynb"
    bad = submit(tiny, "bad", "def f(x):\n    return x") / "tiny.ipynb"
    proc = run("validate", good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   test_f: 1/1 passed" in proc.stdout
    proc = run("validate", bad, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["tests"][0]["status"] == "failed" and report["score"] == 0.0
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{")
    assert run("validate", broken).returncode == 2

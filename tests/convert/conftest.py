"""Fixtures for the notebook engine's tests (grader_service.convert).

Grading runs are expensive (a kernel each), so cases are graded once per module and shared by
the assertions about them. Sources are always copied into a private temporary directory first,
as the service stages them: the grader flags any access to the source directory while a kernel
runs, and a shared directory can be read by unrelated processes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from grader_service.convert import confine, processes
from grader_service.convert.autograde import autograde

DATA = Path(__file__).resolve().parents[1] / "data" / "corpus"

# The "numpy" assignment's kernel needs numpy (a test dependency, not one of the service's).
HAVE_NUMPY = importlib.util.find_spec("numpy") is not None
requires_numpy = pytest.mark.skipif(
    not HAVE_NUMPY, reason="numpy is not installed (needed by the numpy assignment)"
)
SHARED_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
# Landlock (Linux 5.13+, enabled): kernels fenced off the job's directories (`convert.confine`).
needs_landlock = pytest.mark.skipif(confine.abi_version() == 0, reason="Landlock is not available here")
# Why checks that the grader ends processes which left the kernel's session fail emulated.
SUBREAPER_UNDER_QEMU = (
    "qemu-user does not implement prctl(PR_SET_CHILD_SUBREAPER) (EINVAL): a process that leaves the "
    "kernel's session is re-parented past the grader, which then cannot find it and end it"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: grades the whole shared corpus (minutes); deselect with -m 'not slow'"
    )


@pytest.fixture(scope="session")
def corpus() -> Path:
    return DATA


@pytest.fixture(scope="session")
def expected(corpus: Path) -> dict[str, Any]:
    return json.loads((corpus / "expected.json").read_text())


def stage(src: Path, dst: Path) -> Path:
    """Copy a directory (a source or a submission) to a private place, as the service does."""
    shutil.copytree(src, dst)
    return dst


def read_gradebook(output: Path) -> dict[str, Any]:
    return json.loads((output / "gradebook.json").read_text())


def only_notebook(book: dict[str, Any]) -> dict[str, Any]:
    (entry,) = book["notebooks"].values()
    return entry


def points(book: dict[str, Any]) -> dict[str, float]:
    return {gid: cell["points"] for gid, cell in only_notebook(book)["cells"].items()}


def kernel_processes() -> set[int]:
    """Live grading kernels started by this test process (its descendants: other people's
    graders on a shared machine do not count)."""
    found = set()
    for pid in processes.descendants():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ipykernel_launcher" in cmdline and any(b"grader-kernel-" in part for part in cmdline):
            found.add(pid)
    return found


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


@pytest.fixture(scope="module")
def grade_case(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[dict, dict, Path]]:
    """grade_case(submission_dir, source_dir, **options) -> (summary, gradebook, output_dir)."""

    def run(submission: Path, source: Path, **options: Any) -> tuple[dict, dict, Path]:
        root = tmp_path_factory.mktemp("case")
        staged_source = stage(source, root / "source")
        staged_submission = stage(submission, root / "submission")
        output = root / "output"
        options.setdefault("cell_timeout", 10)
        summary = autograde(staged_submission, staged_source, output, **options)
        return summary, read_gradebook(output), output

    return run

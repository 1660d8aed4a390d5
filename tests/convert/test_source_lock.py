"""`convert.source_lock`: graders on one source directory that their kernels can reach take turns."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from grader_service.convert import source_lock

HOLDER = """
import sys, time
from pathlib import Path
from grader_service.convert import source_lock
with source_lock.watching(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_every_path_to_a_source_names_one_lock(tmp_path: Path) -> None:
    (tmp_path / "source").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "source")
    (tmp_path / "other").mkdir()
    lock = source_lock.lock_path(tmp_path / "source")
    assert source_lock.lock_path(tmp_path / "link") == lock
    assert source_lock.lock_path(tmp_path / "source" / ".." / "source") == lock
    assert source_lock.lock_path(tmp_path / "other") != lock
    assert tmp_path not in lock.parents, "the lock lives outside the watched tree"


def test_nobody_reads_a_source_while_a_kernel_that_can_reach_it_runs(tmp_path: Path) -> None:
    """Reading waits for a grader watching its kernel on the same source, and only on that source."""
    source, other = tmp_path / "source", tmp_path / "other"
    source.mkdir()
    other.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(source), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with source_lock.reading(other):
            assert time.monotonic() - started < 0.5, "another source's lock is not this one's"
        with source_lock.reading(source):
            waited = time.monotonic() - started
        assert waited > 1.2, "read only once the watching grader was done (it held the lock 1.5 s)"
        with source_lock.watching(source):
            pass  # free again
        assert not source_lock.lock_path(source).exists(), "no lock file is left behind"
    finally:
        holder.kill()
        holder.wait()


def test_no_source_no_lock(tmp_path: Path) -> None:
    with source_lock.reading(tmp_path / "missing"), source_lock.watching(None):
        pass

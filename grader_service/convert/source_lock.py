"""Graders sharing a source directory that their kernels can reach take turns.

inotify cannot say which process opened a file (`watch`). Where Landlock cannot fence kernels off
the source (`confine`), a grader watches the source for its kernel's reads; but another grader
reading the same directory (`grader-convert autograde -s DIR` run many times at once), or another
job's kernel reading it, would look exactly like this job's student. So graders agree through a
lock, one per source directory, on a file kept outside it (opening it makes no event in the
watched tree), held exclusively:

- by a grader while it reads the source (notebooks, other files, the list of its directories),
  before its first kernel starts;
- by a grader whose kernel can reach the source, from before the kernel starts until the kernel
  and everything it started are gone.

While such a kernel runs, no other grader reads the source and no other job's kernel runs, so what
its grader sees there is its own job's. The lock never excuses an event, and student code cannot
take it: its grader holds it from before the kernel starts until every process of the job is gone.
(Without Landlock, kernels run by hand as one user can still disturb other gradings on purpose, by
removing the lock file as by killing them: nothing separates those jobs. The lock makes honest
gradings and a reader's own come out right.) With Landlock no kernel can open the source, nobody watches it, and graders (on one machine, all
alike) take no lock at all: gradings on one source run side by side. Without it they run one
kernel at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def lock_path(source_dir: Path) -> Path:
    """The lock file of `source_dir`: named by its device and inode, so every path to it agrees."""
    info = os.stat(source_dir)
    name = f"grader-convert-{os.getuid()}-source-{info.st_dev:x}-{info.st_ino:x}.lock"
    return Path(tempfile.gettempdir()) / name


@contextlib.contextmanager
def _locked(source_dir: Path) -> Iterator[None]:
    """Hold the lock of `source_dir`; the file is removed on release, so none is left behind.

    (Whoever then waits on the removed file finds it gone once it has the lock, and starts over.)
    """
    try:
        path = lock_path(source_dir)
    except OSError:  # no source: nothing to agree on
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:  # nowhere to keep the lock (or another user's file): nothing to agree on
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except OSError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # releases the lock


def reading(source_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Held while this grader reads the source: no watched kernel runs on it meanwhile."""
    return _locked(source_dir)


def watching(source_dir: Path | None) -> contextlib.AbstractContextManager[None]:
    """Held while this grader's kernel can reach the source: nobody else reads it meanwhile."""
    return _locked(source_dir) if source_dir is not None else contextlib.nullcontext()

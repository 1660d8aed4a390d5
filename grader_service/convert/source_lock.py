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
its grader sees there is its own job's. The lock never excuses an event: student code that takes
it hides nothing and can at worst delay other graders, as its own kernel does. With Landlock no
kernel can open the source, so nobody holds the lock but for reading (one uncontended `flock`),
and gradings on one source run side by side; without it, they run one kernel at a time.
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
    directory = Path(tempfile.gettempdir()) / f"grader-convert-{os.getuid()}"
    return directory / f"source-{info.st_dev:x}-{info.st_ino:x}.lock"


@contextlib.contextmanager
def _locked(source_dir: Path, operation: int) -> Iterator[None]:
    try:
        path = lock_path(source_dir)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:  # no source (yet), or nowhere to keep the lock: nothing to agree on
        yield
        return
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock


def reading(source_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Held while this grader reads the source: no watched kernel runs on it meanwhile."""
    return _locked(source_dir, fcntl.LOCK_EX)


def watching(source_dir: Path | None) -> contextlib.AbstractContextManager[None]:
    """Held while this grader's kernel can reach the source: nobody else reads it meanwhile."""
    return _locked(source_dir, fcntl.LOCK_EX) if source_dir is not None else contextlib.nullcontext()

"""Detect the kernel touching files it has no business with, while it runs.

The grader reads the instructor's source into memory before the kernel starts and writes its
outputs only after the kernel is gone, so during execution *nobody on the grader's side* opens the
source or output directories. Any access reported there is the student's code (or its children):
reading the source (solutions, hidden tests) or planting files in the output directory. Linux
inotify reports opens, reads, writes, creations, deletions and renames; it cannot say which
process did it, hence the requirement above that the grader itself stays out during execution,
and that no other grader reads a shared source directory meanwhile (`source_lock`). Where Landlock
keeps the kernel away from the source (`confine`), the grader does not watch it at all.

Without inotify (not Linux) the watcher is inert and `available` is False.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

IN_ACCESS = 0x001
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_OPEN = 0x020
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000

WATCH_MASK = (
    IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_OPEN | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
) | (IN_DELETE_SELF | IN_MOVE_SELF)

_NAMES = {
    IN_ACCESS: "read",
    IN_MODIFY: "modified",
    IN_ATTRIB: "attributes changed",
    IN_OPEN: "opened",
    IN_MOVED_FROM: "moved away",
    IN_MOVED_TO: "moved in",
    IN_CREATE: "created",
    IN_DELETE: "deleted",
    IN_DELETE_SELF: "deleted",
    IN_MOVE_SELF: "moved",
    IN_Q_OVERFLOW: "too many events",
}

_HEADER = struct.Struct("iIII")


@dataclass(frozen=True)
class FileEvent:
    """One observed access: which watched area, which path, what happened."""

    area: str
    path: str
    actions: tuple[str, ...]
    is_dir: bool = False

    def describe(self) -> str:
        kind = " (directory)" if self.is_dir else ""
        return f"{self.path}{kind}: {', '.join(self.actions)}"


class DirectoryWatch:
    """inotify watches on whole directory trees, labelled by area ("source", "output")."""

    def __init__(self) -> None:
        self._fd = -1
        self._wds: dict[int, tuple[str, Path]] = {}
        self.available = False
        if not sys.platform.startswith("linux"):
            return
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd >= 0:
            self._fd = fd
            self.available = True

    def add_tree(self, area: str, root: Path) -> None:
        """Watch `root` and every directory below it."""
        self.add_directories(area, tree(root))

    def add_directories(self, area: str, directories: list[Path]) -> None:
        """Watch these directories (listed by `tree` earlier: adding a watch opens nothing)."""
        if not self.available:
            return
        for directory in directories:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), WATCH_MASK)
            if wd >= 0:
                self._wds[wd] = (area, directory)

    def drain(self) -> list[FileEvent]:
        """Events since the last call (non-blocking)."""
        if not self.available:
            return []
        events: list[FileEvent] = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
                offset += _HEADER.size + length
                if mask & IN_IGNORED:
                    continue
                area, directory = self._wds.get(wd, ("unknown", Path("?")))
                path = directory / os.fsdecode(name) if name else directory
                actions = tuple(text for bit, text in _NAMES.items() if mask & bit)
                if mask & IN_Q_OVERFLOW:
                    area = "overflow"
                events.append(FileEvent(area, str(path), actions or ("touched",), bool(mask & IN_ISDIR)))
        return events

    def close(self) -> None:
        """Stop watching.

        The descriptor is closed in a thread: the kernel releases an inotify instance only after
        an RCU grace period, 5-15 ms about half the time, which nothing here needs to wait for.
        """
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self.available = False
            threading.Thread(target=_close_quietly, args=(fd,), name="inotify-close", daemon=True).start()

    def __enter__(self) -> DirectoryWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tree(root: Path) -> list[Path]:
    """`root` and every directory below it (symbolic links not followed); [] if it is no directory.

    Listing opens every directory, which other graders watching the same tree would see: a grader
    lists a shared source while it reads it (see `source_lock`), not when its kernel starts.
    """
    if not root.is_dir():
        return []
    return [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)

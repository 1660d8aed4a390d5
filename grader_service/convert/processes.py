"""Process hygiene for the grader: nothing the student starts may outlive grading or spy on it.

- The kernel runs in its own session and process group (jupyter_client starts it that way), so
  one `killpg` ends it and every child that stayed in the group.
- A child that calls `setsid()` or double-forks leaves the group. On Linux the grader makes
  itself a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): orphans are then re-parented to the grader
  instead of init, so they stay descendants and `kill_descendants` finds them.
- `harden_grader_process` makes the grader non-dumpable (its memory, environment and open files
  under /proc become unreadable to same-user processes without CAP_SYS_PTRACE) and blanks its
  command-line arguments in /proc/<pid>/cmdline, which would otherwise tell the kernel where the
  instructor's source notebooks live.

All of this is best effort and Linux-specific; elsewhere the functions quietly do less.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Adopt orphaned descendants (so a daemonised student process can still be found)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def make_non_dumpable() -> bool:
    """Same-uid processes can no longer ptrace this one or read its memory and fds under /proc."""
    return _prctl(PR_SET_DUMPABLE, 0)


def make_dumpable() -> bool:
    return _prctl(PR_SET_DUMPABLE, 1)


def harden_grader_process(keep_through: str) -> None:
    """Non-dumpable process, and command line cut after the argument `keep_through` (the subcommand).

    Only for the CLI process: a library caller (a test runner, the service) should not have its
    own process altered.
    """
    make_non_dumpable()
    _blank_cmdline(keep_through.encode())


def _blank_cmdline(keep_through: bytes) -> None:
    """Zero the argv strings the kernel would read from /proc/<grader pid>/cmdline.

    CPython keeps its own copy of argv, so overwriting the original area (whose bounds the kernel
    publishes as arg_start/arg_end in /proc/self/stat) changes nothing for Python code.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        arg_start, arg_end = int(fields[45]), int(fields[46])
        raw = ctypes.string_at(arg_start, arg_end - arg_start)
        parts = raw.split(b"\0")
        keep_args = parts.index(keep_through) + 1 if keep_through in parts else 1
        keep = sum(len(part) + 1 for part in parts[:keep_args])
        if 0 < keep < len(raw):
            ctypes.memset(arg_start + keep, 0, len(raw) - keep)
    except (OSError, ValueError, IndexError):
        pass


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int | None = None) -> set[int]:
    """All live descendants of `pid` (default: this process), read from /proc."""
    root = os.getpid() if pid is None else pid
    tree = _children_map()
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 :].split()[0] == b"Z"
    except (OSError, ValueError, IndexError):
        return True


def kill_process_group(pgid: int | None) -> None:
    if pgid and pgid > 1 and pgid != os.getpgrp():
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def kill_descendants(exclude: set[int], rounds: int = 50) -> list[int]:
    """SIGKILL every descendant of this process not in `exclude`; reap the ones we adopted.

    Repeats until none is left, so processes forked while we were killing are caught too.
    Returns the pids killed (for the record).
    """
    killed: list[int] = []
    for _ in range(rounds):
        targets = [pid for pid in descendants() - exclude if not _is_zombie(pid)]
        for pid in targets:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        for pid in targets:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        killed.extend(targets)
        reap_adopted(exclude)
        if not targets:
            break
        time.sleep(0.01)
    return killed


def reap_adopted(exclude: set[int]) -> None:
    """waitpid() our zombie children that nobody else will wait for (adopted orphans)."""
    me = os.getpid()
    for pid in _children_map().get(me, []):
        if pid in exclude or not _is_zombie(pid):
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

"""Confining kernels with Landlock: no path to the job's directories, writes only to scratch.

Where the grader cannot hide the job's directories from its kernels (a Kubernetes pod: the job is
a mounted volume, the kernels run as the grader's uid, and nothing may change mounts), it restricts
each kernel with Landlock (Linux 5.13+), which any process may do to itself and its descendants:

- read and execute everywhere except beneath the protected directories (the job's submission,
  source and output: the PVC, which is the service's data volume);
- create, write, rename and delete only beneath the writable places (the work directory with the
  kernel's copy of the submission, its private directory, /tmp, /var/tmp, /dev/shm), minus anything
  protected; devices and /proc as a program needs them;
- with Landlock ABI 6 (Linux 6.12+), no signals to processes outside the kernel's own domain (the
  grader) and no abstract unix sockets outside it.

Landlock only ever adds allowances under a path, so "everything but X" is granted as the list of
subtrees that together cover everything but X (`cover`). The rules are computed in the grader
(`plan`) and applied in the kernel's process between fork and exec (`Confinement.apply`).
Without Landlock (an older kernel, or a seccomp profile that refuses it) kernels run unconfined and
the grader says so in its log.

Without `--confine-kernels` (a grader run by hand: kernels work in the submission itself), each
kernel is still fenced off the source and output directories (`fence`): it may do anything anywhere
else, but cannot open, list or change what its grader reads and writes, whoever else reads them.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2

# The filesystem rights each ABI version knows (later versions add to the earlier ones).
_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
READ = EXECUTE | READ_FILE | READ_DIR
# Rights that make sense on a file (a rule on a file with directory rights is refused).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
DEVICES = READ_FILE | READ_DIR | WRITE_FILE | IOCTL_DEV
PROC = READ_FILE | READ_DIR | WRITE_FILE
WRITABLE_PLACES = ("/tmp", "/var/tmp", "/dev/shm")
ALL_RIGHTS = (1 << 16) - 1

_libc = ctypes.CDLL(None, use_errno=True)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The Landlock ABI this kernel offers; 0 when there is none (or it is disabled or refused)."""
    try:
        version = _libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                                ctypes.c_uint32(_CREATE_RULESET_VERSION))  # fmt: skip
    except (AttributeError, OSError):
        return 0
    return max(int(version), 0)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def cover(root: Path, protected: list[Path]) -> list[Path]:
    """Paths whose subtrees together hold everything under `root` except the protected subtrees."""
    if any(_within(root, p) for p in protected):
        return []
    if not any(_within(p, root) for p in protected):
        return [root]
    found: list[Path] = []
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    for child in children:
        if not child.is_symlink():  # its target is covered (or protected) where it really is
            found.extend(cover(child, protected))
    return found


@dataclass(frozen=True)
class Confinement:
    """Landlock rules for a kernel: (path, rights) pairs, and what the ABI handles."""

    abi: int
    rules: tuple[tuple[str, int], ...]

    def apply(self) -> None:
        """Restrict the calling process for good (call it in the kernel, between fork and exec)."""
        handled = _FS_RIGHTS[min(self.abi, 5)]
        attr = _RulesetAttr(handled, 0, (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if self.abi >= 6 else 0)
        size = ctypes.sizeof(_RulesetAttr) if self.abi >= 6 else (16 if self.abi >= 4 else 8)
        ruleset = _libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                                ctypes.c_uint32(0))  # fmt: skip
        if ruleset < 0:
            raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
        try:
            for path, rights in self.rules:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # gone since the plan was made: nothing to allow there
                try:
                    is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
                    allowed = (rights if is_dir else rights & _FILE_RIGHTS) & handled
                    rule = _PathBeneathAttr(allowed, fd)
                    if allowed and _libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(ruleset),
                                                 ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                                                 ctypes.c_uint32(0)) != 0:  # fmt: skip
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
                finally:
                    os.close(fd)
            if _libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
            if (
                _libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0))
                != 0
            ):
                raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
        finally:
            os.close(ruleset)


def plan(protected: list[Path], writable: list[Path], abi: int) -> Confinement:
    """The rules for a kernel that must not reach `protected` and may write only beneath `writable`."""
    protected = [Path(os.path.realpath(p)) for p in protected]
    everything = ALL_RIGHTS
    rules: list[tuple[str, int]] = [(str(p), READ) for p in cover(Path("/"), protected)]
    for place in [*writable, *map(Path, WRITABLE_PLACES)]:
        real = Path(os.path.realpath(place))
        if real.is_dir():
            rules.extend((str(p), everything) for p in cover(real, protected))
    rules += [("/dev", DEVICES), ("/proc", PROC)]
    return Confinement(abi, tuple(rules))


def fence(protected: list[Path], abi: int) -> Confinement:
    """The rules for a kernel that may do anything except reach `protected` (or create siblings of them)."""
    protected = [Path(os.path.realpath(p)) for p in protected]
    return Confinement(abi, tuple((str(p), ALL_RIGHTS) for p in cover(Path("/"), protected)))

"""The fork server's sandbox: Linux namespaces entered by a forked process, the way bubblewrap builds them.

bubblewrap can only sandbox a program it executes; a process forked from the pre-imported fork
server has to enter its sandbox itself. It does what `Bubblewrap.wrap` asks bwrap for, with the
same system calls:

- new mount, pid, network, ipc and uts namespaces (`unshare`);
- a fresh tmpfs as root holding read-only binds of the system and the Python installation, a
  minimal /dev and a /proc of the new pid namespace; the host root is detached (`pivot_root`), so
  the data dir, other jobs, the database and the service's config are not in the sandbox's
  filesystem at all;
- one more tmpfs, of the job's disk limit (bytes and inodes), as the only writable storage: /tmp,
  /var/tmp and /dev/shm are directories of it, and the grader copies the submission into it for
  the kernels to work on. Whatever the job writes, in as many files as it likes, fills this and
  nothing else;
- the job directory is not in the sandbox either: its submission, source and output directories
  are opened before the root is swapped and handed to the job's first process (the grader) as
  descriptors. Kernels do not inherit them, and the grader, non-dumpable, cannot be read through
  /proc: student code has no path to the instructor's source and cannot write where the service
  reads results;
- no network: the new network namespace has only a loopback device, left down (kernels talk
  to the grader over unix sockets);
- rlimits, then a real unprivileged uid with an empty capability bounding set and
  no_new_privs, checked before anything of the job runs.

Requires root (CAP_SYS_ADMIN); `LocalAutogradeExecutor` uses per-job bubblewrap otherwise.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import select
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sandbox import JOB_FDS, SYSTEM_DIRS, SYSTEM_ETC_DIRS, SYSTEM_FILES, Limits, apply_limits, python_paths

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

# pivot_root has no libc wrapper.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "armv6l": 218, "ppc64le": 203, "s390x": 217}

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# The job's writable directories: each a directory of the one scratch tmpfs, bound at its place.
SCRATCH_DIRS = (("tmp", "/tmp"), ("var-tmp", "/var/tmp"), ("shm", "/dev/shm"))
JOB_PARTS = ("submission", "source", "output")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), f"mount {target}"
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)), "pivot_root")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def available() -> tuple[bool, str]:
    """Whether this process may build namespaces (the fork server's requirement), and why not."""
    if not os.path.exists("/proc/self/ns/mnt"):
        return False, "no Linux namespaces here"
    if os.geteuid() != 0:
        return False, "the fork server's sandbox needs root (CAP_SYS_ADMIN) to build namespaces"
    if platform.machine() not in _SYS_PIVOT_ROOT:
        return False, f"unsupported architecture {platform.machine()}"
    return True, "namespaces available"


@dataclass(frozen=True)
class RootLayout:
    """What the sandbox's root holds besides /job: computed once by the fork server."""

    symlinks: tuple[tuple[str, str], ...]  # (target, link path)
    read_only: tuple[str, ...]  # host paths bound read-only at the same place

    @classmethod
    def of_this_machine(cls) -> RootLayout:
        symlinks, read_only = [], []
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                symlinks.append((os.readlink(d), d))
            elif os.path.isdir(d):
                read_only.append(d)
        read_only += [f for f in SYSTEM_FILES + SYSTEM_ETC_DIRS if os.path.exists(f)]
        read_only += python_paths()
        return cls(tuple(symlinks), tuple(read_only))


def enter_job_namespaces(
    layout: RootLayout, job_dir: Path, mountpoint: str, limits: Limits, stage: dict[str, Any] | None = None
) -> list[int]:
    """Step 1, in the process that will wait for the job: new namespaces and the job's root.

    `mountpoint` is an empty host directory; in the new mount namespace a tmpfs on it becomes
    the root. The pid namespace applies to children: the job itself is forked after this. Returns
    the descriptors of the job's submission, source and output directories (opened first, on the
    host), for `place_job_fds` in the job's first process.

    `stage`: a command assignment's stage: its job directories are bound at /job/... too
    (`stage_binds`; its program knows nothing of descriptors), and with `network` it keeps the
    host's network namespace.
    """
    job_fds = [os.open(job_dir / part, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) for part in JOB_PARTS]
    network = bool(stage and stage.get("network"))
    unshare(CLONE_NEWNS | CLONE_NEWPID | (0 if network else CLONE_NEWNET) | CLONE_NEWIPC | CLONE_NEWUTS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    root = mountpoint.rstrip("/")
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    for target, link in layout.symlinks:
        os.symlink(target, root + link)
    # The scratch filesystem first: the Python may itself live under /tmp (a CI checkout), bound on
    # top below.
    scratch = root + "/.scratch"
    os.makedirs(scratch)
    options = f"mode=0755,size={limits.disk_bytes},nr_inodes={limits.disk_files}"
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, options)
    for name, _ in SCRATCH_DIRS:
        os.mkdir(f"{scratch}/{name}")
        os.chmod(f"{scratch}/{name}", 0o1777)
    for name, target in SCRATCH_DIRS[:2]:
        _bind(f"{scratch}/{name}", root + target, read_only=False)
    for path in layout.read_only:
        _bind(path, root + path, read_only=True)
    _make_dev(root)
    _bind(f"{scratch}/shm", root + "/dev/shm", read_only=False)
    for source, target, read_only in stage_binds(job_dir, stage) if stage else ():
        _bind(source, root + target, read_only)
    umount(scratch, MNT_DETACH)  # reachable through its three binds only
    os.rmdir(scratch)
    os.makedirs(root + "/proc", mode=0o755, exist_ok=True)
    # Swap roots and detach the host's: from here on nothing outside `root` is reachable.
    os.chdir(root)
    pivot_root(".", ".")
    umount(".", MNT_DETACH)
    os.chdir("/")
    return job_fds


def stage_binds(job_dir: Path, stage: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(host path, path in the sandbox, read-only) of a command stage's job directories."""
    results = job_dir / "stages" / str(int(stage["index"]))
    return [
        (str(job_dir / "submission"), "/job/submission", False),
        (str(job_dir / "source"), "/job/grader", True),
        (str(results), "/job/results", False),
    ]


def place_job_fds(fds: list[int]) -> None:
    """Move the job's directory descriptors to `JOB_FDS`, where the grader's command line names them."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]  # out of the targets' way
    for fd in fds:
        os.close(fd)
    for fd, target in zip(high, JOB_FDS, strict=True):
        os.dup2(fd, target, inheritable=False)
        os.close(fd)


def _bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.exists(target):
            with open(target, "x"):
                pass
    mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
    mount(None, target, None, flags)


def _make_dev(root: str) -> None:
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755,size=64k")
    for name in DEVICES:
        target = f"{dev}/{name}"
        with open(target, "x"):
            pass
        mount(f"/dev/{name}", target, None, MS_BIND)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC)
    os.makedirs(f"{dev}/shm")  # a directory of the scratch filesystem is bound here
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{dev}/{name}")
    os.symlink("/proc/self/fd", f"{dev}/fd")


def become_job(uid: int, limits: Limits, parent_alive_fd: int) -> None:
    """Step 2, in the job's first process (pid 1 of the new pid namespace): finish and drop root.

    `parent_alive_fd` is the read end of a pipe whose write end only the waiting parent holds.
    """
    prctl(PR_SET_PDEATHSIG, 9)  # if the waiting parent is killed, the whole namespace goes
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    sethostname("grader")
    apply_limits(limits)  # while still root: hard limits may be set to any value
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last_cap + 1):
        prctl(PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to a non-zero uid: the kernel clears every capability
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _verify_dropped(uid)
    # Changing credentials cleared the parent-death signal: set it again, then make sure the
    # parent did not die in between (its pipe end would have closed).
    prctl(PR_SET_PDEATHSIG, 9)
    if select.select([parent_alive_fd], [], [], 0)[0]:
        raise OSError("sandbox: the waiting parent is gone")
    os.close(parent_alive_fd)


def _verify_dropped(uid: int) -> None:
    """Fail closed: refuse to run the job unless the drop really happened."""
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()
    if status["Uid"] != [str(uid)] * 4 or status["Gid"] != [str(uid)] * 4:
        raise OSError(f"sandbox: uid/gid not dropped to {uid}: {status['Uid']} {status['Gid']}")
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        if int(status[key][0], 16) != 0:
            raise OSError(f"sandbox: capabilities left in {key}: {status[key][0]}")
    if status.get("NoNewPrivs") != ["1"]:
        raise OSError("sandbox: no_new_privs is not set")

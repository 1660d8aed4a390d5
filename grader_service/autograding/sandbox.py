"""The local sandbox: bubblewrap namespaces where available, rlimits everywhere.

Each layer is detected at start-up and reported, so an admin knows what protects the machine:
- bubblewrap: new user/pid/net/mount/ipc/uts namespaces; a read-only view of just the system
  and the Python installation; a private /tmp of the job's disk limit (with /var/tmp pointing
  into it and a small /dev/shm carved out of the same budget) as the only writable place; no
  network (loopback only, for the kernel's own sockets); an unprivileged uid; all capabilities
  dropped. The data dir, other jobs, the database and the service's config and secrets are
  simply not in the sandbox's filesystem. Neither is the job directory: its submission, source
  and output directories are handed to the grader as open file descriptors (`/proc/self/fd/N`),
  which its kernels do not inherit and, the grader being non-dumpable, cannot reach through /proc.
- rlimits: CPU seconds, address space, processes, file size and open files, plus a wall-clock
  kill of the whole process group by the executor.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SETPRIV = "/usr/bin/setpriv"
# Where the job directory appears in a Kubernetes pod. The local sandboxes do not show it at all.
JOB_ROOT = "/job"
# The job's submission, source and output directories as its grader sees them in a local sandbox:
# open directories it inherits at these descriptors.
JOB_FDS = (3, 4, 5)
# Of the disk limit, what /dev/shm gets in the bubblewrap sandbox (it cannot share the /tmp tmpfs).
SHM_SHARE = 8
# System directories the grading process needs to read; anything else is invisible.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf")
SYSTEM_ETC_DIRS = ("/etc/alternatives", "/etc/ld.so.conf.d", "/etc/ssl", "/etc/fonts", "/etc/matplotlibrc")


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    max_processes: int = 128
    max_file_bytes: int = 256 * 1024 * 1024
    max_open_files: int = 1024
    niceness: int = 10
    # Everything the job can write (its working copy, /tmp, /var/tmp, /dev/shm) shares this much.
    disk_bytes: int = 1 << 30
    disk_files: int = 100_000


def apply_limits(limits: Limits) -> None:
    """Set the limits (soft = hard) on this process; everything it starts inherits them.

    The job also runs at a lower CPU priority than the service (`niceness`), which it cannot undo
    (RLIMIT_NICE 0): when grading keeps every core busy, the API still answers at once.
    """
    pairs = (
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_FSIZE, limits.max_file_bytes),
        (resource.RLIMIT_NOFILE, limits.max_open_files),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NICE, 0),
    )
    for which, value in pairs:
        resource.setrlimit(which, (value, value))
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if limits.niceness > current:
        os.setpriority(os.PRIO_PROCESS, 0, limits.niceness)


def rlimit_preexec(limits: Limits) -> Callable[[], None]:
    """A preexec_fn applying the limits in the child."""
    return lambda: apply_limits(limits)


def python_paths() -> list[str]:
    """Directories the grading Python needs: its prefixes, stdlib, site-packages, and this package.

    Paths are resolved so symlinked installations (pyenv shims, venvs) are bound where they really are.
    """
    paths: set[str] = set()
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    ]
    candidates += [sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")]
    import grader_service

    candidates.append(str(Path(grader_service.__file__).resolve().parent))
    for path in candidates:
        if path and os.path.exists(path):
            paths.add(path)
            paths.add(os.path.realpath(path))
    # Drop paths contained in others so each is bound once.
    ordered = sorted(paths)
    return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]


@dataclass(frozen=True)
class Bubblewrap:
    """How bubblewrap runs on this machine, as found by `detect`."""

    path: str
    # As root bwrap can switch to an unprivileged uid without a user namespace; otherwise it maps one.
    as_root: bool

    def wrap(
        self,
        command: list[str],
        uid: int,
        env: dict[str, str],
        disk_bytes: int,
        mounts: list[tuple[str, str, bool]] | None = None,
        network: bool = False,
        chdir: str = "/tmp",
    ) -> list[str]:
        """bwrap arguments running `command`; the job's directories are passed as descriptors, not bound.

        A command stage's job directories are bound instead (`mounts`: host path, sandbox path,
        read-only), and `network` keeps the host's network."""
        shm = max(disk_bytes // SHM_SHARE, 1 << 20)
        stage_binds = mounts or []
        args = [
            self.path,
            "--unshare-ipc",
            "--unshare-pid",
            *([] if network else ["--unshare-net"]),
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
        args += ["--die-with-parent", "--new-session"]
        if not self.as_root:
            # Unprivileged: a user namespace is the only way in, and it maps the caller's own uid.
            args += ["--unshare-user", "--uid", str(uid), "--gid", str(uid), "--cap-drop", "ALL"]
        binds: list[str] = []
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                binds.append(d)
        binds += [f for f in SYSTEM_FILES + SYSTEM_ETC_DIRS if os.path.exists(f)]
        binds += python_paths()
        # Private /tmp first: the Python may itself live under /tmp (a CI checkout), bound on top below.
        # It holds all the job may write but /dev/shm (bwrap's /dev would not be limited at all).
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(disk_bytes - shm)]
        args += ["--tmpfs", "/tmp", "--perms", "1777", "--size", str(shm), "--tmpfs", "/dev/shm"]
        args += ["--perms", "0755", "--dir", "/var", "--symlink", "../tmp", "/var/tmp"]
        # bwrap creates the parents of mount points with the host directory's mode (/root is 0700):
        # make them traversable by the job's uid instead. They hold nothing but the mount points.
        for parent in _parents(binds):
            if parent not in ("/tmp", "/var/tmp"):  # those stay world-writable and sticky
                args += ["--perms", "0755", "--dir", parent]
        for path in binds:
            args += ["--ro-bind", path, path]
        for parent in _parents([target for _, target, _ in stage_binds]):
            args += ["--perms", "0755", "--dir", parent]
        for source, target, read_only in stage_binds:
            args += ["--ro-bind" if read_only else "--bind", source, target]
        args += ["--chdir", chdir]
        # The root bwrap builds is a tmpfs: make it read-only once everything is mounted on it.
        args += ["--remount-ro", "/"]
        args += ["--clearenv"]
        for key, value in env.items():
            args += ["--setenv", key, value]
        if self.as_root:
            # As root, no user namespace (inside one the job would still be uid 0 on the host, and
            # bwrap only switches uids inside one): setpriv drops to a real unprivileged uid with no
            # capabilities, no way back (bounding set emptied, no_new_privs).
            command = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                       "--bounding-set=-all", "--no-new-privs", "--", *command]  # fmt: skip
        return [*args, "--", *command]


def _parents(paths: list[str]) -> list[str]:
    """Every ancestor directory of the paths (not / itself), shallowest first."""
    parents: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path.rstrip("/"))
        while parent not in ("/", ""):
            parents.add(parent)
            parent = os.path.dirname(parent)
    return sorted(parents, key=lambda p: (p.count("/"), p))


def sandbox_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: nothing of the service's (tokens, DB URLs) leaks into grading."""
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "JUPYTER_CONFIG_DIR": "/tmp/jupyter-config",
        "JUPYTER_DATA_DIR": "/tmp/jupyter-data",
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    env.update(extra or {})
    return env


def detect_bubblewrap(path: str | None = None) -> tuple[Bubblewrap | None, str]:
    """Find bwrap and check it actually works here (containers often forbid namespaces)."""
    found = path or shutil.which("bwrap")
    if not found:
        return None, "bubblewrap (bwrap) is not installed"
    candidate = Bubblewrap(found, as_root=os.geteuid() == 0)
    if candidate.as_root and not os.path.exists(SETPRIV):
        return None, f"running as root needs {SETPRIV} (util-linux) to drop to an unprivileged uid"
    probe = candidate.wrap(["/bin/true"], 65534, {"PATH": "/usr/bin:/bin"}, 16 << 20)
    try:
        result = subprocess.run(probe, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"bubblewrap at {found} cannot run: {e}"
    if result.returncode != 0:
        return None, f"bubblewrap at {found} cannot create namespaces here: {result.stderr.decode().strip()}"
    return (
        candidate,
        f"bubblewrap {found} ({'as root, unprivileged uid' if candidate.as_root else 'user namespace'})",
    )

"""Child processes that cannot outlive the test run, even when pytest itself is killed.

Each child gets its own process group (so its own children go with it) and, on Linux, asks the kernel
for SIGTERM when pytest dies (PR_SET_PDEATHSIG): a `kill -9` of pytest leaves no hub, proxy or service
behind holding ports. Finalizers stop them normally; an atexit hook catches anything a finalizer missed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
# Looked up here, not in the forked child: the child should do as little as possible before exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_running: set[subprocess.Popen[bytes]] = set()


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the process that started it dies."""
    parent = os.getpid()

    def arm() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def start(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen in a new session, tied to this process's life, and remembered for the atexit sweep."""
    proc = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent(), **kwargs)
    _running.add(proc)
    return proc


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> int | None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within `timeout`."""
    if proc is None:
        return None
    _running.discard(proc)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    # the group may still hold children that ignored the leader's exit
    _signal_group(proc, signal.SIGKILL)
    return proc.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@atexit.register
def _sweep() -> None:
    for proc in list(_running):
        stop(proc, timeout=5)

"""Kernels forked from a pre-imported launcher instead of started as `python -m ipykernel_launcher`.

A fresh kernel process spends ~0.5 CPU-s importing IPython and ipykernel before it runs a line of
the notebook. The fork server (`grader_service.autograding.zygote`) imports them once; each job's
grader then forks a *kernel launcher* (`KernelLauncher.fork`) before it reads any job data, and
the launcher forks one kernel per notebook. Because the launcher is forked before the instructor's
source is loaded, no kernel inherits a copy of hidden tests in its memory; the launcher is
non-dumpable, so a kernel (same uid) cannot ptrace it to tamper with the next notebook's kernel.

jupyter_client drives a forked kernel through `ForkProvisioner`, which stands in for the
`subprocess.Popen` of the local provisioner; everything else (connection file, IPC sockets,
interrupts by process group, shutdown) is jupyter_client's usual path.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

from . import processes
from .kernel_streams import GradingOutStream

# Messages between grader and launcher are one small JSON object each.
_MAX_MESSAGE = 1 << 20


class KernelLaunchError(RuntimeError):
    pass


class KernelLauncher:
    """The grader's handle on its launcher process."""

    def __init__(self, sock: socket.socket, pid: int):
        self.sock = sock
        self.pid = pid

    @classmethod
    def fork(cls, close: Iterable[int] = ()) -> KernelLauncher:
        """Fork the launcher. Call it before the grader has threads, an event loop, or job data.

        `close`: descriptors of the grader's that no kernel may inherit (the job's directories).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the launcher
            code = 1
            try:
                ours.close()
                for fd in close:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                _serve(theirs)
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        return cls(ours, pid)

    def launch(self, argv: list[str], cwd: str, env: dict[str, str]) -> int:
        """Fork a kernel running `ipykernel_launcher argv` in `cwd` with exactly `env`; its pid."""
        try:
            self.sock.sendall(json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode())
            reply = self.sock.recv(_MAX_MESSAGE)
        except OSError as e:
            raise KernelLaunchError(f"the kernel launcher is gone: {e}") from None
        if not reply:
            raise KernelLaunchError("the kernel launcher is gone (it was killed)")
        answer = json.loads(reply)
        if "error" in answer:
            raise KernelLaunchError(answer["error"])
        return int(answer["pid"])

    def close(self) -> None:
        """End the launcher (kernels it started are the grader's to kill)."""
        self.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _serve(sock: socket.socket) -> None:
    """The launcher's loop: one kernel per request until the grader closes the socket."""
    processes.make_non_dumpable()
    # Kernels are reaped automatically; the grader watches them through pidfds.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while request := sock.recv(_MAX_MESSAGE):
        try:
            spec = json.loads(request)
            pid = os.fork()
        except (OSError, ValueError) as e:
            sock.sendall(json.dumps({"error": f"could not start a kernel: {e}"}).encode())
            continue
        if pid == 0:
            code = 1
            try:
                sock.close()
                _become_kernel(spec["argv"], spec["cwd"], spec["env"])
                code = 0
            except BaseException as e:  # noqa: BLE001 - report anything, then leave
                with contextlib.suppress(Exception):
                    print(f"kernel failed: {type(e).__name__}: {e}", file=sys.stderr)
            finally:
                os._exit(code)
        sock.sendall(json.dumps({"pid": pid}).encode())


def _become_kernel(argv: list[str], cwd: str, env: dict[str, str]) -> None:
    """Turn this forked process into what `python -I -m ipykernel_launcher argv` would have been."""
    os.setsid()  # its own process group: interrupts and kills address the group
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # student code may wait for its own children
    signal.signal(signal.SIGINT, signal.default_int_handler)
    processes.make_dumpable()  # an ordinary process to itself (/proc/self, core tools)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.environ["JPY_PARENT_PID"] = str(os.getppid())  # as jupyter_client's launcher sets it
    tempfile.tempdir = None  # TMPDIR is the kernel's own now
    argv = [
        *argv,
        # Read from the environment when ipykernel was imported (in the fork server): pass it as an option.
        f"--IPKernelApp.parent_handle={os.getppid()}",
        f"--IPKernelApp.outstream_class={GradingOutStream.__module__}.{GradingOutStream.__qualname__}",
    ]
    sys.argv = ["ipykernel_launcher", *argv]
    from ipykernel.kernelapp import IPKernelApp

    # stdout/stderr (the job's log) go nowhere once the kernel runs: what student code writes to
    # them reaches the notebook through ipykernel's streams, never the log.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    IPKernelApp.launch_instance(argv=argv)


class ForkedProcess:
    """The part of `subprocess.Popen` the local provisioner uses, for a kernel forked by the launcher.

    The kernel is the launcher's child, not ours: a pidfd tells when it has ended, but not how.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone (and reaped)
            self._pidfd, self.returncode = None, -signal.SIGKILL

    def poll(self) -> int | None:
        if self.returncode is None and self._pidfd is not None and select.select([self._pidfd], [], [], 0)[0]:
            self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._pidfd is not None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                raise TimeoutError(f"kernel {self.pid} still running")
            self._ended()
        assert self.returncode is not None
        return self.returncode

    def _ended(self) -> None:
        # The exit status belongs to the launcher; "killed" is the only one that matters here.
        self.returncode = -signal.SIGKILL
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkProvisioner(LocalProvisioner):
    """The local provisioner, with the kernel forked by a `KernelLauncher` instead of exec'd."""

    launcher: KernelLauncher | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        assert self.launcher is not None
        # The kernelspec's argv is `python -I -m ipykernel_launcher <args>`: keep the args.
        args = cmd[cmd.index("ipykernel_launcher") + 1 :]
        pid = self.launcher.launch(args, str(kwargs.get("cwd") or os.getcwd()), dict(kwargs.get("env") or {}))
        self.process = ForkedProcess(pid)  # type: ignore[assignment]  # has what the provisioner uses of a Popen
        self.pid = self.pgid = pid
        self.cwd = kwargs.get("cwd")
        return self.connection_info

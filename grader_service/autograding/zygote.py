"""The fork server: one pre-imported process that forks a sandboxed grader per job.

Started by `ForkServer` as `python -I -m grader_service.autograding.zygote FD`. It imports the
grading engine, IPython and ipykernel once (~1 CPU-s that every fresh grading process would pay
again), then serves requests on the unix socket FD. It never reads job data and never runs
student code. For each job:

    zygote ── fork ──> waiter: own session; opens the job's directories, new namespaces and
                        root (`enter_job_namespaces`); waits for the job and exits with its status
                 └── fork ──> grader, pid 1 of the job's pid namespace: drops to the job's uid
                              (`become_job`), takes the job's directories as descriptors 3-5,
                              forks the kernel launcher (which closes them), runs
                              `grader-convert autograde` in-process; kernels are forked from
                              the launcher

Protocol (SOCK_SEQPACKET, one JSON object per message; the service side is `forkserver.py`):
    -> {"op": "run", "job", "uid", "job_dir", "argv", "env", "limits"}  + the log pipe's write end
    -> {"op": "kill", "job"}   (the job ends as if SIGKILLed; "exited" follows once nothing of it is left)
    <- {"op": "ready"} once, then {"op": "started", "job", "pid"} and {"op": "exited", "job",
       "returncode"} (negative: killed by that signal) per job, or {"op": "failed", "job", "error"}.
"argv": null runs the sandbox self-check instead of grading (the executor's start-up probe).
When the service's end closes (or the service dies), every job is killed and the zygote exits.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import namespaces
from .sandbox import JOB_FDS, JOB_ROOT, Limits

# Exit code of a job whose sandbox could not be built (the message is in its log).
EXIT_SANDBOX_FAILED = 125
_MAX_MESSAGE = 1 << 20


# What a grader and a kernel import on start-up, and a kernel on its first traceback (measured
# as the modules a forked kernel still imported): forks start with all of it loaded.
PREIMPORT = (
    "grader_service.convert.autograde",
    "grader_service.convert.cli",
    "IPython",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.logger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "ipykernel.debugger",
    "ipykernel.ipkernel",
    "ipykernel.kernelapp",
    "ipykernel.zmqshell",
    "faulthandler",
    "pdb",
    "pygments.formatters.terminal256",
    "pygments.styles",
    "stack_data",
    "tornado.platform.asyncio",
)


def preimport() -> None:
    # debugpy, imported by ipykernel.debugger, warns about frozen modules unless told not to.
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    for name in PREIMPORT:
        with contextlib.suppress(ImportError):  # optional parts of IPython may be missing
            importlib.import_module(name)
    _warm_up_tracebacks()
    _warm_up_notebook_validation()
    _warm_up_kernel_provisioning()
    _warm_up_grader_support()
    # Imported objects never become garbage: keep the collector off them, so forks do not copy
    # every page just to scan (and write to) their object headers.
    gc.freeze()


def _warm_up_tracebacks() -> None:
    """Format one traceback as a kernel does, in the layout and colour theme kernels use.

    pygments compiles its lexer's regexes on first use, and IPython builds each theme's terminal
    formatter on first use (~6 ms); both are cached, so done here they are done once for all kernels.
    """
    from IPython.core import ultratb
    from IPython.core.interactiveshell import InteractiveShell

    theme = InteractiveShell.colors.default_value
    try:
        raise AssertionError("warm-up")
    except AssertionError:
        with contextlib.suppress(Exception):  # best effort: only a speed-up
            for mode in ("Context", "Plain"):
                ultratb.AutoFormattedTB(mode=mode, theme_name=theme).text(*sys.exc_info())


def _warm_up_notebook_validation() -> None:
    """Compile nbformat's schema validators: ~80 ms of CPU that every grader would spend again.

    nbformat compiles one per schema version on first use; the current minor version is the one
    every new cell is validated against, 4.4 what most notebooks in circulation declare.
    """
    import nbformat
    from nbformat import validator

    for minor in sorted({4, nbformat.v4.nbformat_minor}):
        validator.get_validator(version=4, version_minor=minor)


def _warm_up_kernel_provisioning() -> None:
    """jupyter_client finds kernel provisioners by scanning every installed package's entry points."""
    from jupyter_client.provisioning.factory import KernelProvisionerFactory

    KernelProvisionerFactory.instance()


def _warm_up_grader_support() -> None:
    """Compile the code the grader installs in every kernel, and build the grader's CLI parser."""
    from ..convert import cli, guard

    guard.support_code()
    guard.checks_code()
    cli.build_parser()


class Zygote:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.layout = namespaces.RootLayout.of_this_machine()
        self.mountpoint = tempfile.mkdtemp(prefix="grader-sandbox-root-")
        os.chmod(self.mountpoint, 0o755)
        self.jobs: dict[int, int] = {}  # waiter pid -> job id
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode())

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self.wake_r, selectors.EVENT_READ)
        self.send({"op": "ready", "pid": os.getpid()})
        try:
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self.sock:
                        if not self.handle_request():
                            return
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self.wake_r, 4096)
                self.reap()
        finally:
            self.end_jobs()
            with contextlib.suppress(OSError):
                os.rmdir(self.mountpoint)

    def end_jobs(self, grace: float = 5.0) -> None:
        """Kill every job through its waiter, which reaps the job's pid 1; SIGKILL what lingers."""
        for pid in self.jobs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.jobs and time.monotonic() < deadline:
            for pid in list(self.jobs):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                del self.jobs[pid]
            time.sleep(0.01)
        for pid in self.jobs:
            _kill_group(pid)

    def handle_request(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.sock, _MAX_MESSAGE, 4)
        if not data:
            return False
        try:
            request = json.loads(data)
            if request["op"] == "run":
                if len(fds) != 1:
                    raise ValueError("a run request carries exactly one file descriptor (the log)")
                self.spawn(request, fds[0])
            elif request["op"] == "kill":
                for pid, job in self.jobs.items():
                    if job == request["job"]:
                        # The waiter kills the job's pid 1 and reports only once the namespace is empty.
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGTERM)
        except (KeyError, ValueError, OSError) as e:
            self.send({"op": "failed", "job": _job_of(data), "error": f"{type(e).__name__}: {e}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def spawn(self, request: dict[str, Any], log_fd: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = EXIT_SANDBOX_FAILED
            try:
                os.setsid()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                namespaces.prctl(namespaces.PR_SET_PDEATHSIG, signal.SIGKILL)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                for fd in (log_fd, self.wake_r, self.wake_w, self.sock.fileno()):
                    os.close(fd)
                code = _wait_for_job(self.layout, self.mountpoint, request)
            except BaseException:  # noqa: BLE001 - everything goes to the job's log
                with contextlib.suppress(Exception):
                    traceback.print_exc()
                    print("the grading sandbox could not be set up", file=sys.stderr)
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os._exit(code)
        self.jobs[pid] = request["job"]
        self.send({"op": "started", "job": request["job"], "pid": pid})

    def reap(self) -> None:
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.jobs.pop(pid, None)
            if job is not None:
                self.send({"op": "exited", "job": job, "returncode": os.waitstatus_to_exitcode(status)})


def _wait_for_job(layout: namespaces.RootLayout, mountpoint: str, request: dict[str, Any]) -> int:
    """The waiter: build the namespaces, fork the job into them, pass on how it ended."""
    limits = Limits(**request["limits"])
    job_fds = namespaces.enter_job_namespaces(
        layout, Path(request["job_dir"]), mountpoint, limits, request.get("stage")
    )
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = EXIT_SANDBOX_FAILED
        try:
            os.close(alive_w)
            code = _run_job(request, limits, alive_r, job_fds)
        except BaseException:  # noqa: BLE001
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(alive_r)
    for fd in (1, 2, *job_fds):
        os.close(fd)
    # Killing pid 1 ends every process in its namespace, and waitpid returns only once they are
    # all gone: so the job's exit, which the service waits for, means nothing of it is left.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):  # die the same way, so the service sees the signal
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


def _run_job(request: dict[str, Any], limits: Limits, parent_alive_fd: int, job_fds: list[int]) -> int:
    """The job's pid 1: drop privileges, then grade (or self-check) in-process."""
    try:
        namespaces.become_job(int(request["uid"]), limits, parent_alive_fd)
        namespaces.place_job_fds(job_fds)
    except OSError as e:
        print(f"the grading sandbox could not be set up: {e}", file=sys.stderr)
        return EXIT_SANDBOX_FAILED
    # Holding the instructor's source: no process of the job (same uid) may read this one's memory.
    namespaces.prctl(namespaces.PR_SET_DUMPABLE, 0)
    # pid 1 ignores signals it has no handler for; SIGINT would otherwise raise in the grader.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None
    os.chdir("/tmp")
    if request.get("stage") is not None:
        return _exec_stage(request["stage"])
    if request.get("argv") is None:
        return _self_check(request.get("hidden", []), limits)
    from grader_service.convert import cli
    from grader_service.convert.forked_kernel import KernelLauncher

    # Forked before the source is read: no kernel can find the hidden tests in its memory; and
    # without the job's directory descriptors.
    launcher = KernelLauncher.fork(close=JOB_FDS)
    try:
        return cli.main(request["argv"], kernel_launcher=launcher)
    finally:
        launcher.close()


def _exec_stage(stage: dict[str, Any]) -> int:
    """A command stage: its program becomes the job's pid 1, so when it exits the kernel ends every
    process it left behind before the waiter (and so the service) hears of the exit. It reaches the
    job's directories at /job/... (bound there), not through descriptors."""
    for fd in JOB_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    argv = [str(a) for a in stage["argv"]]
    os.chdir("/job/submission")
    try:
        os.execvpe(argv[0], argv, dict(os.environ))
    except OSError as e:
        print(f"cannot run {argv[0]!r}: {e.strerror}", file=sys.stderr)
    return 127


def _self_check(hidden: list[str], limits: Limits) -> int:
    """The start-up probe: the sandbox is what it claims to be (uid and capabilities were checked)."""
    problems = [f"{path} is visible" for path in hidden if os.path.exists(path)]
    try:
        socket.create_connection(("192.0.2.1", 9), timeout=2).close()
        problems.append("the network is reachable")
    except OSError:
        pass
    output = f"/proc/self/fd/{JOB_FDS[2]}"
    try:
        Path(output, "probe").write_text("ok")
    except OSError as e:
        problems.append(f"the job's output directory is not writable: {e}")
    if os.path.exists(JOB_ROOT):
        problems.append(f"{JOB_ROOT} is in the sandbox")
    for path in ("/usr/probe", "/probe"):
        try:
            Path(path).write_text("x")
            problems.append(f"{path} is writable")
        except OSError:
            pass
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        stat = os.statvfs(path)
        if stat.f_blocks * stat.f_frsize > limits.disk_bytes or stat.f_files > limits.disk_files:
            problems.append(f"{path} is not limited to the job's disk limit")
    print("; ".join(problems) if problems else "sandbox ok")
    return 1 if problems else 0


def _job_of(data: bytes) -> Any:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return json.loads(data).get("job")
    return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    # The service's death ends the zygote, which ends every job (each waiter has the same signal).
    namespaces.prctl(namespaces.PR_SET_PDEATHSIG, signal.SIGKILL)
    preimport()
    Zygote(sock).serve()


if __name__ == "__main__":
    main()

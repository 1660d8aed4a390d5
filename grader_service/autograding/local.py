"""LocalAutogradeExecutor: grading processes on the service's machine, inside a sandbox.

Student code never runs in the service process. Each job is `grader-convert autograde` either
forked from the fork server (`zygote.py`, in namespaces it builds: `namespaces.py`) or, where
that cannot run, as a new process wrapped in bubblewrap (`sandbox.py`); always under rlimits,
in its own session, killed as a whole when it overruns its wall-clock budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from traitlets import Bool, Integer, Unicode

from ..command import spec as command_spec
from ..states import AssignmentKind
from . import namespaces
from .executor import (
    EXIT_DISK_LIMIT,
    EXIT_GRADED,
    WORK_DIR,
    AutogradeExecutor,
    GradingOutcome,
    GradingRefused,
    GradingTask,
    cap_text,
    disk_limit_reason,
    job_paths,
    parse_quantity,
    read_gradebook,
)
from .forkserver import ForkServer, ForkServerError
from .pipeline import StageRun, run_pipeline
from .sandbox import JOB_FDS, Bubblewrap, Limits, detect_bubblewrap, rlimit_preexec, sandbox_env
from .zygote import EXIT_SANDBOX_FAILED

# Seconds beyond the grader's own total timeout before the executor kills the whole job.
KILL_GRACE = 30.0
_READ_CHUNK = 65536


# The one setting that lets jobs run without a sandbox (named by the log where none works).
UNSANDBOXED_SETTING = "c.LocalAutogradeExecutor.require_sandbox = False"


class LocalAutogradeExecutor(AutogradeExecutor):
    """Grades in sandboxed subprocesses of this machine."""

    name = "local"

    require_sandbox = Bool(
        True,
        help="Grade only inside a sandbox (the fork server's namespaces or bubblewrap). Where neither works, "
        "the service starts and accepts submissions but grades none of them (they stay queued until it "
        "restarts with a sandbox), and /health says why and what to do. False grades with rlimits only "
        "where no sandbox works: for development only, as a job can then read whatever the service's "
        "user can read.",
    ).tag(config=True)
    bwrap_path = Unicode("", help="Path of the bwrap binary; empty: look it up on PATH.").tag(config=True)
    sandbox_uid_base = Integer(
        61000,
        help="Jobs run as uids from this value upwards (one per concurrent job, so process limits do not "
        "interfere); only used when the service runs as root.",
    ).tag(config=True)
    python = Unicode(
        sys.executable, help="The Python that runs grader-convert (it must have ipykernel)."
    ).tag(config=True)
    max_processes = Integer(128, help="Most processes a job may run at once (fork bombs stop here).").tag(
        config=True
    )
    max_file_size = Integer(256 * 1024 * 1024, help="Largest file a job may write, in bytes.").tag(
        config=True
    )
    max_files = Integer(
        100_000,
        min=1000,
        help="Most files and directories a job may create, in total (the inodes of its scratch filesystem; "
        "each costs kernel memory, whatever its size). The fork server's sandbox only.",
    ).tag(config=True)

    niceness = Integer(
        10,
        min=0,
        max=19,
        help="CPU priority of grading jobs relative to the service (a nice value, 0-19): jobs get the "
        "cores the service does not need, so the API stays responsive while every core grades.",
    ).tag(config=True)

    fork_server = Bool(
        True,
        help="Fork each job's grader and kernels from one pre-imported process, sandboxed with namespaces "
        "it builds itself (needs root): takes ~1 CPU-s of imports off every job. Without it (or when it "
        "cannot run), each job is a new process wrapped in bubblewrap.",
    ).tag(config=True)

    bubblewrap: Bubblewrap | None = None
    forks: ForkServer | None = None
    sandbox_report = ""

    async def start(self) -> None:
        self._free_uids: asyncio.Queue[int] = asyncio.Queue()
        for i in range(256):
            self._free_uids.put_nowait(self.sandbox_uid_base + i)
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        limits = "rlimits: cpu, address space, processes, file size, open files"
        fork_problem = "turned off (c.LocalAutogradeExecutor.fork_server = False)"
        if self.fork_server:
            self.forks, fork_problem = await self._start_fork_server()
            if self.forks is not None:
                self._use(
                    "fork-server",
                    "fork server; namespaces (mount, pid, net, ipc, uts) with a read-only root, "
                    "writable storage only a tmpfs of the job's disk limit, the job directory handed over "
                    f"as descriptors, unprivileged uid, no capabilities, no_new_privs; {limits}",
                )
                return
            self.log.warning(
                "Fork server unavailable (%s): each job starts a new sandboxed process", fork_problem
            )
        bwrap, report = await asyncio.to_thread(detect_bubblewrap, self.bwrap_path or None)
        if bwrap is not None:
            self.bubblewrap = bwrap
            self._use("bubblewrap", f"{report}; {limits}")
            return
        problem = f"no sandbox works here (fork server: {fork_problem}; bubblewrap: {report})"
        if self.require_sandbox:
            installed = bool(self.bwrap_path and os.path.exists(self.bwrap_path)) or (
                not self.bwrap_path and shutil.which("bwrap") is not None
            )
            self.refused = GradingRefused(
                problem, sandbox_fix(self.fork_server, os.geteuid() == 0, installed)
            )
            self.log.error(
                "Grading is OFF: %s. Submissions are accepted and stay queued until the service restarts "
                "with a sandbox. To fix: %s. For development only, %s grades without a sandbox (jobs "
                "can then read whatever this service's user can read).",
                problem,
                self.refused.fix,
                UNSANDBOXED_SETTING,
            )
            self.sandbox_report = f"none ({problem})"
            return
        self.log.warning(
            "!" * 20 + " Local grading is NOT sandboxed (%s): %s is set, so jobs run with rlimits only "
            "and can read files the service's user can read. " + "!" * 20,
            problem,
            UNSANDBOXED_SETTING,
        )
        self._use("none", f"none, rlimits only ({problem}); {limits}")

    def _use(self, sandbox: str, report: str) -> None:
        self.sandbox, self.sandbox_report = sandbox, report
        self.log.info("Local executor sandbox: %s", report)

    async def _start_fork_server(self) -> tuple[ForkServer | None, str]:
        """Start the fork server and prove its sandbox works here, or say why it cannot be used."""
        usable, why = namespaces.available()
        if not usable:
            return None, why
        forks = ForkServer(self.python, self._env(), self.log)
        try:
            await forks.start()
            problem = await self._probe(forks)
        except ForkServerError as e:
            problem = str(e)
        if problem:
            await forks.stop()
            return None, problem
        return forks, "ok"

    async def _probe(self, forks: ForkServer) -> str | None:
        """Run the sandbox self-check once: a host file beside the job must be invisible, and so on."""
        with tempfile.TemporaryDirectory(prefix="grader-sandbox-probe-") as tmp:
            job_dir = Path(tmp) / "job"
            for part in ("submission", "source", "output"):
                (job_dir / part).mkdir(parents=True)
            for path in (job_dir, *job_dir.iterdir()):
                path.chmod(0o777)
            secret = Path(tmp) / "secret"
            secret.write_text("not for jobs")
            hidden = [str(secret)] + [p for p in ("/etc/shadow",) if os.path.exists(p)]
            limits = Limits(cpu_seconds=30, memory_bytes=2**31, disk_bytes=16 << 20, disk_files=1000)
            code, logs, _ = await self._run_forked(forks, -1, self.sandbox_uid_base, job_dir, None, limits, 60,
                                                   hidden=hidden)  # fmt: skip
        if code != 0:
            return f"its sandbox self-check failed (exit code {code}): {logs.strip()[-500:]}"
        return None

    async def stop(self) -> None:
        for proc in list(self._procs.values()):
            _kill_group(proc.pid)
        if self.forks is not None:
            await self.forks.stop()

    def limits(self, task: GradingTask) -> Limits:
        memory = parse_quantity(task.limits.memory or self.memory_limit)
        return Limits(
            cpu_seconds=int(task.limits.timeout) + 30,
            # Address space, not resident memory: interpreters and BLAS reserve far more than they touch.
            memory_bytes=max(memory, 512 * 2**20) * 2,
            max_processes=self.max_processes,
            max_file_bytes=self.max_file_size,
            niceness=self.niceness,
            # A floor that leaves room for the submission's copy and the kernels' own files.
            disk_bytes=max(parse_quantity(task.limits.disk or self.disk_limit), 16 << 20),
            disk_files=self.max_files,
        )

    def _env(self) -> dict[str, str]:
        return sandbox_env({k: str(v) for k, v in self.extra_env.items()})

    def command(self, task: GradingTask, uid: int, job_fds: list[int] | None = None) -> list[str]:
        """The job's command line: in bubblewrap, on the job directories open at `job_fds`."""
        if self.bubblewrap is not None and job_fds is not None:
            # /dev/shm is a tmpfs of its own there (a part of the disk limit): full, it stops the job too.
            options = self.autograde_options(task, work_dir=Path(WORK_DIR), scratch=(Path("/dev/shm"),))
            inner = options.command(self.python, fd_paths(job_fds))
            return self.bubblewrap.wrap(inner, uid, self._env(), self.limits(task).disk_bytes)
        return self.autograde_options(task).command(self.python, job_paths(str(task.job_dir)))

    async def run(self, task: GradingTask) -> GradingOutcome:
        if self.refused is not None:  # the scheduler claims nothing then; this is the last line
            raise RuntimeError(f"Grading is refused: {self.refused.reason}")
        uid = await self._free_uids.get()
        try:
            if task.kind == AssignmentKind.COMMAND:
                return await self._run_command(task, uid)
            return await self._run(task, uid)
        finally:
            self._free_uids.put_nowait(uid)

    async def _run(self, task: GradingTask, uid: int) -> GradingOutcome:
        started = time.monotonic()
        budget = task.limits.timeout + KILL_GRACE
        if self.forks is not None:
            argv = self.autograde_options(task, work_dir=Path(WORK_DIR)).arguments(fd_paths(JOB_FDS))
            try:
                code, logs, timed_out = await self._run_forked(
                    self.forks, task.job_id, uid, task.job_dir, argv, self.limits(task), budget
                )
            except ForkServerError as e:
                return GradingOutcome(False, reason=f"Could not grade: {e}", retryable=True,
                                      runner_seconds=time.monotonic() - started)  # fmt: skip
        else:
            code, logs, timed_out = await self._run_process(task, uid, budget)
        elapsed = time.monotonic() - started
        if timed_out:
            return GradingOutcome(
                False,
                logs=logs,
                exit_code=None,
                runner_seconds=elapsed,
                reason=f"Grading did not finish within {budget:g} s and was killed",
            )
        gradebook = read_gradebook(task.job_dir / "output")
        if code == EXIT_GRADED and gradebook is not None:
            return GradingOutcome(True, gradebook=gradebook, logs=logs, exit_code=0, runner_seconds=elapsed)
        if code == EXIT_DISK_LIMIT:
            limit = str(task.limits.disk or self.disk_limit)
            return GradingOutcome(False, logs=logs, exit_code=code, runner_seconds=elapsed,
                                  reason=disk_limit_reason(limit))  # fmt: skip
        return GradingOutcome(
            False,
            gradebook=gradebook,
            logs=logs,
            exit_code=code,
            runner_seconds=elapsed,
            reason=_failure_reason(code, logs),
            # Killed by a signal, or the sandbox could not be built: the machine's fault, not the notebook's.
            retryable=code is not None and (code < 0 or code == EXIT_SANDBOX_FAILED),
        )

    async def _run_command(self, task: GradingTask, uid: int) -> GradingOutcome:
        """A command assignment: grader.yaml's stages, each in a sandbox of its own (`pipeline.py`)."""
        forks, bubblewrap = self.forks, self.bubblewrap
        if forks is None and bubblewrap is None:
            return GradingOutcome(False, reason="Command assignments are graded only in a sandbox (the fork "
                                  "server or bubblewrap); this service runs without one")  # fmt: skip

        async def run_stage(stage: command_spec.Stage, index: int, timeout: float) -> StageRun:
            limits = self.stage_limits(task, stage, timeout)
            request = {
                "argv": list(stage.command),
                "network": stage.network and self.allow_network,
                "index": index,
            }
            if forks is not None:
                return await self._fork(forks, task.job_id, uid, task.job_dir, None, limits, timeout,
                                        stage=request, output_limit=self.stage_output_limit)  # fmt: skip
            assert bubblewrap is not None
            return await self._run_stage_process(bubblewrap, task, uid, request, limits, timeout)

        try:
            return await run_pipeline(task, run_stage)
        except ForkServerError as e:
            return GradingOutcome(False, reason=f"Could not grade: {e}", retryable=True)

    def stage_limits(self, task: GradingTask, stage: command_spec.Stage, timeout: float) -> Limits:
        """A stage's rlimits: the job's, with the stage's own memory and time."""
        limits = self.limits(task)
        memory = parse_quantity(stage.memory) * 2 if stage.memory is not None else limits.memory_bytes
        return replace(limits, cpu_seconds=int(timeout) + 5, memory_bytes=max(memory, 256 * 2**20))

    async def _run_stage_process(
        self, bubblewrap: Bubblewrap, task: GradingTask, uid: int, stage: dict[str, Any], limits: Limits,
        timeout: float,
    ) -> StageRun:  # fmt: skip
        """A stage as a new bubblewrap process; bwrap's own init ends every process of the stage."""
        started = time.monotonic()
        binds = namespaces.stage_binds(task.job_dir, stage)
        command = bubblewrap.wrap(stage["argv"], uid, self._env(), limits.disk_bytes, mounts=binds,
                                  network=bool(stage["network"]), chdir="/job/submission")  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=rlimit_preexec(replace(limits, max_processes=limits.max_processes + 8)),
        )
        self._procs[task.job_id] = proc
        output = _CappedBuffer(limit=self.stage_output_limit)
        reader = asyncio.ensure_future(_drain(proc.stdout, output))
        waiter = asyncio.ensure_future(proc.wait())
        timed_out = False
        try:
            done, _ = await asyncio.wait(
                [waiter, reader], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done and not (reader in done and output.overflowed):
                done, _ = await asyncio.wait([waiter], timeout=max(timeout - (time.monotonic() - started), 0))
                timed_out = waiter not in done
        finally:
            self._procs.pop(task.job_id, None)
            _kill_group(proc.pid)  # bwrap: its pid namespace, so every process of the stage, goes with it
        await reader
        await _drain(proc.stdout, _CappedBuffer())  # what is left after a stop, to the end of the pipe
        await waiter
        return StageRun(
            proc.returncode, output.text(), timed_out, output.overflowed, time.monotonic() - started
        )

    async def _run_forked(
        self,
        forks: ForkServer,
        job_id: int,
        uid: int,
        job_dir: Path,
        argv: list[str] | None,
        limits: Limits,
        budget: float,
        hidden: list[str] | None = None,
    ) -> tuple[int | None, str, bool]:
        """A job forked by the fork server: (exit code, log, timed out)."""
        run = await self._fork(forks, job_id, uid, job_dir, argv, limits, budget, hidden)
        return run.code, run.output, run.timed_out

    async def _fork(
        self,
        forks: ForkServer,
        job_id: int,
        uid: int,
        job_dir: Path,
        argv: list[str] | None,
        limits: Limits,
        budget: float,
        hidden: list[str] | None = None,
        stage: dict[str, Any] | None = None,
        output_limit: int | None = None,
    ) -> StageRun:
        """A job or a command stage forked by the fork server; returns once nothing of it is left.

        Past `output_limit` bytes of output it is killed (`overflowed`)."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        try:
            exited = await forks.spawn(
                job_id, uid, job_dir, argv, self._env(), limits, write_fd, hidden, stage
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the job holds the only write end now: EOF when it is gone
        stream = asyncio.StreamReader(limit=_READ_CHUNK)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", buffering=0)
        )
        output = _CappedBuffer(limit=output_limit)
        reader = asyncio.ensure_future(_drain(stream, output))
        timed_out = False
        try:
            both: list[asyncio.Future[Any]] = [exited, reader]
            done, _ = await asyncio.wait(both, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
            if exited not in done and reader in done and output.overflowed:
                await forks.kill(job_id)  # printed too much: stopped at once
            elif exited not in done:
                remaining = max(budget - (time.monotonic() - started), 0)
                timed_out = exited not in (await asyncio.wait([exited], timeout=remaining))[0]
                if timed_out:
                    await forks.kill(job_id)
            code: int | None = await exited
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 10)
            reader.cancel()
            transport.close()
        seconds = time.monotonic() - started
        return StageRun(code, output.text(), timed_out, output.overflowed, seconds)

    async def _run_process(self, task: GradingTask, uid: int, budget: float) -> tuple[int | None, str, bool]:
        """A job as a new process (bubblewrap, or rlimits only): (exit code, log, timed out)."""
        env = None if self.bubblewrap is not None else self._env()
        job_fds = None
        if self.bubblewrap is not None:
            job_fds = [os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in job_paths(str(task.job_dir))]
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(task, uid, job_fds),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(task.job_dir / "submission"),
                env=env,
                start_new_session=True,
                preexec_fn=rlimit_preexec(self.limits(task)),
                pass_fds=job_fds or (),
            )
        finally:
            for fd in job_fds or ():
                os.close(fd)
        self._procs[task.job_id] = proc
        output = _CappedBuffer()
        reader = asyncio.ensure_future(_drain(proc.stdout, output))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), budget)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        finally:
            self._procs.pop(task.job_id, None)
            _kill_group(proc.pid)  # nothing the job started outlives it
        await reader
        return proc.returncode, output.text(), timed_out


class _CappedBuffer:
    """Keeps the head and the tail of a stream: a job printing gigabytes costs the service nothing."""

    def __init__(self, head: int = 64 * 1024, tail: int = 192 * 1024, limit: int | None = None):
        self.head = bytearray()
        self.tail = bytearray()
        self.head_limit, self.tail_limit = head, tail
        self.dropped = 0
        self.total = 0
        self.limit = limit  # past this many bytes the stream is no longer read (`overflowed`)

    @property
    def overflowed(self) -> bool:
        return self.limit is not None and self.total > self.limit

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.tail_limit:
            self.dropped += len(self.tail) - self.tail_limit
            del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        if not self.dropped:
            return cap_text(bytes(self.head + self.tail))
        return (
            self.head.decode(errors="replace")
            + f"\n[... {self.dropped} bytes of log omitted ...]\n"
            + self.tail.decode(errors="replace")
        )


async def _drain(stream: asyncio.StreamReader | None, buffer: _CappedBuffer) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_READ_CHUNK):
        buffer.add(chunk)
        if buffer.overflowed:
            return


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def sandbox_fix(fork_server: bool, as_root: bool, bwrap_installed: bool) -> str:
    """What an admin can do so that jobs get a sandbox, given why none works."""
    ways = []
    if not bwrap_installed:
        ways.append("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)")
    else:
        ways.append(
            "let bubblewrap create user namespaces (sysctl kernel.unprivileged_userns_clone=1; on "
            "Ubuntu 24.04 kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap)"
        )
    if not fork_server:
        ways.append("turn the fork server back on (c.LocalAutogradeExecutor.fork_server = True; needs root)")
    elif not as_root:
        ways.append("run the service as root, so that the fork server builds its own namespaces")
    else:
        ways.append(
            "in a container, allow creating namespaces (CAP_SYS_ADMIN, and seccomp and AppArmor "
            "profiles that allow unshare and mount), or grade in pods with the kube executor"
        )
    return "; or ".join(ways)


def _failure_reason(code: int | None, logs: str) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name == "SIGXCPU":
            return "Grading used up its CPU time limit"
        if name == "SIGKILL":
            return "Grading was killed (out of memory or by the system)"
        return f"Grading process died from {name}"
    last = next((line for line in reversed(logs.strip().splitlines()) if line.strip()), "")
    return (
        f"Could not grade (exit code {code}): {last[:500]}" if last else f"Could not grade (exit code {code})"
    )


__all__ = ["UNSANDBOXED_SETTING", "LocalAutogradeExecutor", "sandbox_fix"]


def fd_paths(fds: list[int] | tuple[int, ...]) -> tuple[str, str, str]:
    """The job's (submission, source, output) directories as a sandbox sees them: open descriptors."""
    submission, source, output = (f"/proc/self/fd/{fd}" for fd in fds)
    return submission, source, output

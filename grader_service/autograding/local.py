"""LocalAutogradeExecutor: grading subprocesses on the service's machine, inside the sandbox.

Student code never runs in the service process: each job is a `grader-convert autograde`
subprocess, wrapped in bubblewrap when the machine allows it, always under rlimits, in its
own session, killed as a whole when it overruns its wall-clock budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from traitlets import Bool, Integer, Unicode

from .executor import (
    EXIT_GRADED,
    AutogradeExecutor,
    GradingOutcome,
    GradingTask,
    autograde_command,
    cap_text,
    parse_quantity,
    read_gradebook,
)
from .sandbox import JOB_ROOT, Bubblewrap, Limits, detect_bubblewrap, rlimit_preexec, sandbox_env

# Seconds beyond the grader's own total timeout before the executor kills the whole job.
KILL_GRACE = 30.0
_READ_CHUNK = 65536


class SandboxUnavailable(RuntimeError):
    pass


class LocalAutogradeExecutor(AutogradeExecutor):
    """Grades in sandboxed subprocesses of this machine."""

    name = "local"

    require_sandbox = Bool(
        False,
        help="Refuse to start when bubblewrap cannot isolate jobs (instead of rlimits only, with a warning).",
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

    bubblewrap: Bubblewrap | None = None
    sandbox_report = ""

    async def start(self) -> None:
        bwrap, report = await asyncio.to_thread(detect_bubblewrap, self.bwrap_path or None)
        self.bubblewrap = bwrap
        if bwrap is None:
            message = (
                f"Local grading is NOT sandboxed ({report}): jobs run with rlimits only and can read files "
                "the service user can read. Install bubblewrap (Debian: apt-get install bubblewrap)."
            )
            if self.require_sandbox:
                raise SandboxUnavailable(message + " require_sandbox is set: refusing to start.")
            self.log.warning("!" * 20 + " %s " + "!" * 20, message)
        self.sandbox_report = f"{report}; rlimits: cpu, address space, processes, file size, open files"
        self.log.info("Local executor sandbox: %s", self.sandbox_report)
        self._free_uids: asyncio.Queue[int] = asyncio.Queue()
        for i in range(256):
            self._free_uids.put_nowait(self.sandbox_uid_base + i)
        self._procs: dict[int, asyncio.subprocess.Process] = {}

    async def stop(self) -> None:
        for proc in list(self._procs.values()):
            _kill_group(proc.pid)

    def limits(self, task: GradingTask) -> Limits:
        memory = parse_quantity(task.settings.get("memory", self.memory_limit))
        return Limits(
            cpu_seconds=int(task.timeout) + 30,
            # Address space, not resident memory: interpreters and BLAS reserve far more than they touch.
            memory_bytes=max(memory, 512 * 2**20) * 2,
            max_processes=self.max_processes,
            max_file_bytes=self.max_file_size,
        )

    def command(self, task: GradingTask, uid: int) -> list[str]:
        env = sandbox_env({k: str(v) for k, v in self.extra_env.items()})
        if self.bubblewrap is not None:
            inner = autograde_command(self.python, JOB_ROOT, task.cell_timeout, task.timeout)
            inner += ["--output-limit", str(self.max_output_bytes)]
            return self.bubblewrap.wrap(inner, task.job_dir, uid, env)
        cmd = autograde_command(self.python, str(task.job_dir), task.cell_timeout, task.timeout)
        return [*cmd, "--output-limit", str(self.max_output_bytes)]

    async def run(self, task: GradingTask) -> GradingOutcome:
        uid = await self._free_uids.get()
        try:
            return await self._run(task, uid)
        finally:
            self._free_uids.put_nowait(uid)

    async def _run(self, task: GradingTask, uid: int) -> GradingOutcome:
        started = time.monotonic()
        env = (
            None
            if self.bubblewrap is not None
            else sandbox_env({k: str(v) for k, v in self.extra_env.items()})
        )
        proc = await asyncio.create_subprocess_exec(
            *self.command(task, uid),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(task.job_dir / "submission"),
            env=env,
            start_new_session=True,
            preexec_fn=rlimit_preexec(self.limits(task)),
        )
        self._procs[task.job_id] = proc
        output = _CappedBuffer()
        reader = asyncio.ensure_future(_drain(proc.stdout, output))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), task.timeout + KILL_GRACE)
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        finally:
            self._procs.pop(task.job_id, None)
            _kill_group(proc.pid)  # nothing the job started outlives it
        await reader
        elapsed = time.monotonic() - started
        logs = output.text()
        if timed_out:
            return GradingOutcome(
                False,
                logs=logs,
                exit_code=None,
                runner_seconds=elapsed,
                reason=f"Grading did not finish within {task.timeout + KILL_GRACE:g} s and was killed",
            )
        gradebook = read_gradebook(task.job_dir / "output")
        if proc.returncode == EXIT_GRADED and gradebook is not None:
            return GradingOutcome(True, gradebook=gradebook, logs=logs, exit_code=0, runner_seconds=elapsed)
        return GradingOutcome(
            False,
            gradebook=gradebook,
            logs=logs,
            exit_code=proc.returncode,
            runner_seconds=elapsed,
            reason=_failure_reason(proc.returncode, logs),
            retryable=proc.returncode is not None and proc.returncode < 0,
        )


class _CappedBuffer:
    """Keeps the head and the tail of a stream: a job printing gigabytes costs the service nothing."""

    def __init__(self, head: int = 64 * 1024, tail: int = 192 * 1024):
        self.head = bytearray()
        self.tail = bytearray()
        self.head_limit, self.tail_limit = head, tail
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
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


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


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


__all__ = ["LocalAutogradeExecutor", "SandboxUnavailable", "Path"]

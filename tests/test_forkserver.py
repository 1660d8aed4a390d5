"""The fork server: jobs forked from one pre-imported process, each in namespaces of its own.

Exercised through `LocalAutogradeExecutor`, as the scheduler uses it (the service-level escape
notebook test in test_grading.py covers what student code can reach).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grader_service.autograding import local
from grader_service.autograding.executor import GradingOutcome, GradingTask, JobLimits
from grader_service.autograding.local import LocalAutogradeExecutor

from .conftest import DATA

SOURCE = DATA / "tiny"


def stage(root: Path, job_id: int, answer: str) -> Path:
    """A job directory as the scheduler stages it, with `answer` as the solution cell."""
    job = root / f"job-{job_id}"
    for part in ("submission", "source", "output"):
        (job / part).mkdir(parents=True)
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = answer
    (job / "submission" / "tiny.ipynb").write_text(json.dumps(nb))
    for path in SOURCE.iterdir():
        shutil.copy(path, job / "source" / path.name)
    for path in (job, *job.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)
    return job


def task(job: Path, job_id: int, **settings: Any) -> GradingTask:
    defaults = {"cell_timeout": 10.0, "timeout": 60.0, "memory": "1Gi", "cpu": 1.0}
    return GradingTask(
        job_id, job_id, "c0ffee", "ml", "tiny", "stu", job, JobLimits(**{**defaults, **settings})
    )


def with_executor(body: Callable[[LocalAutogradeExecutor], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        executor = LocalAutogradeExecutor()
        await executor.start()
        try:
            return await body(executor)
        finally:
            await executor.stop()

    return asyncio.run(main())


def job_processes() -> list[int]:
    """Live processes running as a sandbox uid (the executor's pool starts at 61000) with this Python.

    Zombies run nothing; they are left when a job's parent is itself SIGKILLed and the orphan is
    re-parented to this test process (a child subreaper once an in-process autograde ran here).
    The Python tells this checkout's jobs from those of other test runs on the same machine.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                uid = int(status.split("Uid:")[1].split()[0])
                state = status.split("State:")[1].split()[0]
            except (OSError, IndexError):
                continue
            ours = sys.executable.encode() in cmdline  # a job's kernels are forks of the zygote
            if 61000 <= uid < 61256 and state != "Z" and ours:
                found.append(int(entry))
    return found


def test_grades_in_forked_sandbox(tmp_path: Path) -> None:
    async def body(executor: LocalAutogradeExecutor) -> list[GradingOutcome]:
        assert executor.forks is not None, executor.sandbox_report
        assert executor.sandbox_report.startswith("fork server")
        right = stage(tmp_path, 1, "def double(x):\n    return x + x")
        wrong = stage(tmp_path, 2, "def double(x):\n    return 4 if x == 2 else 0")
        return list(await asyncio.gather(executor.run(task(right, 1)), executor.run(task(wrong, 2))))

    right, wrong = with_executor(body)
    assert right.graded and right.gradebook is not None and right.gradebook["score"] == 3.0, right.logs
    assert wrong.graded and wrong.gradebook is not None and wrong.gradebook["score"] == 2.0, wrong.logs
    assert not job_processes()


# Run by the student's answer cell: does any string the kernel holds contain the needle? The needles
# are joined at run time (a literal would sit in the cell's own code) and skipped by identity.
SCAN = """
import gc, json
def _holds(needle):
    for obj in gc.get_objects():
        for ref in gc.get_referents(obj):
            if isinstance(ref, str) and ref is not needle and needle in ref:
                return True
    return False
# control marker: kernel-sees-this-cell
found = {'hidden': _holds(''.join(['double', '(-3)'])), 'control': _holds(''.join(['kernel-sees', '-this-cell']))}
print(json.dumps(found))
def double(x):
    return x + x
"""


def test_kernel_memory_holds_no_hidden_tests(tmp_path: Path) -> None:
    """Kernels are forked from a launcher that never saw the source: its hidden tests are not in memory."""
    job = stage(tmp_path, 3, SCAN)

    outcome = with_executor(lambda executor: executor.run(task(job, 3)))

    assert outcome.graded, outcome.logs
    graded = json.loads((job / "output" / "tiny.ipynb").read_text())
    scan = json.loads("".join(graded["cells"][1]["outputs"][0]["text"]))
    # The control (this cell's own text, which the kernel was sent) proves the scan finds strings.
    assert scan == {"hidden": False, "control": True}


def test_executor_kills_a_job_past_its_budget(tmp_path: Path, monkeypatch: Any) -> None:
    """A kernel ignoring interrupts holds the grader up; past timeout + grace the whole job is killed."""
    monkeypatch.setattr(local, "KILL_GRACE", 1.0)
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(1)"
    )
    job = stage(tmp_path, 4, stubborn)
    started = time.monotonic()

    outcome = with_executor(lambda executor: executor.run(task(job, 4, timeout=2.0, cell_timeout=2.0)))

    assert not outcome.graded and "did not finish within 3 s" in (outcome.reason or ""), outcome
    assert time.monotonic() - started < 20
    assert not job_processes()


def test_lost_fork_server_fails_jobs_retryably_and_restarts(tmp_path: Path) -> None:
    slow = stage(tmp_path, 5, "import time\ntime.sleep(30)\ndef double(x):\n    return x + x")
    fine = stage(tmp_path, 6, "def double(x):\n    return x + x")

    async def body(executor: LocalAutogradeExecutor) -> tuple[GradingOutcome, GradingOutcome]:
        assert executor.forks is not None and executor.forks.process is not None
        running = asyncio.ensure_future(executor.run(task(slow, 5, cell_timeout=60.0)))
        await asyncio.sleep(1.5)
        os.kill(executor.forks.process.pid, signal.SIGKILL)
        lost = await asyncio.wait_for(running, 30)
        return lost, await executor.run(task(fine, 6))

    lost, after = with_executor(body)
    assert not lost.graded and lost.retryable and "fork server" in (lost.reason or ""), lost
    assert after.graded and after.gradebook is not None and after.gradebook["score"] == 3.0, after.logs
    # With the fork server SIGKILLed nobody waits for the orphaned job: the kernel's parent-death
    # signals tear it down on their own, moments later.
    deadline = time.monotonic() + 10
    while job_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not job_processes()


def test_sandbox_that_cannot_be_built_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-job"

    outcome = with_executor(lambda executor: executor.run(task(missing, 7)))

    assert not outcome.graded and outcome.retryable, outcome
    assert "sandbox could not be set up" in (outcome.reason or ""), outcome

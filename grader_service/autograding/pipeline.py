"""A command assignment's grading: grader.yaml's stages, one after the other, then their results.

Where a stage runs is the executor's business (a `StageRunner`: the local sandbox; for a pod's
containers, what each did, read once the pod has ended: `kube/stages.py`); what the stages mean
is decided here, the same for every executor: the order, what counts as a failing stage, where
the results come from, the failure messages instructors read, and the gradebook (`command.results.to_gradebook`). Each stage gets a fresh, empty results
directory (`<job>/stages/<index>`, its /job/results), and its results are read only once the
runner says every process of the stage is gone, so nothing the submission left running can
change them afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..command import results as command_results
from ..command import spec as command_spec
from .executor import GradingOutcome, GradingTask, cap_text


@dataclass(frozen=True)
class StageRun:
    """How one stage ended. Returned only once none of its processes is left."""

    code: int | None  # exit code; negative: the signal that killed it
    output: str  # stdout and stderr, capped
    timed_out: bool = False
    overflowed: bool = False  # printed more than the executor's limit and was stopped
    seconds: float = 0.0


# (stage, its index, its timeout in seconds) -> how it ended.
StageRunner = Callable[[command_spec.Stage, int, float], Awaitable[StageRun]]


class StageFailed(Exception):
    """A stage failed; the message (naming the stage) is the grading's failure reason."""


def results_dir(job_dir: Path, index: int) -> Path:
    """A stage's /job/results on the host (the sandboxes bind it there)."""
    return job_dir / "stages" / str(index)


def prepare_stage(job_dir: Path, index: int) -> Path:
    """A fresh, empty results directory the stage's unprivileged uid may write."""
    path = results_dir(job_dir, index)
    path.mkdir(parents=True)
    path.chmod(0o777)
    path.parent.chmod(0o755)
    return path


def read_results_file(directory: Path, relative: str) -> bytes:
    """A results file the stage left, read safely: it was written by untrusted code, so it must be
    a regular file inside `directory` (no link out of it, no FIFO that would block) and small."""
    root = os.path.realpath(directory)
    path = os.path.realpath(directory / relative)
    if not path.startswith(root + os.sep):
        raise command_results.ResultsError(f"{relative} leads out of /job/results")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise command_results.ResultsError(
            f"no results file /job/results/{relative} ({e.strerror})"
        ) from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise command_results.ResultsError(f"/job/results/{relative} is not a regular file")
        if info.st_size > command_results.MAX_RESULTS_BYTES:
            raise command_results.ResultsError(
                f"/job/results/{relative} is larger than {command_results.MAX_RESULTS_BYTES} bytes"
            )
        return file.read(command_results.MAX_RESULTS_BYTES + 1)


def stage_results(stage: command_spec.Stage, run: StageRun, directory: Path) -> dict[str, Any]:
    """The stage's parsed results (`ResultsError` naming the problem)."""
    if stage.results == command_spec.RESULTS_STDOUT:
        return command_results.parse(command_results.last_json_object(run.output))
    assert stage.results is not None
    relative = stage.results[len(command_spec.RESULTS_DIR) + 1 :]
    return command_results.parse(read_results_file(directory, relative))


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def judge(stage: command_spec.Stage, run: StageRun, timeout: float, directory: Path) -> dict[str, Any] | None:
    """The stage's results (None if it has none to give); `StageFailed` if the stage failed.

    A stage with `results` is judged by them: a harness may well exit non-zero when tests fail.
    """
    if run.timed_out:
        raise StageFailed(
            f"Stage {stage.name!r} timed out after {timeout:g} s; all its processes were killed"
        )
    if run.overflowed:
        raise StageFailed(f"Stage {stage.name!r} printed more than the output limit and was stopped")
    if stage.results:
        try:
            return stage_results(stage, run, directory)
        except command_results.ResultsError as e:
            raise StageFailed(
                f"Stage {stage.name!r} gave malformed results ({exit_text(run.code)}): {e}"
            ) from None
    if run.code != 0:
        raise StageFailed(f"Stage {stage.name!r} failed ({exit_text(run.code)})")
    return None


async def run_pipeline(task: GradingTask, runner: StageRunner, prepared: bool = False) -> GradingOutcome:
    """Run the task's stages with `runner`; the outcome carries the gradebook or why it failed.

    `prepared`: every stage's results directory was made (`prepare_stage`) before any stage ran, as
    a pod must have them when it is created; the Kubernetes executor then calls this once the pod
    has ended, its runner answering with what each container did. A runner raises `StageFailed`
    for a stage that cannot run at all (the pod stopped before it): that ends the pipeline.
    """
    started = time.monotonic()
    try:
        spec = command_spec.read(task.job_dir / "source")
    except command_spec.SpecError as e:
        return GradingOutcome(False, reason=f"Could not grade: {e}")
    logs: list[str] = []
    stages: list[dict[str, Any]] = []
    results: dict[str, Any] | None = None
    failures: list[str] = []
    for index, stage in enumerate(spec.stages):
        timeout = stage.timeout or task.limits.timeout
        directory = results_dir(task.job_dir, index) if prepared else prepare_stage(task.job_dir, index)
        try:
            run = await runner(stage, index, timeout)
        except StageFailed as e:
            logs.append(f"== {e}\n")
            return _failed(str(e), logs, started)
        logs.append(f"== stage {stage.name} ({exit_text(run.code)}, {run.seconds:.2f} s)\n{run.output}")
        stages.append({"name": stage.name, "exit_code": run.code, "duration_s": round(run.seconds, 3),
                       "timed_out": run.timed_out})  # fmt: skip
        try:
            found = judge(stage, run, timeout, directory)
        except StageFailed as e:
            failures.append(str(e))
            logs.append(f"== {e}\n")
            if not stage.continue_on_failure:
                return _failed(str(e), logs, started)
            continue
        results = found if found is not None else results
    if results is None:
        return _failed(failures[-1] if failures else "No stage gave results", logs, started)
    elapsed = time.monotonic() - started
    gradebook = command_results.to_gradebook(results, round(elapsed, 3), stages)
    output = task.job_dir / "output"
    (output / "gradebook.json").write_text(json.dumps(gradebook))
    return GradingOutcome(
        True, gradebook=gradebook, logs=_log_text(logs), exit_code=0, runner_seconds=elapsed
    )


def _failed(reason: str, logs: list[str], started: float) -> GradingOutcome:
    return GradingOutcome(
        False, logs=_log_text(logs), reason=reason, runner_seconds=time.monotonic() - started
    )


def _log_text(parts: list[str]) -> str:
    return cap_text("\n".join(parts).encode())

"""The executor interface: run `grader-convert autograde` on a staged job directory, somewhere.

A worker (`worker.py`) stages `<data>/jobs/<job id>/{submission,source,output}` from git
(`storage/staging.py`), hands the executor a :class:`GradingTask`, and gets back a
:class:`GradingOutcome`. Executors differ only in where the command runs (a local sandbox, a
Kubernetes pod); staging, collecting the gradebook and writing results are shared, so every
executor yields the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Dict, Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .. import safejson

# Exit codes of `grader-convert autograde`.
EXIT_GRADED = 0
EXIT_DISK_LIMIT = 3
# Where a job's kernels work on their copy of the submission: the job's size-limited scratch
# (a tmpfs in the local sandboxes, an emptyDir in a pod).
WORK_DIR = "/tmp/job"
# Never trust more than this much of what a job writes for the service to read.
MAX_GRADEBOOK_BYTES = 16 * 1024 * 1024
MAX_LOG_BYTES = 256 * 1024


@dataclass(frozen=True)
class GradingTask:
    job_id: int
    submission_id: int
    commit_hash: str
    lecture: str
    assignment: str
    user: str
    job_dir: Path
    # Effective settings: the executor's defaults overridden by the assignment's.
    settings: dict[str, Any] = field(default_factory=dict)
    # When the job was enqueued (seconds since the epoch), for the queue-wait metric.
    queued_at: float | None = None

    @property
    def cell_timeout(self) -> float:
        return float(self.settings["cell_timeout"])

    @property
    def timeout(self) -> float:
        return float(self.settings["timeout"])


StatusListener = Callable[[GradingTask, str | None], None]


@dataclass
class GradingOutcome:
    """What a grading attempt produced. `graded` is False when the job could not be graded."""

    graded: bool
    gradebook: dict[str, Any] | None = None
    logs: str = ""
    reason: str | None = None
    exit_code: int | None = None
    # Seconds the grading process itself ran (for the service-overhead figure).
    runner_seconds: float = 0.0
    # False when retrying cannot help (the submission is the problem, not the infrastructure).
    retryable: bool = False
    # Whether feedback HTML was generated for it.
    feedback: bool = False


def job_paths(task_root: str) -> tuple[str, str, str]:
    """Submission, source and output directories of a job directory seen at `task_root`."""
    return f"{task_root}/submission", f"{task_root}/source", f"{task_root}/output"


def autograde_command(
    python: str,
    paths: tuple[str, str, str],
    cell_timeout: float,
    timeout: float,
    *,
    work_dir: str | None = None,
    remove_source: bool = False,
    confine_kernels: bool = False,
) -> list[str]:
    """The grading command on the job's (submission, source, output) directories as the job sees them."""
    submission, source, output = paths
    command = [
        python, "-m", "grader_service.convert.cli", "autograde", "-i", submission, "-s", source, "-o", output,
        "--cell-timeout", f"{cell_timeout:g}", "--timeout", f"{timeout:g}",
    ]  # fmt: skip
    if work_dir is not None:
        command += ["--work-dir", work_dir]
    if remove_source:
        command.append("--remove-source")
    if confine_kernels:
        command.append("--confine-kernels")
    return command


def disk_limit_reason(limit: str, detail: str = "") -> str:
    """The reason a grading failed at its disk limit, for the instructor and the student alike."""
    text = (
        f"Grading stopped: the job reached its disk limit ({limit}) with the files the notebook wrote "
        "(in its working directory and /tmp). Write less, or delete files the notebook no longer needs."
    )
    return f"{text} ({detail})" if detail else text


def cap_text(data: bytes, limit: int = MAX_LOG_BYTES) -> str:
    """Decode at most `limit` bytes (the tail matters most for errors) with a visible notice."""
    if len(data) <= limit:
        return data.decode("utf-8", errors="replace")
    head, tail = data[: limit // 4], data[-(3 * limit) // 4 :]
    skipped = len(data) - len(head) - len(tail)
    return (
        head.decode(errors="replace")
        + f"\n[... {skipped} bytes of log omitted ...]\n"
        + tail.decode(errors="replace")
    )


def read_gradebook(output_dir: Path) -> dict[str, Any] | None:
    """The job's gradebook.json, if present, a regular file, within size and valid JSON."""
    path = output_dir / "gradebook.json"
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_GRADEBOOK_BYTES:
            return None
        # Written inside the sandbox: as untrusted as the submission, so its depth is bounded too.
        value = safejson.loads(path.read_bytes(), safejson.MAX_NOTEBOOK_DEPTH)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class GradingRefused:
    """Why an executor will not run jobs on this machine, and what would change that.

    The service still starts and accepts submissions (they stay queued); /health and the log say
    this, so an admin finds out from the service rather than from student code run unprotected.
    """

    reason: str
    fix: str


class AutogradeExecutor(LoggingConfigurable):
    """Base class: defaults for the per-assignment settings, and the run interface."""

    cell_timeout = Float(30.0, help="Default seconds a single cell may run.").tag(config=True)
    timeout = Float(600.0, help="Default seconds a whole submission may take to grade.").tag(config=True)
    memory_limit = Unicode(
        "2Gi", help="Default memory limit of a grading job (bytes or a quantity like '2Gi')."
    ).tag(config=True)
    cpu_limit = Float(1.0, help="Default CPU limit of a grading job, in cores.").tag(config=True)
    disk_limit = Unicode(
        "1Gi",
        help="Default disk space a grading job may write, in total (bytes or a quantity like '512Mi'): the "
        "notebook's working directory, /tmp, /var/tmp and /dev/shm. Locally a tmpfs of this size, so it "
        "is memory (or swap) while the job runs; a Kubernetes pod gets it as its ephemeral-storage limit "
        "and emptyDir sizeLimit. A job that fills it stops with a 'disk limit' reason.",
    ).tag(config=True)
    max_output_bytes = Integer(1_000_000, help="Cap on each cell's output kept in the graded notebook.").tag(
        config=True
    )
    extra_env = Dict(help="Extra environment variables for the grading process.").tag(config=True)

    name = "base"
    # Set by the scheduler: where report_status sends what a running job waits for.
    status_listener: StatusListener | None = None
    # What isolates a job from the service (named by /health and the start-up log); set by start().
    sandbox = "none"
    # Set by start() when jobs must not run here: no worker claims a job while it is set.
    refused: GradingRefused | None = None

    def effective_settings(self, assignment_settings: dict[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "cell_timeout": self.cell_timeout,
            "timeout": self.timeout,
            "memory": self.memory_limit,
            "cpu": self.cpu_limit,
            "disk": self.disk_limit,
        }
        settings.update({k: v for k, v in assignment_settings.items() if v is not None})
        return settings

    def report_status(self, task: GradingTask, detail: str | None) -> None:
        """Say why a running job is not progressing (an image pull, no free node), or None once it is.

        The scheduler records it as the submission's status detail, which instructors see; call it
        when the reason changes, not on every look.
        """
        if self.status_listener is not None:
            self.status_listener(task, detail)

    async def start(self) -> None:
        """Check the environment before jobs run: set `sandbox`, or `refused` if jobs must not run."""

    async def stop(self) -> None:
        """Stop every running job's process or pod."""

    async def run(self, task: GradingTask) -> GradingOutcome:
        raise NotImplementedError

    async def reconcile(self, task: GradingTask, runner_name: str | None) -> GradingOutcome | None:
        """After a restart: the outcome of a job a previous process started, or None to re-run it."""
        return None

    async def cleanup_orphans(self, live_job_ids: set[int]) -> list[str]:
        """After reconciling: remove processes or pods of jobs not in `live_job_ids`; their names."""
        return []

    def runner_name(self, task: GradingTask) -> str:
        """The name of the process or pod running the task, recorded on the job."""
        return f"job-{task.job_id}"


def parse_quantity(value: str | int | float) -> int:
    """Bytes from a Kubernetes-style quantity ('512Mi', '2G', '1e9') or a number."""
    if isinstance(value, int | float):
        return int(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9,
             "T": 10**12}  # fmt: skip
    text = value.strip()
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))

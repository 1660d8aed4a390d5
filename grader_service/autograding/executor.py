"""The executor interface: run `grader-convert autograde` on a staged job directory, somewhere.

A worker (`worker.py`) stages `<data>/jobs/<job id>/{submission,source,output}` from git
(`storage/staging.py`), hands the executor a :class:`GradingTask`, and gets back a
:class:`GradingOutcome`. Executors differ only in where the command runs (a local sandbox, a
Kubernetes pod); staging, collecting the gradebook and writing results are shared, so every
executor yields the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, Unicode, observe
from traitlets.config import LoggingConfigurable

from .. import safejson
from ..convert.options import DEFAULT_CELL_TIMEOUT, DEFAULT_OUTPUT_LIMIT, AutogradeOptions

# Exit codes of `grader-convert autograde`.
EXIT_GRADED = 0
EXIT_DISK_LIMIT = 3
# Where a job's kernels work on their copy of the submission: the job's size-limited scratch
# (a tmpfs in the local sandboxes, an emptyDir in a pod).
WORK_DIR = "/tmp/job"
# Never trust more than this much of what a job writes for the service to read.
MAX_GRADEBOOK_BYTES = 16 * 1024 * 1024
MAX_LOG_BYTES = 256 * 1024


# The executors' defaults for a job's limits (`c.AutogradeExecutor.timeout`, `.memory_limit`, ...).
DEFAULT_TIMEOUT = 600.0
DEFAULT_MEMORY = "2Gi"
DEFAULT_CPU = 1.0
DEFAULT_DISK = "1Gi"


@dataclass(frozen=True)
class JobLimits:
    """One job's limits: the executor's configured defaults, overridden by the assignment's settings.

    The fields are named as the assignment's settings (`cell_timeout`, `timeout`, `memory`, `cpu`,
    `disk`, `image`), each overriding the executor's trait of that name (`memory_limit` for `memory`).
    """

    cell_timeout: float = DEFAULT_CELL_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT
    memory: str | int | None = DEFAULT_MEMORY  # bytes or a quantity ('2Gi'); None: no limit (a pod)
    cpu: float | str | None = DEFAULT_CPU  # cores, or a quantity ('500m')
    disk: str | int | None = DEFAULT_DISK  # what the job may write, in total
    image: str | None = None  # the grading image (Kubernetes); None: the executor's


@dataclass(frozen=True)
class GradingTask:
    """One job handed to an executor: what to grade, where it is staged, within which limits."""

    job_id: int
    submission_id: int
    commit_hash: str
    lecture: str
    assignment: str
    user: str
    job_dir: Path
    limits: JobLimits = field(default_factory=JobLimits)
    # What staging exports from git: the submission's repository and the assignment's source.
    assignment_id: int = 0
    user_id: int = 0
    source_commit: str = ""
    # When the job was enqueued (seconds since the epoch), for the queue-wait metric.
    queued_at: float | None = None
    # The assignment's kind (`states.AssignmentKind`): a command assignment runs grader.yaml's stages.
    kind: str = "notebook"


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

    cell_timeout = Float(DEFAULT_CELL_TIMEOUT, help="Default seconds a single cell may run.").tag(config=True)
    timeout = Float(DEFAULT_TIMEOUT, help="Default seconds a whole submission may take to grade.").tag(
        config=True
    )
    memory_limit = Unicode(
        DEFAULT_MEMORY, help="Default memory limit of a grading job (bytes or a quantity like '2Gi')."
    ).tag(config=True)
    cpu_limit = Float(DEFAULT_CPU, help="Default CPU limit of a grading job, in cores.").tag(config=True)
    disk_limit = Unicode(
        DEFAULT_DISK,
        help="Default disk space a grading job may write, in total (bytes or a quantity like '512Mi'): the "
        "notebook's working directory, /tmp, /var/tmp and /dev/shm. Locally a tmpfs of this size, so it "
        "is memory (or swap) while the job runs; a Kubernetes pod gets it as its ephemeral-storage limit "
        "and emptyDir sizeLimit. A job that fills it stops with a 'disk limit' reason.",
    ).tag(config=True)
    output_limit = Integer(
        DEFAULT_OUTPUT_LIMIT,
        help="Bytes of each cell's output kept in the graded notebook (`grader-convert autograde --output-limit`).",
    ).tag(config=True)
    max_output_bytes = Integer(
        None, allow_none=True, help="Deprecated: the former name of `output_limit`, which it sets."
    ).tag(config=True)
    extra_env = Dict(help="Extra environment variables for the grading process.").tag(config=True)
    allow_network = Bool(
        False,
        help="Let a command assignment's stage use the network when its grader.yaml asks for it "
        "(`network: true`). Off: every stage has loopback only, whatever grader.yaml says.",
    ).tag(config=True)
    stage_output_limit = Integer(
        64 * 1024 * 1024,
        help="Bytes a command assignment's stage may print (stdout and stderr) before it is stopped and the "
        "grading fails; the log keeps its head and tail only.",
    ).tag(config=True)

    name = "base"
    # Set by the scheduler: where report_status sends what a running job waits for.
    status_listener: StatusListener | None = None
    # What isolates a job from the service (named by /health and the start-up log); set by start().
    sandbox = "none"
    # Set by start() when jobs must not run here: no worker claims a job while it is set.
    refused: GradingRefused | None = None

    @observe("max_output_bytes")
    def _deprecated_output_limit(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:
            self.log.warning("%s.max_output_bytes is deprecated: use output_limit", type(self).__name__)
            self.output_limit = change["new"]

    def job_limits(self, assignment_settings: dict[str, Any]) -> JobLimits:
        """A job's limits: this executor's defaults, overridden by the assignment's settings."""
        values: dict[str, Any] = {
            "cell_timeout": self.cell_timeout,
            "timeout": self.timeout,
            "memory": self.memory_limit,
            "cpu": self.cpu_limit,
            "disk": self.disk_limit,
        }
        names = {f.name for f in fields(JobLimits)}
        values.update({k: v for k, v in assignment_settings.items() if k in names and v is not None})
        values["cell_timeout"], values["timeout"] = float(values["cell_timeout"]), float(values["timeout"])
        return JobLimits(**values)

    def autograde_options(self, task: GradingTask, **where: Any) -> AutogradeOptions:
        """The job's `grader-convert autograde` options; `where` says where it runs (its work dir, ...)."""
        limits = task.limits
        return AutogradeOptions(
            cell_timeout=limits.cell_timeout, timeout=limits.timeout, output_limit=self.output_limit, **where
        )

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

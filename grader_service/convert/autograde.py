"""`autograde`: run a submission against the instructor's source and score it.

Per notebook of the source:

0. read the instructor's source into memory (and, with `remove_source`, delete the job's copy of
   it) before any kernel starts; with a `work_dir`, copy the submission there: the kernels work
   on that copy, on the job's size-limited scratch filesystem, and the grading stops with
   `DiskLimitReached` once that filesystem is full;
1. read the submission (outputs dropped on read: they are never trusted) -- a missing or
   unreadable notebook scores 0 on every test and is reported, the others are still graded;
2. reconcile it with the source (`preprocessors.reconcile`): instructor's test and locked cells
   restored, re-inserted, repaired; notes on everything that was tampered with;
3. build the execution plan (`guard.build_plan`): the cells plus guard, mutation and canary steps;
4. execute it in a fresh kernel (`kernel.GradingClient`) whose working directory is the
   notebook's directory in the submission (or in its copy), with per-cell and total timeouts and
   capped outputs; Landlock fences the kernel off the source and output directories (`confine`),
   and inotify watches the output directory, and the source where no fence keeps the kernel out
   (`watch`: graders sharing a source never read it while such a kernel runs, `source_lock`);
5. score the test cells (`scoring`), then apply the integrity verdicts: a failed canary, a test
   that passes with wrong answers, or the kernel touching the instructor's files zeroes the
   affected tests with a note;
6. kill the kernel's process group and anything it left behind (`processes`).

Only then, with no student process left, the executed notebooks and `gradebook.json` (schema in
`gradebook`) are written to the output directory. The source is read into memory before any kernel
starts and the output directory is written after the last one is gone, so student code never sees
either being used.

The directories may be given as `/proc/self/fd/N`: directories the executor opened for this process
(the sandboxes do so), which nothing else in the sandbox can reach by any path.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from ..states import KernelOutcome
from . import cells as nbcells
from . import confine, gradebook, processes, source_lock
from .errors import DiskLimitReached, GradingError, SourceValidationError, UnreadableNotebookError
from .forked_kernel import KernelLauncher
from .guard import Plan, bound_names, build_plan
from .kernel import CellRecord, GradingClient, KernelEnvironment, KernelUnresponsive, kill_kernel_tree
from .notebooks import atomic_write_text, iter_other_files, notebook_name, read_notebook, write_notebook
from .preprocessors.base import Context, run_pipeline
from .preprocessors.reconcile import describe_source, reconcile_pipeline
from .release import load_source
from .scoring import canary_error_held, canary_value_held, mutant_passed, score_record
from .visibility import student_error
from .watch import DirectoryWatch, FileEvent, tree

log = logging.getLogger(__name__)

# Integrity steps (canaries, guard calls) get their own short budget: they run even when the
# total time is used up, so that tests already run can still be verified.
INTEGRITY_TIMEOUT = 10.0
# The work directory's filesystem counts as full below this much free space or these many free
# inodes: a write the size of a small notebook would fail.
DISK_FULL_BYTES = 1 << 20
DISK_FULL_FILES = 16
# A kernel that cannot be recovered after a timeout is replaced by a fresh one this many times per
# notebook at most; after that, grading of the notebook stops.
MAX_KERNEL_RESTARTS = 3


@dataclass
class Settings:
    """Everything that tunes one autograde run (the CLI flags)."""

    cell_timeout: float = 30.0
    timeout: float | None = None
    output_limit: int = 1_000_000
    mutation_runs: bool = True
    guard: bool = True  # False only to demonstrate what the guard prevents (tests)
    watch_files: bool = True
    # Landlock each kernel off the source and output directories, where the machine has Landlock
    # (see `confine.fence`). False only to show the file watch at work without it (tests).
    fence_kernels: bool = True
    interrupt_grace: float = 5.0
    max_message_size: int = 64 * 1024 * 1024
    kernel_python: str | None = None
    kernel_env: dict[str, str] | None = None  # extra environment for the kernel (HOME is private)
    # Where kernels work: the submission is copied there (the job's size-limited scratch).
    work_dir: Path | None = None
    # Other size-limited places the job may write (a separate /dev/shm): full, they stop it too.
    scratch: tuple[Path, ...] = ()
    # Delete the source directory once read (the executors stage a private copy per job).
    remove_source: bool = False
    # Landlock each kernel away from the job's directories (see `confine`): for a pod, whose kernels
    # would otherwise see the job's volume.
    confine_kernels: bool = False
    iopub_timeout: float = 10.0
    startup_timeout: float = 60.0
    # Set by the fork server: kernels are forked from it instead of started as new processes.
    kernel_launcher: KernelLauncher | None = None


@dataclass(frozen=True)
class Watched:
    """What the grader watches while a kernel runs (`watch`).

    `source_tree`: the source's directories, listed while the grader read the source (under the
    source lock), when the kernel could reach them; `source` then keys the lock held meanwhile.
    """

    source: Path | None = None
    source_tree: tuple[Path, ...] = ()
    output: Path | None = None


@dataclass
class Execution:
    """What happened when a plan ran."""

    records: dict[int, CellRecord] = field(default_factory=dict)  # step index -> record
    internal: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # step index -> result
    events: dict[int, list[FileEvent]] = field(default_factory=dict)  # step index -> file events
    kernel: KernelOutcome = KernelOutcome.OK
    stopped_at: int | None = None  # step index where the kernel died / was killed / time ran out
    # Step indices where a timed-out kernel did not recover and was replaced by a fresh one.
    restarts: list[int] = field(default_factory=list)
    duration: float = 0.0
    processes_killed: int = 0


def autograde(
    submission_dir: Path,
    source_dir: Path,
    output_dir: Path,
    cell_timeout: float = 30,
    timeout: float | None = None,
    output_limit: int = 1_000_000,
    **options: Any,
) -> dict[str, Any]:
    """Grade `submission_dir` against `source_dir`; write into `output_dir`; return the summary.

    Raises GradingError when grading cannot be carried out (no valid source, kernel cannot start,
    overlapping directories); a bad submission is graded (with zeros), never an error.
    """
    settings = Settings(cell_timeout=cell_timeout, timeout=timeout, output_limit=output_limit, **options)
    return asyncio.run(_autograde(Path(submission_dir), Path(source_dir), Path(output_dir), settings))


async def _autograde(
    submission_dir: Path, source_dir: Path, output_dir: Path, settings: Settings
) -> dict[str, Any]:
    started = time.monotonic()
    submission_dir, source_dir, output_dir = (_absolute(p) for p in (submission_dir, source_dir, output_dir))
    _check_directories(submission_dir, source_dir, output_dir)
    protected = [submission_dir, source_dir, output_dir]
    fenced = _fenced_off(settings, [source_dir, output_dir])
    watch_source = settings.watch_files and not settings.remove_source and source_dir not in fenced
    # Graders sharing a source their kernels can reach: none reads it while such a kernel runs.
    reachable = source_dir not in fenced
    with source_lock.reading(source_dir) if reachable else contextlib.nullcontext():
        try:
            sources = load_source(source_dir)
        except SourceValidationError as e:
            raise GradingError(str(e)) from None
        file_notes = _compare_files(source_dir, submission_dir)
        source_tree = tuple(tree(source_dir)) if watch_source else ()
        if settings.remove_source:
            _remove(source_dir)
    watched = Watched(
        source_dir if source_tree else None, source_tree, output_dir if settings.watch_files else None
    )
    if settings.work_dir is not None:
        submission_dir = _working_copy(submission_dir, _absolute(settings.work_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    processes.become_subreaper()
    deadline = started + settings.timeout if settings.timeout else None

    notebooks: dict[str, dict[str, Any]] = {}
    executed: dict[Path, NotebookNode] = {}
    hidden_tests_ran = False
    for rel, source_nb in sources.items():
        name = notebook_name(rel)
        result, nb = await _grade_notebook(
            rel, source_nb, submission_dir, watched, settings, deadline, protected, fenced,
            after_hidden_tests=hidden_tests_ran,
        )  # fmt: skip
        # A later notebook's kernel shares the job's files with this one: what this one kept of its
        # hidden tests there, the next could print before running any of its own.
        hidden_tests_ran = hidden_tests_ran or result.get("withheld_from_cell") is not None
        if file_notes:
            result.setdefault("notes", []).extend(file_notes)
        notebooks[name] = result
        if nb is not None:
            executed[rel] = nb

    book = {
        "schema": gradebook.SCHEMA,
        "kind": "autograde",
        "settings": {
            "cell_timeout": settings.cell_timeout,
            "timeout": settings.timeout,
            "output_limit": settings.output_limit,
        },
        "notebooks": notebooks,
    }
    gradebook.totals(book)
    book["duration_s"] = round(time.monotonic() - started, 3)
    # Written only now: no kernel or student process is left (each was killed with its tree).
    for rel, nb in executed.items():
        write_notebook(nb, output_dir / rel)
    gradebook_path = output_dir / "gradebook.json"
    atomic_write_text(gradebook_path, json.dumps(book, indent=1, ensure_ascii=False) + "\n")
    return {
        "status": "graded",
        "score": book["score"],
        "max_score": book["max_score"],
        "needs_manual_grading": book["needs_manual_grading"],
        "tampering": book["tampering"],
        "notebooks": {
            name: {"status": nb["status"], "score": nb["score"], "max_score": nb["max_score"]}
            for name, nb in notebooks.items()
        },
        "gradebook": str(gradebook_path),
        "duration_s": book["duration_s"],
    }


def _absolute(path: Path) -> Path:
    """The path made absolute; a directory handed over as `/proc/self/fd/N` stays as it is.

    (Resolving that link would give the directory's path outside the sandbox, where it does not exist.)
    """
    if str(path).startswith("/proc/self/fd/"):
        os.set_inheritable(int(Path(path).parts[4]), False)  # no exec'd kernel inherits it
        return Path(path)
    return path.resolve()


def _fenced_off(settings: Settings, directories: list[Path]) -> list[Path]:
    """Those of the job's `directories` that Landlock will keep every kernel of this grading from."""
    if settings.kernel_launcher is not None:
        return []  # a forked kernel's sandbox has no path to the job's directories at all
    if not (settings.confine_kernels or settings.fence_kernels) or confine.abi_version() == 0:
        return []
    if settings.confine_kernels:
        return list(directories)
    # A directory handed over as /proc/self/fd/N (a sandbox) has no path the kernel could open.
    return [d for d in directories if not str(d).startswith("/proc/self/fd/")]


def _remove(source_dir: Path) -> None:
    """Delete the job's copy of the source, read into memory already: no kernel can then open it."""
    try:
        shutil.rmtree(source_dir)
    except OSError as e:
        raise GradingError(f"the source directory could not be removed before grading: {e}") from None


def _working_copy(submission_dir: Path, work_dir: Path) -> Path:
    """Copy the submission into `work_dir/submission`, where the kernels will work; that copy."""
    target = work_dir / "submission"
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(submission_dir, target, symlinks=True)
    except OSError as e:
        check_disk([work_dir])
        raise GradingError(f"the submission could not be copied to the work directory: {e}") from None
    return target


def check_disk(places: list[Path]) -> None:
    """Raise DiskLimitReached when the filesystem of one of `places` (the job's scratch) is full."""
    for place in places:
        try:
            stat = os.statvfs(place)
        except OSError:
            continue
        if stat.f_bavail * stat.f_frsize < DISK_FULL_BYTES or (
            stat.f_files and stat.f_favail < DISK_FULL_FILES
        ):
            size = stat.f_blocks * stat.f_frsize / 2**20
            raise DiskLimitReached(
                f"the job used up its disk space ({place} is full: {size:.0f} MiB, at most "
                f"{stat.f_files:,} files): grading stopped"
            )


def _scratch(settings: Settings) -> list[Path]:
    return [settings.work_dir, *settings.scratch] if settings.work_dir is not None else list(settings.scratch)


def _check_directories(submission_dir: Path, source_dir: Path, output_dir: Path) -> None:
    """The kernel sees the submission directory; the other two must not be inside it (or vice versa)."""
    if not submission_dir.is_dir():
        raise GradingError(f"submission directory {submission_dir} does not exist")
    pairs = [("source", source_dir), ("output", output_dir)]
    for label, other in pairs:
        if (
            other == submission_dir
            or other.is_relative_to(submission_dir)
            or submission_dir.is_relative_to(other)
        ):
            raise GradingError(
                f"the {label} directory must not contain or be inside the submission directory"
            )
    if (
        output_dir == source_dir
        or output_dir.is_relative_to(source_dir)
        or source_dir.is_relative_to(output_dir)
    ):
        raise GradingError("the output directory must not contain or be inside the source directory")


def _compare_files(source_dir: Path, submission_dir: Path) -> list[dict[str, Any]]:
    """Notes on instructor-provided files (data, helpers) that the submission changed."""
    notes = []
    for rel in iter_other_files(source_dir):
        theirs = submission_dir / rel
        if not theirs.is_file():
            continue
        if _sha256(source_dir / rel) != _sha256(theirs):
            notes.append(
                {
                    "cell": None,
                    "kind": "integrity",
                    "message": f"the submitted copy of '{rel.as_posix()}' differs from the instructor's "
                    "(the notebook ran with the submitted copy)",
                }
            )
    return notes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- one notebook -------------------------------------------------------------------------------


async def _grade_notebook(
    rel: Path,
    source_nb: NotebookNode,
    submission_dir: Path,
    watched: Watched,
    settings: Settings,
    deadline: float | None,
    protected: list[Path],
    fenced: list[Path],
    after_hidden_tests: bool = False,
) -> tuple[dict[str, Any], NotebookNode | None]:
    name = notebook_name(rel)
    base = gradebook.skeleton_notebook(source_nb, rel)
    path = submission_dir / rel
    if not path.exists():
        return _ungraded(base, "missing", f"the submission has no {rel.as_posix()}"), None
    try:
        nb = read_notebook(path, keep_outputs=False)
    except UnreadableNotebookError as e:
        return _ungraded(base, "unreadable", f"{rel.as_posix()} is not a readable notebook: {e.reason}"), None

    ctx = Context(name, data={"source": describe_source(source_nb)})
    nb = run_pipeline(nb, ctx, reconcile_pipeline())
    solution_names: set[str] = set()
    for s in ctx.data["source"]:
        if s.role in ("solution", "manual") and s.cell.cell_type == "code":
            solution_names |= bound_names(nbcells.source_text(s.cell))
    plan = build_plan(
        nb,
        solution_names,
        mutation_runs=settings.mutation_runs,
        guard=settings.guard,
        forked_kernel=settings.kernel_launcher is not None,
    )
    check_disk(_scratch(settings))
    execution = await execute_plan(
        nb, plan, path.parent, watched, settings, deadline, protected=protected, fenced=fenced
    )
    result = _score(base, nb, plan, execution, ctx, settings, after_hidden_tests)
    _annotate(nb, result)
    return result, nb


def _ungraded(base: dict[str, Any], status: str, message: str) -> dict[str, Any]:
    result = dict(base, status=status, message=message, notes=[], execution={"kernel": "not-started"})
    for cell in result["cells"].values():
        cell.update(
            points=0.0,
            status="error",
            partial=False,
            error={
                "name": "MissingNotebook" if status == "missing" else "UnreadableNotebook",
                "message": message,
            },
            tampering=[],
            duration_s=None,
        )
    return gradebook.totals(result)


# ---- execution ----------------------------------------------------------------------------------


async def execute_plan(
    nb: NotebookNode,
    plan: Plan,
    cwd: Path,
    watched: Watched | None,
    settings: Settings,
    deadline: float | None,
    protected: list[Path] | None = None,
    fenced: list[Path] | None = None,
) -> Execution:
    """Run every step of `plan` in a new kernel; outputs land in `nb`'s cells.

    With `settings.confine_kernels`, the kernel cannot reach the `protected` directories; otherwise
    it cannot reach the `fenced` ones. While a kernel that could reach the watched source runs, the
    grader holds that source's lock (`source_lock.watching`), until the kernel's processes are gone.
    """
    with source_lock.watching(watched.source if watched is not None else None):
        return await _execute(nb, plan, cwd, watched, settings, deadline, protected or [], fenced or [])


async def _execute(
    nb: NotebookNode,
    plan: Plan,
    cwd: Path,
    watched: Watched | None,
    settings: Settings,
    deadline: float | None,
    protected: list[Path],
    fenced: list[Path],
) -> Execution:
    execution = Execution()
    started = time.monotonic()
    exec_cells: list[NotebookNode] = []
    cell_of_step: dict[int, int] = {}
    for i, step in enumerate(plan.steps):
        if step.sent_as_cell:
            if step.kind in ("cell", "test", "locked"):
                cell = nb.cells[step.cell_index]
                cell.outputs = []
            else:
                cell = _grader_cell(step.source)
            cell_of_step[i] = len(exec_cells)
            exec_cells.append(cell)
    # Not nbformat.v4.new_notebook: it validates the whole notebook against the JSON schema, and
    # these cells were validated when read (or are the grader's own).
    exec_nb = NotebookNode(nbformat=4, nbformat_minor=5, metadata=nb.metadata, cells=exec_cells)

    before = processes.descendants()
    env = KernelEnvironment.create(cwd, settings.kernel_python, settings.kernel_env)
    confinement = _confinement(settings, protected, fenced, [cwd, env.root])
    client = GradingClient(
        exec_nb,
        km=env.kernel_manager(settings.kernel_launcher),
        output_limit=settings.output_limit,
        interrupt_grace=settings.interrupt_grace,
        max_message_size=settings.max_message_size,
        allow_errors=True,
        iopub_timeout=settings.iopub_timeout,
        startup_timeout=settings.startup_timeout,
        shutdown_kernel="immediate",
        record_timing=False,
    )
    watch = DirectoryWatch() if settings.watch_files else None
    kernel = _KernelStarter(client, env, cwd, settings, confinement, before)
    try:
        await kernel.start()
        await _run_steps(
            client,
            plan,
            cell_of_step,
            exec_cells,
            execution,
            settings,
            deadline,
            watch,
            watched,
            kernel,
        )
    finally:
        execution.processes_killed = client.processes_killed + len(kill_kernel_tree(kernel.pgid, before))
        with contextlib.suppress(Exception):  # the kernel is dead either way
            await client.close_kernel()
        execution.processes_killed += len(kill_kernel_tree(None, before))
        if watch is not None:
            tail = watch.drain()
            if tail:
                execution.events.setdefault(len(plan.steps), []).extend(tail)
            watch.close()
        env.remove()
        execution.duration = time.monotonic() - started
    return execution


@dataclass
class _KernelStarter:
    """Starts the notebook's kernel, and replaces it when a timeout left it unresponsive."""

    client: GradingClient
    env: KernelEnvironment
    cwd: Path
    settings: Settings
    confinement: confine.Confinement | None
    before: set[int]
    pgid: int | None = None

    async def start(self) -> None:
        client = self.client
        try:
            # The kernel's own stdout/stderr go nowhere: they would reach the job's log, which
            # student code must not be able to write to (what it prints goes to the notebook).
            await client.async_start_new_kernel(
                cwd=str(self.cwd),
                env=self.env.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=self.confinement.apply if self.confinement is not None else None,
            )
            self.pgid = getattr(client.km.provisioner, "pgid", None)
            await client.async_start_new_kernel_client()
        except Exception as e:
            raise GradingError(f"the kernel could not be started: {type(e).__name__}: {e}") from None
        # What a timeout may kill: anything but the grader's processes and the kernel itself.
        client.spared_pids = self.before | {getattr(client.km.provisioner, "pid", None) or 0}

    async def restart(self) -> None:
        """Kill the kernel and everything the notebook started; start a fresh kernel in its place."""
        self.client.processes_killed += len(kill_kernel_tree(self.pgid, self.before))
        with contextlib.suppress(Exception):  # the kernel is dead either way
            await self.client.close_kernel()
        self.client.processes_killed += len(kill_kernel_tree(None, self.before))
        self.client.km = self.env.kernel_manager(self.settings.kernel_launcher)
        await self.start()


def _confinement(
    settings: Settings, protected: list[Path], fenced: list[Path], writable: list[Path]
) -> confine.Confinement | None:
    """The kernel's Landlock rules: `--confine-kernels`' (for a pod), else the fence, else none."""
    if settings.kernel_launcher is not None:
        return None  # (a forked kernel's sandbox has no path to the job's directories at all)
    abi = confine.abi_version()
    if settings.confine_kernels and abi == 0:
        log.warning("Landlock is not available here: kernels are not confined to their work directory")
    if abi == 0:
        return None
    if settings.confine_kernels:
        if settings.work_dir is not None:
            writable = [*writable, settings.work_dir]
        return confine.plan(protected, writable, abi)
    return confine.fence(fenced, abi) if fenced else None


async def _run_steps(
    client: GradingClient,
    plan: Plan,
    cell_of_step: dict[int, int],
    exec_cells: list[NotebookNode],
    execution: Execution,
    settings: Settings,
    deadline: float | None,
    watch: DirectoryWatch | None,
    watched: Watched | None,
    kernel: _KernelStarter,
) -> None:
    await _install_support(client, plan, execution, settings)
    if watch is not None and watched is not None:
        watch.add_directories("source", list(watched.source_tree))  # listed under the source lock
        if watched.output is not None:
            watch.add_tree("output", watched.output)
        watch.drain()

    count = 0
    time_up_group: int | None = None
    for i, step in enumerate(plan.steps[1:], start=1):
        if execution.kernel not in ("ok", "time-limit"):
            break
        if i in execution.internal:  # carried by the cell before it
            continue
        # Once time is up, only the integrity checks of the group that was running still run.
        finishing = step.kind in ("canary-error", "canary-value", "unstash") and step.group == time_up_group
        if execution.kernel == "time-limit" and not finishing:
            continue
        try:
            if step.internal:
                execution.internal[i] = await client.run_internal(step.call, INTEGRITY_TIMEOUT)
            else:
                budget = settings.cell_timeout
                if step.kind in ("canary-error", "canary-value", "mutant"):
                    budget = min(budget, INTEGRITY_TIMEOUT)
                elif deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        execution.kernel, execution.stopped_at, time_up_group = "time-limit", i, step.group
                        continue
                    budget = min(budget, remaining)
                if step.kind in ("cell", "test", "locked"):
                    count += 1
                following = plan.steps[i + 1] if i + 1 < len(plan.steps) else None
                carry = following.call if following is not None and following.internal else None
                rec = await client.run_cell(
                    exec_cells[cell_of_step[i]], cell_of_step[i], budget, count, carry=carry
                )
                execution.records[i] = rec
                if rec.carried is not None:
                    execution.internal[i + 1] = rec.carried
                if rec.status == "dead":
                    execution.kernel, execution.stopped_at = "died", i
                elif rec.status == "unresponsive":
                    execution.kernel, execution.stopped_at = "killed", i
                elif (
                    rec.status == "timeout"
                    and deadline is not None
                    and time.monotonic() >= deadline
                    and step.kind in ("cell", "test", "locked")
                ):
                    execution.kernel, execution.stopped_at, time_up_group = "time-limit", i, step.group
        except KernelUnresponsive:
            execution.kernel, execution.stopped_at = "killed", i
        except DeadKernelError:
            execution.kernel, execution.stopped_at = "died", i
        if watch is not None:
            events = watch.drain()
            if events:
                execution.events.setdefault(i, []).extend(events)
        if execution.kernel == "killed":
            await _replace_kernel(kernel, client, plan, execution, settings, deadline, i)
        check_disk(_scratch(settings))


async def _install_support(
    client: GradingClient, plan: Plan, execution: Execution, settings: Settings
) -> None:
    """Run the plan's setup step (the grader's kernel support) in a new kernel."""
    setup = plan.steps[0]
    status, text = await client.run_internal(setup.call, settings.startup_timeout)
    execution.internal[0] = (status, text)
    if status != "ok" or not _token_ok(text, setup.expect):
        raise GradingError(f"the grader's kernel support could not be installed: {text}")


async def _replace_kernel(
    kernel: _KernelStarter,
    client: GradingClient,
    plan: Plan,
    execution: Execution,
    settings: Settings,
    deadline: float | None,
    step: int,
) -> None:
    """After a timeout the kernel did not recover from: go on in a fresh kernel if time allows.

    The fresh kernel has none of the notebook's state: the tests it costs fail there, and their
    feedback says why (see `_score`). Student code gains nothing by it: every step after the
    timeout runs, guarded, as it would have in the old kernel. Only a notebook cell's timeout is
    forgiven this way: a kernel stuck in a mutation run, a canary or a guard call (where student
    code has no business running) stops the grading, so that hanging the checks of one group
    cannot be repeated group after group. So do restarts used up and the total time being over;
    `execution.kernel == "killed"` then says so.
    """
    out_of_time = deadline is not None and time.monotonic() >= deadline
    stuck_in_check = plan.steps[step].kind not in ("cell", "test", "locked")
    if (
        stuck_in_check
        or len(execution.restarts) >= MAX_KERNEL_RESTARTS
        or out_of_time
        or step + 1 >= len(plan.steps)
    ):
        kill_kernel_tree(kernel.pgid, kernel.before)
        return
    try:
        await kernel.restart()
        await _install_support(client, plan, execution, settings)
    except (GradingError, KernelUnresponsive, DeadKernelError) as e:
        log.warning("the kernel could not be restarted after a timeout: %s", e)
        return
    execution.restarts.append(step)
    execution.kernel, execution.stopped_at = "ok", None


def _grader_cell(source: str) -> NotebookNode:
    """A code cell for a mutation run or a canary, built without nbformat's schema validation."""
    return NotebookNode(
        cell_type="code", execution_count=None, metadata=NotebookNode(), source=source, outputs=[]
    )


def _token_ok(text: str | None, nonce: str) -> bool:
    try:
        value = ast.literal_eval(text or "")
    except (ValueError, SyntaxError):
        return False
    return isinstance(value, str) and (value == nonce or value.startswith(f"ok:{nonce}:"))


def _restored_items(text: str | None) -> list[str]:
    return _reported(text, "restored")


def _reported(text: str | None, key: str) -> list[Any]:
    """One list from a guard step's answer (`ok:<nonce>:<json>`); empty when it is not there."""
    try:
        value = ast.literal_eval(text or "")
        return list(json.loads(value.split(":", 2)[2]).get(key, []))
    except (ValueError, SyntaxError, IndexError, AttributeError, TypeError):
        return []


def _fakes(execution: Execution) -> list[tuple[str, str, str]]:
    """Values that faked a comparison in a protected cell (see `kernel_checks`): (grade id, message, detail)."""
    found = []
    for i in sorted(execution.internal):
        status, text = execution.internal[i]
        if status != "ok":
            continue
        for entry in _reported(text, "fakes"):
            if isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) for x in entry):
                found.append((entry[0], entry[1], entry[2]))
    return found


# ---- scoring ------------------------------------------------------------------------------------


def _step_label(plan: Plan, nb: NotebookNode, i: int) -> str:
    if i >= len(plan.steps):
        return "after the last cell"
    step = plan.steps[i]
    if step.cell_index is not None:
        gid = nbcells.grade_id(nb.cells[step.cell_index])
        where = f"cell #{step.cell_index + 1}"
        return f"{where} ('{gid}')" if gid else where
    return f"a grader check ({step.kind})"


def first_hidden_step(plan: Plan, nb: NotebookNode) -> int | None:
    """The plan step that first sends hidden-test code to the kernel: the taint point (see `visibility`)."""
    for i, step in enumerate(plan.steps):
        runs_cell_code = step.kind in ("test", "mutant") and step.cell_index is not None
        if runs_cell_code and nbcells.has_hidden_tests(nbcells.source_text(nb.cells[step.cell_index])):
            return i
    return None


def _score(
    base: dict[str, Any],
    nb: NotebookNode,
    plan: Plan,
    execution: Execution,
    ctx: Context,
    settings: Settings,
    after_hidden_tests: bool = False,
) -> dict[str, Any]:
    result = dict(base, status="graded", message=None)
    cells = result["cells"]
    notes = [n.as_dict() for n in ctx.notes]
    tamper: dict[str, list[str]] = {gid: [] for gid in cells}
    for note in notes:
        if note["cell"] in tamper and note["kind"] in ("tampering", "repair"):
            tamper[note["cell"]].append(note["message"])

    # From the taint point on, what the kernel produced may quote hidden tests (see `visibility`);
    # after another notebook's hidden tests ran in this job, from the start.
    if after_hidden_tests:
        taint, withheld_from = 0, 0
    else:
        taint = first_hidden_step(plan, nb)
        withheld_from = plan.steps[taint].cell_index if taint is not None else None
    result["withheld_from_cell"] = withheld_from

    test_steps: dict[str, int] = {}
    mutant_steps: dict[str, int] = {}
    for i, step in enumerate(plan.steps):
        if step.kind == "test" and step.grade_id:
            test_steps.setdefault(step.grade_id, i)
        elif step.kind == "mutant" and step.grade_id:
            mutant_steps.setdefault(step.grade_id, i)
    cell_of_gid: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        gid = (cell.metadata.get("grader") or {}).get("grade_id") or nbcells.grade_id(cell)
        if gid:
            cell_of_gid.setdefault(gid, index)

    stopped = _step_label(plan, nb, execution.stopped_at) if execution.stopped_at is not None else "a cell"
    stop_reason = {
        "died": ("error", "KernelDied", "the kernel died before this cell could run"),
        "killed": (
            "timeout",
            "KernelUnresponsive",
            f"the kernel could not be recovered after the timeout in {stopped} (it did not stop when "
            "interrupted) and was killed; this cell could not run",
        ),
        "time-limit": ("timeout", "TimeLimit", "the total time limit was reached before this cell ran"),
    }
    for gid, entry in cells.items():
        index = cell_of_gid.get(gid)
        entry["withheld"] = withheld_from is not None and index is not None and index >= withheld_from
        if entry["kind"] != "test":
            entry.update(points=None, status="needs-manual", partial=False, error=None, duration_s=None)
            continue
        i = test_steps.get(gid)
        rec = execution.records.get(i) if i is not None else None
        if rec is None:
            status, ename, message = stop_reason.get(
                execution.kernel, ("error", "NotRun", "the cell did not run")
            )
            entry.update(points=0.0, status=status, partial=False, error={"name": ename, "message": message})
            entry["duration_s"] = None
            continue
        outcome = score_record(rec, entry["max_points"], settings.cell_timeout)
        entry.update(
            points=outcome.points,
            status=outcome.status,
            partial=outcome.partial,
            error={"name": outcome.error[0], "message": outcome.error[1]} if outcome.error else None,
            duration_s=round(rec.duration, 3),
        )
        if outcome.error is not None and outcome.error_from_kernel and entry["withheld"]:
            source = nbcells.source_text(nb.cells[plan.steps[i].cell_index])
            entry["student_error"] = student_error(*outcome.error, source)

    def note(cell: str | None, kind: str, message: str, detail: str | None = None) -> None:
        """A note: `message` is the grader's own words; `detail`, what the kernel said (staff only)."""
        entry: dict[str, Any] = {"cell": cell, "kind": kind, "message": message}
        if detail:
            entry["detail"] = detail
        notes.append(entry)

    # Tests that ran in a fresh kernel, after one did not recover from a timeout, and failed there:
    # the definitions made before the timeout were lost with the old kernel.
    for gid, i in test_steps.items():
        restart = max((r for r in execution.restarts if r < i), default=None)
        entry = cells.get(gid)
        if restart is None or entry is None or entry["points"] >= entry["max_points"]:
            continue
        note(
            gid,
            "timeout",
            f"'{gid}' ran in a new kernel: the kernel could not be recovered after the timeout in "
            f"{_step_label(plan, nb, restart)} (it did not stop when interrupted), so what the notebook "
            "had defined before was lost",
        )

    def zero(gid: str, message: str, kind: str = "tampering", detail: str | None = None) -> None:
        entry = cells[gid]
        if entry.get("points"):
            entry["points"] = 0.0
        entry["status"] = entry["status"] if entry["status"] != "passed" else "error"
        if entry["error"] is None:
            entry["error"] = {"name": "IntegrityCheck", "message": message}
        tamper[gid].append(message)
        note(gid, kind, message, detail)

    # Mutation runs: what a test awards with wrong answers substituted is not earned by the
    # answers. A test passing outright that way is being executed dishonestly (scored 0); a test
    # that gives some credit regardless (e.g. for a function merely existing) loses that part.
    for gid, i in mutant_steps.items():
        rec = execution.records.get(i)
        if rec is None or gid not in cells or not mutant_passed(rec):
            continue
        free = score_record(rec, cells[gid]["max_points"]).points
        entry = cells[gid]
        if free >= entry["max_points"] or not entry.get("points"):
            zero(
                gid,
                f"'{gid}' passed even with wrong answers substituted: its execution was tampered with; scored 0",
            )
        else:
            entry["points"] = max(0.0, round(entry["points"] - free, 6))
            message = (
                f"'{gid}' awards {free:g} points even with wrong answers substituted; those were deducted"
            )
            tamper[gid].append(message)
            note(gid, "integrity", message)

    # Values that claimed a comparison their contents contradict (kernel_checks): the test failed
    # on the trusted comparison already; it scores 0 whatever else it did, with a note.
    for gid, message, detail in _fakes(execution):
        if gid in cells and cells[gid]["kind"] == "test":
            zero(gid, f"'{gid}': {message}", detail=detail)

    # Guard and canaries, per protected group. What the kernel answered goes into the detail.
    restored: list[str] = []
    for group, gids in plan.groups.items():
        problems: list[str] = []
        details: list[str] = []
        ran_all = True
        for i, step in enumerate(plan.steps):
            if step.group != group:
                continue
            if step.internal:
                res = execution.internal.get(i)
                if res is None:
                    ran_all = False
                elif step.kind != "checkpoint" and (res[0] != "ok" or not _token_ok(res[1], step.expect)):
                    problems.append(f"grader guard step '{step.kind}' did not run as sent")
                    details.append(f"{step.kind}: {(res[1] or '')[:200]}")
                elif step.kind == "pre":
                    restored.extend(_restored_items(res[1]))
            elif step.kind.startswith("canary"):
                rec = execution.records.get(i)
                if rec is None or rec.status in ("dead", "unresponsive", "not-run"):
                    ran_all = False
                elif step.kind == "canary-error" and not canary_error_held(rec, step.expect):
                    problems.append("a canary cell that must fail with a known error did not")
                elif step.kind == "canary-value" and not canary_value_held(rec, step.expect):
                    problems.append("a canary cell displayed something else than the number it computes")
                    details.append(f"displayed {rec.results!r} instead of [{step.expect!r}]")
        if problems:
            for gid in gids:
                if gid in cells:
                    zero(
                        gid,
                        f"integrity checks around '{gid}' failed: {'; '.join(problems)}; scored 0",
                        detail="; ".join(details),
                    )
        elif not ran_all and any(execution.records.get(test_steps.get(gid, -1)) for gid in gids):
            note(
                None,
                "integrity",
                f"the canary checks after {', '.join(gids)} could not run ({execution.kernel}); "
                "scores of earlier cells stand",
            )
    if restored:
        unique = sorted(set(restored))
        note(
            None,
            "integrity",
            "kernel state changed by the notebook was set aside while protected cells ran",
            detail=", ".join(unique[:40]),
        )

    # Files: reading the instructor's source (or writing into the output directory). Opening a
    # file there zeroes every test from that point on; listing a directory only reveals names,
    # and is what an unrelated process on a shared machine might do, so it is only noted.
    first_source_access: int | None = None
    for i in sorted(execution.events):
        for event in execution.events[i]:
            where = _step_label(plan, nb, i)
            if event.area == "output":
                note(
                    None,
                    "tampering",
                    f"the kernel touched the output directory during {where} "
                    "(the grader's files were written afterwards)",
                    detail=event.describe(),
                )
            elif event.is_dir:
                note(None, "integrity", f"source directory listed during {where}", detail=event.describe())
            elif first_source_access is None:
                first_source_access = i
                note(
                    None,
                    "tampering",
                    f"the kernel accessed the instructor's files during {where}",
                    detail=event.describe(),
                )
    if first_source_access is not None:
        for gid, i in test_steps.items():
            if i >= first_source_access and gid in cells:
                zero(gid, f"'{gid}' ran after the kernel read the instructor's files; scored 0")

    for gid, entry in cells.items():
        entry["tampering"] = tamper.get(gid, [])
    result["notes"] = _dedupe(notes)
    result["execution"] = {
        "kernel": {"time-limit": "ok"}.get(execution.kernel, execution.kernel),
        "time_limit_reached": execution.kernel == "time-limit",
        "duration_s": round(execution.duration, 3),
        "cells_run": sum(
            1
            for i, s in enumerate(plan.steps)
            if s.kind in ("cell", "test", "locked") and i in execution.records
        ),
        "processes_killed": execution.processes_killed,
        "kernel_restarts": len(execution.restarts),
    }
    return gradebook.totals(result)


def _dedupe(notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = set()
    out = []
    for note in notes:
        key = (note["cell"], note["kind"], note["message"], note.get("detail"))
        if key not in seen:
            seen.add(key)
            out.append(note)
    return out


def _annotate(nb: NotebookNode, result: dict[str, Any]) -> None:
    """Drop the reconciliation's transient keys from the graded notebook's metadata.

    Results are not copied into the notebook: the feedback page takes them from the gradebook,
    through the student view.
    """
    for cell in nb.cells:
        grader = cell.metadata.get("grader")
        if isinstance(grader, dict):
            for key in ("source_index", "matched_by", "duplicate_of", "foreign", "result"):
                grader.pop(key, None)

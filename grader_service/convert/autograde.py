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
5. score the test cells (`scoring`), then apply the integrity verdicts (`verdicts`): a failed canary, a test
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

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from ..states import KernelOutcome
from . import cells as nbcells
from . import confine, gradebook, processes, source_lock, verdicts
from .errors import DiskLimitReached, GradingError, SourceValidationError, UnreadableNotebookError
from .forked_kernel import KernelLauncher
from .guard import Plan, Step, bound_names, build_plan
from .kernel import CellRecord, GradingClient, KernelEnvironment, KernelUnresponsive, kill_kernel_tree
from .notebooks import atomic_write_text, iter_other_files, notebook_name, read_notebook, write_notebook
from .options import AutogradeOptions
from .preprocessors.base import Context, run_pipeline
from .preprocessors.reconcile import describe_source, reconcile_pipeline
from .release import load_source
from .verdicts import CELL_KINDS, NotebookResult, Observed, token_ok
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


@dataclass(frozen=True)
class Settings(AutogradeOptions):
    """Everything that tunes one autograde run: the CLI's options, and what only tests and the
    fork server set."""

    guard: bool = True  # False only to demonstrate what the guard prevents (tests)
    # Landlock each kernel off the source and output directories, where the machine has Landlock
    # (see `confine.fence`). False only to show the file watch at work without it (tests).
    fence_kernels: bool = True
    interrupt_grace: float = 5.0
    max_message_size: int = 64 * 1024 * 1024
    kernel_env: dict[str, str] | None = None  # extra environment for the kernel (HOME is private)
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
    submission_dir: Path | str,
    source_dir: Path | str,
    output_dir: Path | str,
    options: AutogradeOptions | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Grade `submission_dir` against `source_dir`; write into `output_dir`; return the summary.

    `options` as the CLI parsed them; `settings` (fields of `Settings`, e.g. `cell_timeout=10`)
    override them one by one.

    Raises GradingError when grading cannot be carried out (no valid source, kernel cannot start,
    overlapping directories); a bad submission is graded (with zeros), never an error.
    """
    given = {f.name: getattr(options, f.name) for f in fields(options)} if options is not None else {}
    run = Settings(**{**given, **settings})
    return asyncio.run(_autograde(Path(submission_dir), Path(source_dir), Path(output_dir), run))


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

    book: dict[str, Any] = {
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
            _Run(
                client, plan, cell_of_step, exec_cells, execution, settings, deadline, watch, watched, kernel
            )
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
            self.pgid = getattr(self._provisioner(), "pgid", None)
            await client.async_start_new_kernel_client()
        except Exception as e:
            raise GradingError(f"the kernel could not be started: {type(e).__name__}: {e}") from None
        # What a timeout may kill: anything but the grader's processes and the kernel itself.
        client.spared_pids = self.before | {getattr(self._provisioner(), "pid", None) or 0}

    def _provisioner(self) -> object | None:
        """What started the kernel process (its pid and process group)."""
        return self.client.km.provisioner if self.client.km is not None else None

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


@dataclass
class _Run:
    """One plan running in one kernel: what `_run_steps` and its parts share."""

    client: GradingClient
    plan: Plan
    cell_of_step: dict[int, int]  # plan step -> index of its cell in `exec_cells`
    exec_cells: list[NotebookNode]
    execution: Execution
    settings: Settings
    deadline: float | None
    watch: DirectoryWatch | None
    watched: Watched | None
    kernel: _KernelStarter
    cells_run: int = 0  # notebook cells sent so far (their execution count)
    time_up_group: int | None = None  # the protected group running when the total time ran out


async def _run_steps(run: _Run) -> None:
    """Run the plan's steps after the setup, in order, while the kernel is usable."""
    execution = run.execution
    await _install_support(run.client, run.plan, execution, run.settings)
    _start_watch(run.watch, run.watched)
    for i, step in enumerate(run.plan.steps[1:], start=1):
        if execution.kernel not in (KernelOutcome.OK, KernelOutcome.TIME_LIMIT):
            break
        if not _due(run, i, step):
            continue
        try:
            if not await _run_step(run, i, step):
                continue
        except KernelUnresponsive:
            execution.kernel, execution.stopped_at = KernelOutcome.KILLED, i
        except DeadKernelError:
            execution.kernel, execution.stopped_at = KernelOutcome.DIED, i
        if run.watch is not None:
            events = run.watch.drain()
            if events:
                execution.events.setdefault(i, []).extend(events)
        if execution.kernel == KernelOutcome.KILLED:
            await _replace_kernel(run, i)
        check_disk(_scratch(run.settings))


def _start_watch(watch: DirectoryWatch | None, watched: Watched | None) -> None:
    if watch is not None and watched is not None:
        watch.add_directories("source", list(watched.source_tree))  # listed under the source lock
        if watched.output is not None:
            watch.add_tree("output", watched.output)
        watch.drain()


def _due(run: _Run, i: int, step: Step) -> bool:
    """Whether step `i` still runs: not when the cell before carried it, nor once time is up
    (then only the integrity checks of the group that was running still run)."""
    if i in run.execution.internal:  # carried by the cell before it
        return False
    finishing = step.kind in ("canary-error", "canary-value", "unstash") and step.group == run.time_up_group
    return run.execution.kernel != KernelOutcome.TIME_LIMIT or finishing


async def _run_step(run: _Run, i: int, step: Step) -> bool:
    """Run step `i`; False when the total time ran out before it could start."""
    execution = run.execution
    if step.internal:
        execution.internal[i] = await run.client.run_internal(step.call, INTEGRITY_TIMEOUT)
        return True
    budget = _budget(run, step)
    if budget is None:
        execution.kernel, execution.stopped_at, run.time_up_group = KernelOutcome.TIME_LIMIT, i, step.group
        return False
    if step.kind in CELL_KINDS:
        run.cells_run += 1
    following = run.plan.steps[i + 1] if i + 1 < len(run.plan.steps) else None
    carry = following.call if following is not None and following.internal else None
    cell = run.cell_of_step[i]
    rec = await run.client.run_cell(run.exec_cells[cell], cell, budget, run.cells_run, carry=carry)
    execution.records[i] = rec
    if rec.carried is not None:
        execution.internal[i + 1] = rec.carried
    if rec.status == "dead":
        execution.kernel, execution.stopped_at = KernelOutcome.DIED, i
    elif rec.status == "unresponsive":
        execution.kernel, execution.stopped_at = KernelOutcome.KILLED, i
    elif rec.status == "timeout" and _out_of_time(run.deadline) and step.kind in CELL_KINDS:
        execution.kernel, execution.stopped_at, run.time_up_group = KernelOutcome.TIME_LIMIT, i, step.group
    return True


def _budget(run: _Run, step: Step) -> float | None:
    """Seconds step may run: the cell timeout, shorter for checks and near the total time limit;
    None when the total time is up."""
    budget = run.settings.cell_timeout
    if step.kind in ("canary-error", "canary-value", "mutant"):
        return min(budget, INTEGRITY_TIMEOUT)
    if run.deadline is None:
        return budget
    remaining = run.deadline - time.monotonic()
    return min(budget, remaining) if remaining > 0 else None


def _out_of_time(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


async def _install_support(
    client: GradingClient, plan: Plan, execution: Execution, settings: Settings
) -> None:
    """Run the plan's setup step (the grader's kernel support) in a new kernel."""
    setup = plan.steps[0]
    status, text = await client.run_internal(setup.call, settings.startup_timeout)
    execution.internal[0] = (status, text)
    if status != "ok" or not token_ok(text, setup.expect):
        raise GradingError(f"the grader's kernel support could not be installed: {text}")


async def _replace_kernel(run: _Run, step: int) -> None:
    """After a timeout the kernel did not recover from: go on in a fresh kernel if time allows.

    The fresh kernel has none of the notebook's state: the tests it costs fail there, and their
    feedback says why (see `verdicts.restart_notes`). Student code gains nothing by it: every step
    after the timeout runs, guarded, as it would have in the old kernel. Only a notebook cell's
    timeout is forgiven this way: a kernel stuck in a mutation run, a canary or a guard call (where
    student code has no business running) stops the grading, so that hanging the checks of one
    group cannot be repeated group after group. So do restarts used up and the total time being
    over; `execution.kernel == "killed"` then says so.
    """
    plan, execution, kernel = run.plan, run.execution, run.kernel
    stuck_in_check = plan.steps[step].kind not in CELL_KINDS
    if (
        stuck_in_check
        or len(execution.restarts) >= MAX_KERNEL_RESTARTS
        or _out_of_time(run.deadline)
        or step + 1 >= len(plan.steps)
    ):
        kill_kernel_tree(kernel.pgid, kernel.before)
        return
    try:
        await kernel.restart()
        await _install_support(run.client, plan, execution, run.settings)
    except (GradingError, KernelUnresponsive, DeadKernelError) as e:
        log.warning("the kernel could not be restarted after a timeout: %s", e)
        return
    execution.restarts.append(step)
    execution.kernel, execution.stopped_at = KernelOutcome.OK, None


def _grader_cell(source: str) -> NotebookNode:
    """A code cell for a mutation run or a canary, built without nbformat's schema validation."""
    return NotebookNode(
        cell_type="code", execution_count=None, metadata=NotebookNode(), source=source, outputs=[]
    )


def _score(
    base: dict[str, Any],
    nb: NotebookNode,
    plan: Plan,
    execution: Execution,
    ctx: Context,
    settings: Settings,
    after_hidden_tests: bool = False,
) -> dict[str, Any]:
    """The notebook's gradebook entry: its test scores, then each verdict in turn (`verdicts`)."""
    result = NotebookResult.start(base, [n.as_dict() for n in ctx.notes])
    observed = Observed(nb, plan, execution, settings.cell_timeout)
    # From the taint point on, what the kernel produced may quote hidden tests (see `visibility`);
    # after another notebook's hidden tests ran in this job, from the start.
    if after_hidden_tests:
        withheld_from: int | None = 0
    else:
        taint = verdicts.first_hidden_step(plan, nb)
        withheld_from = plan.steps[taint].cell_index if taint is not None else None
    result.entry["withheld_from_cell"] = withheld_from
    verdicts.test_scores(observed, result.cells, withheld_from)
    for verdict in (
        verdicts.restart_notes,
        verdicts.mutation_findings,
        verdicts.fake_findings,
        verdicts.guard_findings,
        verdicts.file_findings,
    ):
        result.apply(verdict(observed, result.cells))
    return gradebook.totals(result.finish(verdicts.execution_summary(observed)))


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

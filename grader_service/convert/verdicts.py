"""Verdicts: what was observed while a notebook's plan ran, turned into its gradebook entry.

A verdict is one way grading judges a submission. Each is a pure function from the observations
(`Observed`: the plan, what ran, the cells as scored so far) to `Finding`s; `NotebookResult`
applies them in order and alone decides what a finding does to a cell: zeroing it, deducting
points, or only noting. The verdicts, in the order they apply:

1. `test_scores`: each test cell's own outcome (`scoring.score_record`), or why it did not run;
2. `restart_notes`: tests that ran in a fresh kernel after a timeout lost the notebook's state;
3. `mutation_findings`: a test that awards points with wrong answers substituted;
4. `fake_findings`: values that faked a comparison in a protected cell (`kernel_checks`);
5. `guard_findings`: guard steps and canaries around each protected group;
6. `file_findings`: the kernel touching the instructor's source or the output directory;

and `execution_summary` says how the kernel fared. Adding a verdict: a function here returning
findings, called from `autograde._score` in its place in that order (see docs/architecture.md).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from nbformat import NotebookNode

from ..states import KernelOutcome
from . import cells as nbcells
from .guard import Plan, Step
from .scoring import canary_error_held, canary_value_held, mutant_passed, score_record
from .visibility import student_error

if TYPE_CHECKING:
    from .autograde import Execution

# Plan steps that run a notebook cell (as opposed to the grader's own checks).
CELL_KINDS = ("cell", "test", "locked")


@dataclass(frozen=True)
class Finding:
    """What one verdict found. `message` is the grader's own words; `detail`, what the kernel said
    (staff only). `zero` scores the cell 0; `deduct` takes that many points off it."""

    kind: str  # the note's kind: tampering | integrity | timeout
    message: str
    cell: str | None = None
    detail: str | None = None
    zero: bool = False
    deduct: float = 0.0


@dataclass(frozen=True)
class Observed:
    """What the verdicts judge: the notebook as run, its plan, and what happened when it ran."""

    nb: NotebookNode
    plan: Plan
    execution: Execution
    cell_timeout: float | None = None

    @cached_property
    def test_steps(self) -> dict[str, int]:
        """Grade id -> the plan step running that test cell (the first, should there be several)."""
        return self._steps_of("test")

    @cached_property
    def mutant_steps(self) -> dict[str, int]:
        """Grade id -> the plan step running that test with wrong answers substituted."""
        return self._steps_of("mutant")

    def _steps_of(self, kind: str) -> dict[str, int]:
        steps: dict[str, int] = {}
        for i, step in enumerate(self.plan.steps):
            if step.kind == kind and step.grade_id:
                steps.setdefault(step.grade_id, i)
        return steps

    def label(self, i: int) -> str:
        """Where step `i` is, in words for a note."""
        return step_label(self.plan, self.nb, i)


@dataclass
class NotebookResult:
    """A notebook's gradebook entry while the verdicts are applied: its cells, notes, tampering."""

    entry: dict[str, Any]
    notes: list[dict[str, Any]]
    tampering: dict[str, list[str]]

    @classmethod
    def start(cls, base: dict[str, Any], notes: list[dict[str, Any]]) -> NotebookResult:
        """From the skeleton entry and the reconciliation's notes (tampering and repairs count)."""
        entry = dict(base, status="graded", message=None)
        tampering: dict[str, list[str]] = {gid: [] for gid in entry["cells"]}
        for note in notes:
            if note["cell"] in tampering and note["kind"] in ("tampering", "repair"):
                tampering[note["cell"]].append(note["message"])
        return cls(entry, list(notes), tampering)

    @property
    def cells(self) -> dict[str, dict[str, Any]]:
        return self.entry["cells"]

    def apply(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            if finding.zero:
                self._zero(finding)
            elif finding.deduct:
                self._deduct(finding)
            self._note(finding)

    def _note(self, finding: Finding) -> None:
        note: dict[str, Any] = {"cell": finding.cell, "kind": finding.kind, "message": finding.message}
        if finding.detail:
            note["detail"] = finding.detail
        self.notes.append(note)

    def _zero(self, finding: Finding) -> None:
        """The cell scores 0; a pass becomes an error, with this integrity message if it had none."""
        assert finding.cell is not None
        cell = self.cells[finding.cell]
        if cell.get("points"):
            cell["points"] = 0.0
        cell["status"] = cell["status"] if cell["status"] != "passed" else "error"
        if cell["error"] is None:
            cell["error"] = {"name": "IntegrityCheck", "message": finding.message}
        self.tampering[finding.cell].append(finding.message)

    def _deduct(self, finding: Finding) -> None:
        assert finding.cell is not None
        cell = self.cells[finding.cell]
        cell["points"] = max(0.0, round(cell["points"] - finding.deduct, 6))
        self.tampering[finding.cell].append(finding.message)

    def finish(self, execution: dict[str, Any]) -> dict[str, Any]:
        """The entry with each cell's tampering, the notes (each once) and the execution summary."""
        for gid, cell in self.cells.items():
            cell["tampering"] = self.tampering.get(gid, [])
        self.entry["notes"] = _dedupe(self.notes)
        self.entry["execution"] = execution
        return self.entry


# ---- the verdicts -------------------------------------------------------------------------------


def test_scores(observed: Observed, cells: dict[str, dict[str, Any]], withheld_from: int | None) -> None:
    """Score each test cell from its record (or why it has none); other graded cells await a person.

    From cell `withheld_from` on, what a cell produced may quote hidden tests: such cells are
    `withheld`, and an error the kernel reported in them reaches the student reworded.
    """
    cell_of_gid = _cell_of_grade_id(observed.nb)
    for gid, cell in cells.items():
        index = cell_of_gid.get(gid)
        cell["withheld"] = withheld_from is not None and index is not None and index >= withheld_from
        if cell["kind"] != "test":
            cell.update(points=None, status="needs-manual", partial=False, error=None, duration_s=None)
            continue
        i = observed.test_steps.get(gid)
        rec = observed.execution.records.get(i) if i is not None else None
        if i is None or rec is None:
            status, name, message = _not_run(observed)
            cell.update(points=0.0, status=status, partial=False, error={"name": name, "message": message})
            cell["duration_s"] = None
            continue
        outcome = score_record(rec, cell["max_points"], observed.cell_timeout)
        cell.update(
            points=outcome.points,
            status=outcome.status,
            partial=outcome.partial,
            error={"name": outcome.error[0], "message": outcome.error[1]} if outcome.error else None,
            duration_s=round(rec.duration, 3),
        )
        if outcome.error is not None and outcome.error_from_kernel and cell["withheld"]:
            source = nbcells.source_text(observed.nb.cells[observed.plan.steps[i].cell_index])
            cell["student_error"] = student_error(*outcome.error, source)


def restart_notes(observed: Observed, cells: dict[str, dict[str, Any]]) -> list[Finding]:
    """Tests that ran in a fresh kernel, after one did not recover from a timeout, and lost points
    there: the definitions made before the timeout were lost with the old kernel."""
    findings = []
    for gid, i in observed.test_steps.items():
        restart = max((r for r in observed.execution.restarts if r < i), default=None)
        cell = cells.get(gid)
        if restart is None or cell is None or cell["points"] >= cell["max_points"]:
            continue
        findings.append(
            Finding(
                "timeout",
                f"'{gid}' ran in a new kernel: the kernel could not be recovered after the timeout in "
                f"{observed.label(restart)} (it did not stop when interrupted), so what the notebook "
                "had defined before was lost",
                cell=gid,
            )
        )
    return findings


def mutation_findings(observed: Observed, cells: dict[str, dict[str, Any]]) -> list[Finding]:
    """What a test awards with wrong answers substituted is not earned by the answers.

    A test passing outright that way is being executed dishonestly (scored 0); a test that gives
    some credit regardless (e.g. for a function merely existing) loses that part.
    """
    findings = []
    for gid, i in observed.mutant_steps.items():
        rec = observed.execution.records.get(i)
        if rec is None or gid not in cells or not mutant_passed(rec):
            continue
        cell = cells[gid]
        free = score_record(rec, cell["max_points"]).points
        if free >= cell["max_points"] or not cell.get("points"):
            message = f"'{gid}' passed even with wrong answers substituted: its execution was tampered with; scored 0"
            findings.append(Finding("tampering", message, cell=gid, zero=True))
        else:
            message = (
                f"'{gid}' awards {free:g} points even with wrong answers substituted; those were deducted"
            )
            findings.append(Finding("integrity", message, cell=gid, deduct=free))
    return findings


def fake_findings(observed: Observed, cells: dict[str, dict[str, Any]]) -> list[Finding]:
    """Values that claimed a comparison their contents contradict (`kernel_checks`): the test failed
    on the trusted comparison already; it scores 0 whatever else it did, with a note."""
    return [
        Finding("tampering", f"'{gid}': {message}", cell=gid, detail=detail, zero=True)
        for gid, message, detail in fakes(observed.execution)
        if gid in cells and cells[gid]["kind"] == "test"
    ]


def guard_findings(observed: Observed, cells: dict[str, dict[str, Any]]) -> list[Finding]:
    """Guard steps and canaries, per protected group: a problem zeroes the group's tests.

    What the kernel answered goes into the detail. Checks that could not run (the kernel died or
    time ran out) leave earlier scores standing, with a note.
    """
    findings: list[Finding] = []
    restored: list[str] = []
    for group, gids in observed.plan.groups.items():
        problems, details, ran_all = _group_checks(observed, group, restored)
        if problems:
            findings += [
                Finding(
                    "tampering",
                    f"integrity checks around '{gid}' failed: {'; '.join(problems)}; scored 0",
                    cell=gid,
                    detail="; ".join(details),
                    zero=True,
                )
                for gid in gids
                if gid in cells
            ]
        elif not ran_all and any(
            observed.execution.records.get(observed.test_steps.get(g, -1)) for g in gids
        ):
            message = (
                f"the canary checks after {', '.join(gids)} could not run ({observed.execution.kernel}); "
                "scores of earlier cells stand"
            )
            findings.append(Finding("integrity", message))
    if restored:
        message = "kernel state changed by the notebook was set aside while protected cells ran"
        findings.append(Finding("integrity", message, detail=", ".join(sorted(set(restored))[:40])))
    return findings


def _group_checks(observed: Observed, group: int, restored: list[str]) -> tuple[list[str], list[str], bool]:
    """The problems one group's checks found, their details, and whether all of them ran.

    What the guard set aside while the group ran is added to `restored`.
    """
    problems: list[str] = []
    details: list[str] = []
    ran_all = True
    for i, step in enumerate(observed.plan.steps):
        if step.group != group:
            continue
        if step.internal:
            result = observed.execution.internal.get(i)
            ran_all = ran_all and result is not None
            _check_guard_step(step, result, problems, details, restored)
        elif step.kind.startswith("canary"):
            rec = observed.execution.records.get(i)
            if rec is None or rec.status in ("dead", "unresponsive", "not-run"):
                ran_all = False
            elif step.kind == "canary-error" and not canary_error_held(rec, step.expect):
                problems.append("a canary cell that must fail with a known error did not")
            elif step.kind == "canary-value" and not canary_value_held(rec, step.expect):
                problems.append("a canary cell displayed something else than the number it computes")
                details.append(f"displayed {rec.results!r} instead of [{step.expect!r}]")
    return problems, details, ran_all


def _check_guard_step(
    step: Step,
    result: tuple[str, str | None] | None,
    problems: list[str],
    details: list[str],
    restored: list[str],
) -> None:
    """A guard call must answer with its token; the one before the group says what it set aside."""
    if result is None:
        return
    if step.kind != "checkpoint" and (result[0] != "ok" or not token_ok(result[1], step.expect)):
        problems.append(f"grader guard step '{step.kind}' did not run as sent")
        details.append(f"{step.kind}: {(result[1] or '')[:200]}")
    elif step.kind == "pre":
        restored.extend(_reported(result[1], "restored"))


def file_findings(observed: Observed, cells: dict[str, dict[str, Any]]) -> list[Finding]:
    """The kernel reading the instructor's source (or writing into the output directory).

    Opening a file in the source zeroes every test from that point on; listing a directory only
    reveals names, and is what an unrelated process on a shared machine might do, so it is only noted.
    """
    findings: list[Finding] = []
    first_source_access: int | None = None
    for i in sorted(observed.execution.events):
        for event in observed.execution.events[i]:
            where = observed.label(i)
            if event.area == "output":
                message = (
                    f"the kernel touched the output directory during {where} "
                    "(the grader's files were written afterwards)"
                )
                findings.append(Finding("tampering", message, detail=event.describe()))
            elif event.is_dir:
                message = f"source directory listed during {where}"
                findings.append(Finding("integrity", message, detail=event.describe()))
            elif first_source_access is None:
                first_source_access = i
                message = f"the kernel accessed the instructor's files during {where}"
                findings.append(Finding("tampering", message, detail=event.describe()))
    if first_source_access is not None:
        findings += [
            Finding(
                "tampering",
                f"'{gid}' ran after the kernel read the instructor's files; scored 0",
                gid,
                zero=True,
            )
            for gid, i in observed.test_steps.items()
            if i >= first_source_access and gid in cells
        ]
    return findings


def execution_summary(observed: Observed) -> dict[str, Any]:
    """How the kernel fared, for the gradebook (a reached time limit is reported as `ok` plus a flag)."""
    execution = observed.execution
    return {
        "kernel": KernelOutcome.OK if execution.kernel == KernelOutcome.TIME_LIMIT else execution.kernel,
        "time_limit_reached": execution.kernel == KernelOutcome.TIME_LIMIT,
        "duration_s": round(execution.duration, 3),
        "cells_run": sum(
            1 for i, s in enumerate(observed.plan.steps) if s.kind in CELL_KINDS and i in execution.records
        ),
        "processes_killed": execution.processes_killed,
        "kernel_restarts": len(execution.restarts),
    }


# ---- helpers ------------------------------------------------------------------------------------


def step_label(plan: Plan, nb: NotebookNode, i: int) -> str:
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


def token_ok(text: str | None, nonce: str) -> bool:
    """A guard step's answer carries its nonce: the step ran as the grader sent it."""
    try:
        value = ast.literal_eval(text or "")
    except (ValueError, SyntaxError):
        return False
    return isinstance(value, str) and (value == nonce or value.startswith(f"ok:{nonce}:"))


def _reported(text: str | None, key: str) -> list[Any]:
    """One list from a guard step's answer (`ok:<nonce>:<json>`); empty when it is not there."""
    try:
        value = ast.literal_eval(text or "")
        return list(json.loads(value.split(":", 2)[2]).get(key, []))
    except (ValueError, SyntaxError, IndexError, AttributeError, TypeError):
        return []


def fakes(execution: Execution) -> list[tuple[str, str, str]]:
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


def _not_run(observed: Observed) -> tuple[str, str, str]:
    """Status, error name and message of a test cell that has no record, by how the kernel fared."""
    execution = observed.execution
    if execution.kernel == KernelOutcome.DIED:
        return "error", "KernelDied", "the kernel died before this cell could run"
    if execution.kernel == KernelOutcome.KILLED:
        stopped = observed.label(execution.stopped_at) if execution.stopped_at is not None else "a cell"
        return (
            "timeout",
            "KernelUnresponsive",
            f"the kernel could not be recovered after the timeout in {stopped} (it did not stop when "
            "interrupted) and was killed; this cell could not run",
        )
    if execution.kernel == KernelOutcome.TIME_LIMIT:
        return "timeout", "TimeLimit", "the total time limit was reached before this cell ran"
    return "error", "NotRun", "the cell did not run"


def _cell_of_grade_id(nb: NotebookNode) -> dict[str, int]:
    cell_of_gid: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        gid = (cell.metadata.get("grader") or {}).get("grade_id") or nbcells.grade_id(cell)
        if gid:
            cell_of_gid.setdefault(gid, index)
    return cell_of_gid


def _dedupe(notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = set()
    out = []
    for note in notes:
        key = (note["cell"], note["kind"], note["message"], note.get("detail"))
        if key not in seen:
            seen.add(key)
            out.append(note)
    return out

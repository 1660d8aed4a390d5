"""`validate`: what a student runs before submitting -- execute the notebook, report the tests.

Only the visible tests exist on the student's side (hidden tests are not in the release), so a
"passed" here is necessary, not sufficient. The notebook is executed exactly as autograde would
(fresh kernel, the notebook's directory as working directory, the same timeouts and caps) and
its own cell metadata says which cells are tests and what they are worth. Nothing is written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from . import cells as nbcells
from .autograde import Settings, execute_plan
from .errors import GradingError, UnreadableNotebookError
from .guard import build_plan
from .notebooks import read_notebook
from .options import DEFAULT_CELL_TIMEOUT
from .scoring import score_record

STUB_MARKER = "raise NotImplementedError()"


def validate_notebook(path: Path, cell_timeout: float = DEFAULT_CELL_TIMEOUT) -> dict[str, Any]:
    path = Path(path).resolve()
    try:
        nb = read_notebook(path, keep_outputs=False)
    except UnreadableNotebookError as e:
        raise GradingError(str(e)) from None
    for cell in nb.cells:
        role = "test" if nbcells.is_test(cell) else "student"
        cell.metadata["grader"] = {"role": role, "grade_id": nbcells.grade_id(cell)}
    plan = build_plan(nb, set(), mutation_runs=False, guard=False)
    settings = Settings(cell_timeout=cell_timeout, watch_files=False)
    execution = asyncio.run(execute_plan(nb, plan, path.parent, None, settings, None))
    tests: list[dict[str, Any]] = []
    for i, step in enumerate(plan.steps):
        if step.kind != "test":
            continue
        assert step.cell_index is not None  # a test step is always a cell's
        cell = nb.cells[step.cell_index]
        max_points = nbcells.points(cell)
        rec = execution.records.get(i)
        if rec is None:
            entry = {
                "points": 0.0,
                "status": "error",
                "error": {"name": "NotRun", "message": f"kernel {execution.kernel}"},
            }
        else:
            outcome = score_record(rec, max_points, cell_timeout)
            entry = {
                "points": outcome.points,
                "status": outcome.status,
                "error": {"name": outcome.error[0], "message": outcome.error[1]} if outcome.error else None,
            }
        tests.append(
            {"grade_id": step.grade_id or f"#{step.cell_index + 1}", "max_points": max_points, **entry}
        )
    unanswered = [
        nbcells.grade_id(c) or "?"
        for c in nb.cells
        if nbcells.is_solution(c) and STUB_MARKER in nbcells.source_text(c)
    ]
    failing = [t for t in tests if t["status"] != "passed" or t["points"] < t["max_points"]]
    return {
        "status": "passed" if not failing and not unanswered else "failed",
        "notebook": str(path),
        "score": sum(t["points"] for t in tests),
        "max_score": sum(t["max_points"] for t in tests),
        "tests": tests,
        "unanswered": unanswered,
        "kernel": execution.kernel,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['notebook']}: visible tests {report['score']:g} / {report['max_score']:g}"]
    for test in report["tests"]:
        mark = "ok  " if test["status"] == "passed" and test["points"] >= test["max_points"] else "FAIL"
        line = f"  {mark} {test['grade_id']}: {test['points']:g}/{test['max_points']:g} {test['status']}"
        if test.get("error"):
            line += f" ({test['error']['name']}: {test['error']['message'][:200]})"
        lines.append(line)
    if report["unanswered"]:
        lines.append("  unanswered: " + ", ".join(report["unanswered"]))
    lines.append("hidden tests, if any, run only when the submission is graded")
    return "\n".join(lines)

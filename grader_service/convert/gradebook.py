"""The gradebook: what grading produced, as JSON (`OUTPUT/gradebook.json`). An interface.

The service stores it per submission, shows it to tutors, and derives the submission's score from
it; the feedback command renders it. Two kinds share one shape.

Skeleton (returned by `release_assignment`; every graded cell and its maximum)::

    {
      "schema": "grader-service/gradebook/1",
      "kind": "skeleton",
      "max_score": 10.0,                       # sum over notebooks
      "notebooks": {
        "<name>": {                            # notebook path relative to the assignment, no .ipynb
          "path": "basics.ipynb",
          "max_score": 10.0,
          "cells": {
            "<grade_id>": {
              "grade_id": "test_add",
              "kind": "test" | "manual" | "task",  # autograded test / answer graded by hand / task
              "max_points": 1.0,
              "hidden_tests": false            # the test has hidden parts
            }
          }
        }
      }
    }

Autograde result (written by `grader-convert autograde`); the skeleton's fields plus::

    {
      "kind": "autograde",
      "score": 9.0,                 # automatic points earned; manual cells count 0 until graded
      "needs_manual_grading": false,
      "tampering": false,           # any notebook has a note of kind "tampering"
      "duration_s": 3.1,
      "settings": {"cell_timeout": 30, "timeout": null, "output_limit": 1000000},
      "notebooks": {
        "<name>": {
          "status": "graded" | "missing" | "unreadable",
          "message": null | "why it could not be graded",
          "score": 9.0,
          "needs_manual": ["<grade_id>", ...],
          "withheld_from_cell": null | 3,  # index of the first cell that ran hidden-test code (visibility)
          "cells": {
            "<grade_id>": {
              ...skeleton fields...,
              "points": 0.0 | null,      # null only when status is "needs-manual"
              "status": "passed" | "failed" | "error" | "timeout" | "needs-manual",
              "partial": false,          # points came from the value the test displayed
              "error": null | {"name": "AssertionError", "message": "..."},
              "tampering": ["test code edited by the student; the instructor's version was run"],
              "duration_s": 0.01 | null,
              "withheld": false,         # ran at or after withheld_from_cell: students see less
              "student_error": {...}     # only when withheld with a kernel-reported error: what
                                         # students see of it (`visibility.student_error`)
            }
          },
          "notes": [{"cell": "<grade_id>" | null,
                     "kind": "tampering" | "repair" | "integrity" | "timeout" | "info",
                     "message": "...",   # the grader's own words
                     "detail": "..."}],  # optional: what the kernel said (staff only)
          "execution": {"kernel": "ok" | "died" | "killed" | "not-started", "duration_s": 1.2,
                        "time_limit_reached": false, "cells_run": 25, "processes_killed": 0,
                        "kernel_restarts": 0}  # kernels replaced after a timeout they did not survive
        }
      }
    }

Note kinds: *tampering* (the submission changed protected cells or metadata, or the kernel
touched the instructor's or the output files), *repair* (an answer cell was fixed up),
*integrity* (checks that could not run, kernel state set aside, differing data files,
credit a test gives regardless of the answer), *timeout* (a test ran in a fresh kernel, and
failed there, because the kernel did not recover from an earlier cell's timeout).

What a student may see of it is `visibility.student_view(gradebook)`.

Status meanings: *passed* ran without raising (partial credit possible, see `partial`); *failed*
raised AssertionError; *error* raised anything else, or could not run (notebook missing or
unreadable, kernel died earlier); *timeout* exceeded the per-cell or total time limit, or the
kernel was killed because it ignored the interrupt (later cells then run in a fresh kernel);
*needs-manual* is graded by a person.
Points always come from the instructor's source, never from the submission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from . import cells as nbcells

SCHEMA = "grader-service/gradebook/1"


def cell_kind(cell: NotebookNode) -> str | None:
    """ "test", "manual", "task" for cells worth points, else None."""
    if nbcells.is_task(cell):
        return "task"
    if nbcells.is_grade(cell):
        return "test" if nbcells.is_test(cell) else "manual"
    return None


def skeleton_cells(nb: NotebookNode) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        kind = cell_kind(cell)
        gid = nbcells.grade_id(cell)
        if kind is None or gid is None:
            continue
        cells[gid] = {
            "grade_id": gid,
            "kind": kind,
            "max_points": nbcells.points(cell),
            "hidden_tests": kind == "test" and nbcells.has_hidden_tests(nbcells.source_text(cell)),
        }
    return cells


def skeleton_notebook(nb: NotebookNode, relpath: Path) -> dict[str, Any]:
    cells = skeleton_cells(nb)
    return {
        "path": relpath.as_posix(),
        "max_score": float(sum(c["max_points"] for c in cells.values())),
        "cells": cells,
    }


def skeleton(notebooks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": "skeleton",
        "max_score": float(sum(nb["max_score"] for nb in notebooks.values())),
        "notebooks": notebooks,
    }


def totals(result: dict[str, Any]) -> dict[str, Any]:
    """Recompute a notebook's or the whole gradebook's score fields from its parts."""
    if "cells" in result:
        cells = result["cells"].values()
        result["score"] = round(float(sum(c.get("points") or 0.0 for c in cells)), 6)
        result["max_score"] = float(sum(c["max_points"] for c in cells))
        result["needs_manual"] = sorted(c["grade_id"] for c in cells if c.get("status") == "needs-manual")
        return result
    notebooks = result["notebooks"].values()
    result["score"] = round(float(sum(nb.get("score", 0.0) for nb in notebooks)), 6)
    result["max_score"] = float(sum(nb["max_score"] for nb in notebooks))
    result["needs_manual_grading"] = any(nb.get("needs_manual") for nb in notebooks)
    result["tampering"] = any(n["kind"] == "tampering" for nb in notebooks for n in nb.get("notes", []))
    return result

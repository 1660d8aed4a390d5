"""A harness's results (Gradescope's autograder results.json) and how they become a gradebook.

The results come from inside the sandbox, so they are as untrusted as the submission: parsed with
a bound on size and depth, validated strictly against `RESULTS_SCHEMA` (a problem ends the
grading as failed, naming it: `tests[2].score: not a number`), and mapped onto the gradebook the
notebook engine writes (`convert/gradebook.py`): one "notebook" (`results`) whose cells are the
tests. Scores, regrades, manual overrides, late penalties, exports and feedback then work on
command assignments unchanged. What a student sees of each test's output is `student_view`.
"""

from __future__ import annotations

import copy
import html
import json
from typing import Any

import jsonschema

from .. import safejson
from ..convert.gradebook import SCHEMA as GRADEBOOK_SCHEMA
from ..convert.gradebook import totals
from ..states import TestVisibility
from .spec import describe, field_path

MAX_RESULTS_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 32
MAX_TESTS = 10_000
# Candidates tried when looking for the last JSON object in a stage's output (`results: stdout`).
MAX_STDOUT_CANDIDATES = 64
# The gradebook "notebook" that holds a command grading's tests.
RESULTS_ENTRY = "results"
ENGINE = "command"
# An adjustment cell: the harness's top-level `score` differs from the sum of its tests'.
ADJUSTMENT = "(score adjustment)"

_VISIBILITY = {"enum": [v.value for v in TestVisibility]}
_NUMBER = {"type": "number"}
_TEXT = {"type": "string", "maxLength": 1 << 20}
RESULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "score": _NUMBER,
        "max_score": {"type": "number", "minimum": 0},
        "output": _TEXT,
        "output_format": {"type": "string"},
        "visibility": _VISIBILITY,
        "stdout_visibility": _VISIBILITY,
        "execution_time": {"type": "number", "minimum": 0},
        "extra_data": {},
        "leaderboard": {"type": "array"},
        "tests": {
            "type": "array",
            "maxItems": MAX_TESTS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["score"],
                "properties": {
                    "name": {"type": "string", "maxLength": 1000},
                    "number": {"type": ["string", "number"]},
                    "score": _NUMBER,
                    "max_score": {"type": "number", "minimum": 0},
                    "output": _TEXT,
                    "output_format": {"type": "string"},
                    "name_format": {"type": "string"},
                    "status": {"enum": ["passed", "failed"]},
                    "visibility": _VISIBILITY,
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "extra_data": {},
                },
            },
        },
    },
    "anyOf": [{"required": ["tests"]}, {"required": ["score"]}],
    "x-message": "neither `tests` nor `score` is given",
}


class ResultsError(ValueError):
    """The results are malformed; the message names the field and the problem."""


def parse(data: bytes | str) -> dict[str, Any]:
    """The results as a validated dict, or `ResultsError` naming the first problem."""
    if len(data) > MAX_RESULTS_BYTES:
        raise ResultsError(f"the results are larger than {MAX_RESULTS_BYTES} bytes")
    try:
        # Strict: no NaN or Infinity (scores must add up), no NUL (the gradebook may go to PostgreSQL).
        value = safejson.loads(data, MAX_DEPTH, strict=True)
    except ValueError as e:
        raise ResultsError(f"the results are not JSON: {e}") from None
    validator = jsonschema.Draft202012Validator(RESULTS_SCHEMA)
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        error = errors[0] if errors[0].absolute_path else jsonschema.exceptions.best_match(errors)
        raise ResultsError(f"{field_path(error.absolute_path)}: {describe(error)}")
    return value


def last_json_object(output: str) -> str:
    """The last JSON object printed (`results: stdout`): it starts a line and ends the output.

    Only a bounded number of candidate lines is tried, so output made to look like endless nested
    objects costs little.
    """
    text = output.rstrip()
    decoder = json.JSONDecoder()
    tried = 0
    start = len(text)
    while tried < MAX_STDOUT_CANDIDATES:
        start = text.rfind("{", 0, start)
        if start < 0:
            break
        if start == 0 or text[start - 1] == "\n":
            tried += 1
            try:
                _, end = decoder.raw_decode(text, start)
            except ValueError:
                continue
            if end == len(text):
                return text[start:]
    raise ResultsError("the stage printed no JSON object as the last thing on its output")


def to_gradebook(results: dict[str, Any], duration_s: float, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The gradebook of a command grading: the tests as the cells of one entry, `results`."""
    cells: dict[str, dict[str, Any]] = {}
    for i, test in enumerate(results.get("tests", [])):
        name = test.get("name") or f"Test {i + 1}"
        key = name if name not in cells else f"{name} ({i + 1})"
        points, max_points = float(test["score"]), float(test.get("max_score", 0.0))
        passed = test.get("status", "passed" if points >= max_points else "failed") == "passed"
        cells[key] = {
            "grade_id": key,
            "kind": "test",
            "max_points": max_points,
            "hidden_tests": test.get("visibility", "visible") != TestVisibility.VISIBLE,
            "points": points,
            "status": "passed" if passed else "failed",
            "partial": 0 < points < max_points,
            "error": None,
            "tampering": [],
            "duration_s": None,
            "withheld": False,
            "output": test.get("output", ""),
            "visibility": test.get("visibility", TestVisibility.VISIBLE.value),
        }
    tested = sum(c["points"] for c in cells.values())
    if "score" in results and (not cells or abs(float(results["score"]) - tested) > 1e-9):
        # The harness's own total wins, as on Gradescope: the difference is one more cell.
        maximum = float(results.get("max_score", 0.0)) - sum(c["max_points"] for c in cells.values())
        cells[ADJUSTMENT] = {
            "grade_id": ADJUSTMENT, "kind": "test", "max_points": max(maximum, 0.0), "hidden_tests": False,
            "points": float(results["score"]) - tested, "status": "passed", "partial": False, "error": None,
            "tampering": [], "duration_s": None, "withheld": False, "output": "",
            "visibility": TestVisibility.VISIBLE.value,
        }  # fmt: skip
    entry = totals({
        "path": "results.json", "status": "graded", "message": None, "withheld_from_cell": None,
        "cells": cells, "notes": [],
        "execution": {"kernel": "not-started", "duration_s": duration_s, "time_limit_reached": False},
    })  # fmt: skip
    book = {
        "schema": GRADEBOOK_SCHEMA,
        "kind": "autograde",
        "engine": ENGINE,
        "duration_s": duration_s,
        "output": results.get("output", ""),
        "stdout_visibility": results.get("stdout_visibility", TestVisibility.HIDDEN.value),
        "stages": stages,
        "notebooks": {RESULTS_ENTRY: entry},
    }
    return totals(book)


def is_command_gradebook(book: Any) -> bool:
    return isinstance(book, dict) and book.get("engine") == ENGINE


def student_view(book: dict[str, Any], due_passed: bool, published: bool) -> dict[str, Any]:
    """What a student sees of a command grading: every test's name and points; a test's output
    only when its visibility allows it now (never a hidden test's); no stage details."""
    view = copy.deepcopy(book)
    view.pop("stages", None)
    shown = {TestVisibility.VISIBLE.value}
    if due_passed:
        shown.add(TestVisibility.AFTER_DUE_DATE.value)
    if published:
        shown.add(TestVisibility.AFTER_PUBLISHED.value)
    for entry in (view.get("notebooks") or {}).values():
        for cell in (entry.get("cells") or {}).values():
            if isinstance(cell, dict) and cell.get("visibility", TestVisibility.HIDDEN.value) not in shown:
                cell["output"] = ""
                cell["withheld"] = True
    return view


def feedback_html(book: dict[str, Any]) -> str:
    """The feedback page of a command grading. Rendered once and kept, so it shows only what a student
    may always see: the output of `visible` tests (never a hidden one's, nor one shown later)."""
    view = student_view(book, due_passed=False, published=False)
    entry = view["notebooks"][RESULTS_ENTRY]
    rows = []
    for cell in entry["cells"].values():
        output = f"<pre>{html.escape(cell['output'])}</pre>" if cell.get("output") else ""
        rows.append(
            f"<tr><td>{html.escape(cell['grade_id'])}</td><td>{cell['status']}</td>"
            f"<td>{cell['points']:g} / {cell['max_points']:g}</td><td>{output}</td></tr>"
        )
    overall = f"<pre>{html.escape(view['output'])}</pre>" if view.get("output") else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Feedback</title></head><body>"
        f"<h1>Score: {view['score']:g} / {view['max_score']:g}</h1>{overall}"
        "<table><tr><th>test</th><th>status</th><th>points</th><th>output</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )

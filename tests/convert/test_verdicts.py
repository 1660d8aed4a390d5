"""`verdicts.NotebookResult`: the one place that decides what a finding does to a cell."""

from __future__ import annotations

from typing import Any

from grader_service.convert.verdicts import Finding, NotebookResult


def result(**cells: dict[str, Any]) -> NotebookResult:
    base = {
        "name": "nb",
        "cells": {gid: {"kind": "test", "max_points": 2.0, **c} for gid, c in cells.items()},
    }
    return NotebookResult.start(base, [{"cell": "a", "kind": "repair", "message": "restored"}])


def test_zeroing_a_pass_makes_it_an_error_with_the_integrity_message() -> None:
    r = result(a={"points": 2.0, "status": "passed", "error": None})
    r.apply([Finding("tampering", "cheated", cell="a", detail="what the kernel said", zero=True)])
    assert r.cells["a"] == {
        "kind": "test",
        "max_points": 2.0,
        "points": 0.0,
        "status": "error",
        "error": {"name": "IntegrityCheck", "message": "cheated"},
    }
    assert r.tampering["a"] == ["restored", "cheated"]
    assert r.notes[-1] == {
        "cell": "a",
        "kind": "tampering",
        "message": "cheated",
        "detail": "what the kernel said",
    }


def test_zeroing_keeps_a_failure_and_its_own_error() -> None:
    error = {"name": "AssertionError", "message": "wrong"}
    r = result(a={"points": 0.0, "status": "failed", "error": error})
    r.apply([Finding("tampering", "cheated", cell="a", zero=True)])
    assert (r.cells["a"]["points"], r.cells["a"]["status"], r.cells["a"]["error"]) == (0.0, "failed", error)


def test_a_deduction_never_goes_below_zero_and_is_recorded() -> None:
    r = result(
        a={"points": 1.5, "status": "passed", "error": None},
        b={"points": 0.5, "status": "passed", "error": None},
    )
    r.apply(
        [
            Finding("integrity", "free points", cell="a", deduct=0.5),
            Finding("integrity", "more", cell="b", deduct=1.0),
        ]
    )
    assert (r.cells["a"]["points"], r.cells["b"]["points"]) == (1.0, 0.0)
    assert r.cells["a"]["status"] == "passed" and r.tampering["b"] == ["more"]


def test_a_note_changes_no_score_and_notes_appear_once() -> None:
    r = result(a={"points": 2.0, "status": "passed", "error": None})
    note = Finding("integrity", "source directory listed", detail="ls")
    r.apply([note, note, Finding("timeout", "ran in a new kernel", cell="a")])
    entry = r.finish({"kernel": "ok"})
    assert entry["cells"]["a"]["points"] == 2.0 and entry["cells"]["a"]["tampering"] == ["restored"]
    assert [n["message"] for n in entry["notes"]] == [
        "restored",
        "source directory listed",
        "ran in a new kernel",
    ]
    assert entry["execution"] == {"kernel": "ok"} and entry["status"] == "graded"

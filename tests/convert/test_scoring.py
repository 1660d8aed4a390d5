"""Scoring rules, from what was observed while a cell ran."""

from __future__ import annotations

import pytest

from grader_service.convert.kernel import CellRecord
from grader_service.convert.scoring import (
    canary_error_held,
    canary_value_held,
    mutant_passed,
    parse_number,
    score_record,
)


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3.0),
        ("1.5", 1.5),
        ("np.float64(1.5)", 1.5),
        ("-2e-1", -0.2),
        ("'1'", None),
        ("True", None),
        ("[1]", None),
    ],
)
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


def test_passing_cell_gets_full_points_and_stderr_does_not_matter() -> None:
    assert score_record(CellRecord(status="ok"), 2).points == 2.0


def test_partial_credit_is_clamped_and_the_lowest_display_counts() -> None:
    assert score_record(CellRecord(status="ok", results=["1.5"]), 3).points == 1.5
    assert score_record(CellRecord(status="ok", results=["7"]), 3).points == 3.0
    assert score_record(CellRecord(status="ok", results=["-1"]), 3).points == 0.0
    assert score_record(CellRecord(status="ok", results=["nan"]), 3).points == 0.0
    assert score_record(CellRecord(status="ok", results=["3.0", "0.5"]), 3).points == 0.5
    assert score_record(CellRecord(status="ok", results=["'text'"]), 3).points == 3.0


def test_failures() -> None:
    failed = score_record(CellRecord(status="ok", errors=[("AssertionError", "")]), 2)
    assert (failed.points, failed.status) == (0.0, "failed")
    errored = score_record(CellRecord(status="ok", reply_error=("NameError", "x")), 2)
    assert (errored.points, errored.status, errored.error) == (0.0, "error", ("NameError", "x"))
    assert score_record(CellRecord(status="timeout"), 2).status == "timeout"
    assert score_record(CellRecord(status="unresponsive"), 2).status == "timeout"
    assert score_record(CellRecord(status="dead"), 2).error[0] == "KernelDied"


def test_canary_checks() -> None:
    good = CellRecord(status="ok", reply_error=("AssertionError", "n1"), errors=[("AssertionError", "n1")])
    assert canary_error_held(good, "n1")
    assert not canary_error_held(CellRecord(status="ok"), "n1")
    assert not canary_error_held(CellRecord(status="ok", reply_error=("AssertionError", "n1")), "n1")
    assert canary_value_held(CellRecord(status="ok", results=["4.5"]), "4.5")
    assert not canary_value_held(CellRecord(status="ok", results=["3.0"]), "4.5")
    assert not canary_value_held(CellRecord(status="ok", results=[]), "4.5")


def test_mutant_verdict() -> None:
    assert mutant_passed(CellRecord(status="ok"))
    assert not mutant_passed(CellRecord(status="ok", errors=[("TypeError", "wrong answer")]))
    assert not mutant_passed(CellRecord(status="ok", results=["0.0"]))
    assert not mutant_passed(CellRecord(status="timeout"))

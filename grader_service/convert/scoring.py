"""Turning what was observed while a cell ran into points. Pure functions, no kernel.

Policy (the corpus's `expected.json["policy"]`):
- A test cell earns its points iff it raises nothing; output on stderr does not matter.
- If it displays a number as its result (its last expression), that number clamped to
  [0, points] is the score (partial credit). Should a cell display several results (student code
  called by the test can display things too), the *lowest* counts: extra displays can only lower
  a score, never raise it.
- A cell that timed out, or whose kernel died or was killed, fails.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .kernel import CellRecord

_NUMBER = re.compile(
    r"^\s*(?:(?:np|numpy)\.(?:float|int|uint)\d*\(\s*)?"
    r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan)"
    r"\s*\)?\s*$"
)


def parse_number(text: str) -> float | None:
    """The number a displayed result stands for (`3`, `1.5`, `np.float64(1.5)`), or None."""
    match = _NUMBER.match(text or "")
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


def clamp(value: float, max_points: float) -> float:
    if math.isnan(value):
        return 0.0
    return float(min(max(value, 0.0), max_points))


@dataclass(frozen=True)
class Outcome:
    points: float
    status: str  # passed | failed | error | timeout
    partial: bool = False
    error: tuple[str, str] | None = None
    # The error's name and message are what the kernel reported (student code can shape them),
    # not the grader's own words (timeouts, dead kernels).
    error_from_kernel: bool = False


def score_record(rec: CellRecord, max_points: float, cell_timeout: float | None = None) -> Outcome:
    """Score one executed test cell."""
    if rec.status == "timeout":
        limit = f" of {cell_timeout:g} s" if cell_timeout else ""
        return Outcome(
            0.0, "timeout", error=("Timeout", f"the cell exceeded the time limit{limit} and was interrupted")
        )
    if rec.status == "unresponsive":
        return Outcome(
            0.0,
            "timeout",
            error=(
                "KernelUnresponsive",
                "the cell timed out and did not stop when interrupted; the kernel was killed",
            ),
        )
    if rec.status == "dead":
        return Outcome(0.0, "error", error=("KernelDied", "the kernel died while this cell ran"))
    if rec.status == "not-run":
        return Outcome(0.0, "error", error=("NotRun", "the cell did not run"))
    if rec.failed:
        name, message = rec.error or ("Error", "")
        status = "failed" if name == "AssertionError" else "error"
        return Outcome(0.0, status, error=(name, message), error_from_kernel=True)
    values = [parse_number(text) for text in rec.results]
    numbers = [v for v in values if v is not None]
    if numbers:
        return Outcome(min(clamp(v, max_points) for v in numbers), "passed", partial=True)
    return Outcome(float(max_points), "passed")


def canary_error_held(rec: CellRecord, nonce: str) -> bool:
    """The must-fail canary failed exactly as written: AssertionError carrying the nonce."""
    return (
        rec.status == "ok"
        and rec.reply_error is not None
        and rec.reply_error[0] == "AssertionError"
        and ("AssertionError", nonce) in rec.errors
    )


def canary_value_held(rec: CellRecord, expected: str) -> bool:
    """The value canary displayed exactly the number it computes, and nothing failed."""
    return rec.status == "ok" and not rec.failed and rec.results == [expected]


def mutant_passed(rec: CellRecord) -> bool:
    """A test run with wrong answers substituted earned something: its execution is not honest."""
    if rec.status != "ok":
        return False
    outcome = score_record(rec, 1.0)
    return outcome.status == "passed" and outcome.points > 0

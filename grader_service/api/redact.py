"""What students must not see of their own grading: the code of hidden tests.

Tracebacks and error messages quote the failing line, so a failed hidden test would show its code.
Every line of hidden-test code (recorded at release) is replaced wherever it appears in what a
student gets: gradebook strings and logs.
"""

from __future__ import annotations

from typing import Any

from ..orm import Assignment

NOTICE = "[hidden test]"
# Lines this short ("pass", ")") carry no secret and would redact innocent text.
MIN_LINE = 6


def hidden_lines(assignment: Assignment) -> list[str]:
    lines = (assignment.hidden_tests or {}).get("lines", [])
    return sorted({line for line in lines if len(line) >= MIN_LINE}, key=len, reverse=True)


def _redact(text: str, lines: list[str]) -> str:
    for line in lines:
        if line in text:
            text = text.replace(line, NOTICE)
    return text


def redact_text(text: str, assignment: Assignment) -> str:
    return _redact(text, hidden_lines(assignment))


def redact_gradebook(gradebook: Any, assignment: Assignment) -> Any:
    lines = hidden_lines(assignment)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _redact(value, lines)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(gradebook) if lines else gradebook

"""No function in product code is longer than 80 lines (ruff's C901 bounds their complexity).

Long functions are where the next change goes wrong; this keeps them split into named pieces.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [ROOT / "grader_service", ROOT / "client", ROOT / "labextension" / "grader_labextension"]
MAX_LINES = 80


def _python_files() -> list[Path]:
    files = []
    for top in PRODUCT:
        for path in top.rglob("*.py"):
            parts = set(path.relative_to(ROOT).parts)
            if parts & {"tests", "node_modules", "versions", ".venv", "build"}:
                continue  # tests, the lab extension's JS deps, alembic migrations (generated)
            files.append(path)
    return sorted(files)


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function or method in `source` longer than `max_lines`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > max_lines:
                found.append((node.name, node.lineno, length))
    return found


def test_the_check_finds_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", 1, MAX_LINES + 1)]
    method = body.replace("\n", "\n    ")
    assert long_functions(f"class C:\n    async def g(self):\n    {method}\n")[0][0] == "g"
    short = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES - 1))
    assert long_functions(f"def f():\n{short}\n") == []


def test_product_code_has_no_function_over_80_lines() -> None:
    files = _python_files()
    assert any(path.name == "autograde.py" for path in files)  # the walk reaches the package
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in files
        for name, line, length in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []

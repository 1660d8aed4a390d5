"""The extension's JavaScript, as installed, stays small (issue 17: at most 500 kB)."""

from __future__ import annotations

import sys
from pathlib import Path

from .conftest import _require

LIMIT = 500_000


def test_installed_bundle_is_at_most_500_kb() -> None:
    static = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "grader-labextension" / "static"
    scripts = list(static.glob("*.js"))
    _require(bool(scripts), f"no grader-labextension JavaScript in {static} (pip install ./labextension)")
    size = sum(path.stat().st_size for path in scripts)
    assert size <= LIMIT, f"{size} bytes of JavaScript in {static}"

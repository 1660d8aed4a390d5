"""JSON from untrusted bytes, with a bound on nesting.

Python's parser recurses once per level and raises RecursionError (not ValueError) on input nested
about a thousand deep; what does parse then breaks every recursive walk of it afterwards (redaction,
serialisation, nbformat's conversion). Request bodies and uploaded notebooks are parsed here, so
deep input is one clear error at the door instead of a crash somewhere later.
"""

from __future__ import annotations

import json
from typing import Any

# A request body is a flat object with small values; 32 levels is far more than any endpoint takes.
MAX_BODY_DEPTH = 32
# Notebooks nest cell metadata and JSON outputs; real ones stay far below this.
MAX_NOTEBOOK_DEPTH = 100


class JSONError(ValueError):
    """Not JSON, or nested deeper than allowed; the message says which."""


def _check(value: Any, max_depth: int, strict: bool) -> None:
    """Walk `value` without recursion: its depth, and in strict mode its strings."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
            if strict:
                stack.extend((key, level) for key in item)
        elif isinstance(item, list):
            children = item
        else:
            if strict and isinstance(item, str) and "\0" in item:
                raise JSONError("JSON strings must not contain NUL characters (\\u0000)")
            continue
        if level > max_depth:
            raise JSONError(f"JSON is nested more than {max_depth} levels deep")
        stack.extend((child, level + 1) for child in children)


def _no_constant(name: str) -> Any:
    raise JSONError(f"{name} is not a JSON number")


def loads(data: bytes | str, max_depth: int, strict: bool = False) -> Any:
    """Parse `data`; JSONError if it is not UTF-8 JSON or nests more than `max_depth` levels.

    `strict` (request bodies, whose values reach the database) also refuses NaN and Infinity,
    which are not JSON, and NUL characters, which PostgreSQL cannot store in text.
    """
    try:
        value = json.loads(data, parse_constant=_no_constant) if strict else json.loads(data)
    except RecursionError:
        raise JSONError(f"JSON is nested more than {max_depth} levels deep") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JSONError(str(e)) from None
    _check(value, max_depth, strict)
    return value

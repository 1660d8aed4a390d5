"""Integers in URLs, parsed by the OpenAPI description's rules and nothing looser.

The spec says ids and offsets are integers: ASCII decimal digits; ids within the 32-bit range of
their columns (PostgreSQL's INTEGER), offsets within the 64-bit range the databases count in
(SQLite raises OverflowError past it, PostgreSQL "bigint out of range"). Python is looser on both counts:
``str.isdigit()`` is true for ``'²'`` and ``int()`` reads Arabic-Indic digits, ``'1_000'``,
``' 7 '`` and ``'+7'``; ``int()`` has no upper bound. Every integer a client sends in a path or
query goes through :func:`parse_integer`.
"""

from __future__ import annotations

import re

INT64_MAX = 2**63 - 1
ID_MAX = 2**31 - 1
# ASCII only ([0-9], never \\d, which is any Unicode digit); the sign is read so that "-1" is
# reported as too small rather than as not a number.
_INTEGER = re.compile(r"-?[0-9]{1,20}", re.ASCII)


class InvalidInteger(ValueError):
    """Why a text is not an acceptable integer, as the end of a sentence ("must be ...")."""


def parse_integer(raw: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """The integer `raw` spells in ASCII decimal, if within [minimum, maximum]; else InvalidInteger."""
    if not _INTEGER.fullmatch(raw):
        raise InvalidInteger(f"must be an integer written with the digits 0-9, got {raw[:40]!r}")
    value = int(raw)
    if value < minimum:
        raise InvalidInteger(f"must be at least {minimum}, got {raw}")
    if value > maximum:
        raise InvalidInteger(f"must be at most {maximum}, got {raw}")
    return value


def parse_id(raw: str) -> int | None:
    """A database id (1 .. 2**31-1) from a path, or None if `raw` cannot be one."""
    try:
        return parse_integer(raw, minimum=1, maximum=ID_MAX)
    except InvalidInteger:
        return None

"""The REST API under <base_url>api/v1/: one module per resource."""

from __future__ import annotations

from typing import Any

from . import (
    assignments,
    events,
    extensions,
    files,
    gradebook,
    grades,
    grading,
    health,
    lectures,
    metrics,
    roles,
    spec,
    submissions,
    users,
)
from .base import APIHandler, NotFoundHandler

RESOURCE_MODULES = [
    health,
    metrics,
    spec,
    users,
    lectures,
    roles,
    assignments,
    extensions,
    files,
    submissions,
    grading,
    grades,
    gradebook,
    events,
]


def api_handlers(base_url: str) -> list[tuple[str, type, dict[str, Any]]]:
    prefix = base_url + "api/v1/"
    return [
        (prefix + path + "/?$", handler, {})
        for module in RESOURCE_MODULES
        for path, handler in module.handlers
    ]


__all__ = ["APIHandler", "NotFoundHandler", "api_handlers"]

"""grader-client: a typed Python client of grader-service's REST API, and the `grader` command.

    from grader_client import GraderClient, AsyncGraderClient

Names are imported on first use, so `import grader_client` (and `grader --help`) stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "GraderClient": "grader_client.client",
    "AsyncGraderClient": "grader_client.aio",
    "Credentials": "grader_client.config",
    "resolve_credentials": "grader_client.config",
    "errors": "grader_client.errors",
    "models": "grader_client.models",
}

if TYPE_CHECKING:
    from . import errors, models
    from .aio import AsyncGraderClient
    from .client import GraderClient
    from .config import Credentials, resolve_credentials


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grader_client' has no attribute {name!r}")
    import importlib

    value = importlib.import_module(module)
    if module.rsplit(".", 1)[-1] != name:
        value = getattr(value, name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncGraderClient",
    "Credentials",
    "GraderClient",
    "__version__",
    "errors",
    "models",
    "resolve_credentials",
]

"""Fixtures: one hub (no-op proxy) with its grader service for the whole session.

The proxied layout (configurable-http-proxy) is module-scoped in test_proxy.py, the one module that
needs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .hub import HubStack


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    stack = HubStack(tmp_path_factory.mktemp("hub-direct"), layout="direct")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()

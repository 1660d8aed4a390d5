"""Fixtures for the Helm chart tests: one helm binary per machine, one render per values set."""

from __future__ import annotations

import pytest

from . import chart


@pytest.fixture(scope="session")
def helm() -> str:
    """A Helm 3 binary (fetched once per machine into ~/.cache/grader-service-test/helm)."""
    try:
        return chart.helm_binary()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"no helm binary and could not fetch one: {exc}", pytrace=False)

"""The event stream's resume support: ids, the retry hint, and streams that end when the service stops."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import DATA, World
from .service import ServiceProcess


@pytest.fixture
def lone_world(tmp_path: Path) -> Iterator[World]:
    service = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'grader.sqlite'}")
    service.start("--upgrade-db")
    try:
        yield World(service)
    finally:
        service.stop()


def test_events_have_ids_and_a_retry_hint(lone_world: World) -> None:
    world = lone_world
    r = world.submit("student", DATA / "tiny_submission.ipynb")
    assert r.status_code == 201, r.text
    with world.client("student").get(
        "events", params={"submission": r.json()["id"]}, stream=True, timeout=120
    ) as s:
        text = "".join(s.iter_content(decode_unicode=True))
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert blocks[0] == "retry: 1000"
    ids = [int(line[4:]) for b in blocks[1:] for line in b.splitlines() if line.startswith("id: ")]
    assert len(ids) == len(blocks) - 1 and ids == sorted(ids)
    assert abs(ids[-1] / 1000 - time.time()) < 120


def test_open_streams_end_when_the_service_stops(lone_world: World) -> None:
    """SIGTERM waits for in-flight requests; an endless event stream must not hold shutdown for
    `shutdown_timeout` (30 s)."""
    world = lone_world
    tutor = world.client("tutor")
    stream = tutor.get(
        "events", params={"lecture": world.lecture, "assignment": world.released}, stream=True, timeout=60
    )
    assert stream.status_code == 200
    started = time.monotonic()
    world.service.stop()
    assert time.monotonic() - started < 10
    with contextlib.suppress(requests.exceptions.RequestException):
        list(stream.iter_content())  # ends (cleanly or cut off) instead of hanging

"""Helpers for grading tests: submit, and wait on the event stream rather than polling."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from .service import Client

FINAL = ("graded", "failed")


def wait_graded(client: Client, submission_id: int, timeout: float = 180) -> list[dict[str, Any]]:
    """Follow the submission's Server-Sent Events until a final state; return the events seen."""
    events: list[dict[str, Any]] = []
    deadline = time.time() + timeout
    with client.get("events", params={"submission": submission_id}, stream=True, timeout=timeout) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                event = json.loads(line[6:])
                events.append(event)
                if event["auto_status"] in FINAL:
                    return events
            if time.time() > deadline:
                break
    raise AssertionError(f"submission {submission_id} not graded in {timeout}s; events: {events}")


def submission(client: Client, lecture: str, assignment: str, submission_id: int) -> dict[str, Any]:
    r = client.get(f"lectures/{lecture}/assignments/{assignment}/submissions/{submission_id}")
    assert r.status_code == 200, r.text
    return r.json()


def submit_files(client: Client, lecture: str, assignment: str, files: dict[str, bytes]) -> requests.Response:
    return client.post(
        f"lectures/{lecture}/assignments/{assignment}/submissions",
        files={f"f{i}": (name, data) for i, (name, data) in enumerate(files.items())},
    )

"""The student's side through the Lab server: lectures, fetch, submit, live status, results."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import EXAMPLES
from .sse import Stream
from .test_relay import wait_graded

SOLUTION = EXAMPLES / "submission" / "basics.ipynb"


async def follow(port: int, base_url: str, auth: dict[str, str], query: str) -> list[dict]:
    """The relayed status events of one submission's stream, until the service ends it."""
    stream = await Stream.open(port, f"{base_url}grader/events?{query}", auth)
    assert stream.status == 200, stream.body
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = []
    try:
        async for frame in stream.frames():
            if frame.event == "status":
                assert frame.id and frame.id.isdigit()  # the service's id, for Last-Event-ID
                events.append(frame.json())
    finally:
        stream.close()
    return events


async def test_lectures_and_assignments_with_submissions_used(api, login) -> None:
    login("bob")
    status, body = await api("GET", "lectures")
    assert status == 200
    assert [(lec["code"], lec["role"]) for lec in body["items"]] == [("intro", "student")]
    status, body = await api("GET", "lectures/intro/assignments")
    assert status == 200
    basics = {a["name"]: a for a in body["items"]}["basics"]
    assert basics["max_submissions"] == 3 and basics["submissions_used"] == 0
    assert basics["due_date"].startswith("2099-01-01") and basics["status"] == "released"


async def test_submit_from_a_fetched_notebook_and_follow_it_to_the_score(
    api, login, jp_root_dir: Path, jp_http_port: int, jp_base_url: str, jp_auth_header
) -> None:
    login("alice")
    status, fetched = await api("POST", "lectures/intro/assignments/basics/fetch", {})
    assert status == 200, fetched
    assert fetched == {"path": "intro/basics", "files": ["intro/basics/basics.ipynb"], "backup": None}
    notebook = jp_root_dir / "intro" / "basics" / "basics.ipynb"
    assert "BEGIN SOLUTION" not in notebook.read_text()  # the student version
    shutil.copy(SOLUTION, notebook)  # the student's work, saved

    status, submission = await api("POST", "lectures/intro/assignments/basics/submissions", {})
    assert status == 201, submission
    assert submission["user"] == "alice" and submission["auto_status"] in ("queued", "running", "graded")

    events = await follow(jp_http_port, jp_base_url, jp_auth_header, f"submission={submission['id']}")
    statuses = [e["auto_status"] for e in events]
    assert statuses[-1] == "graded", events
    assert set(statuses) <= {"queued", "running", "graded"}
    final = events[-1]
    assert final["score"] == final["max_score"] and final["max_score"] > 0

    path = f"lectures/intro/assignments/basics/submissions/{submission['id']}"
    status, graded = await api("GET", path)
    assert status == 200 and graded["score"] == final["score"] and graded["results_released"] is True
    status, gradebook = await api("GET", f"{path}/gradebook")
    assert status == 200 and gradebook["score"] == final["score"] and gradebook["notebooks"]
    status, history = await api("GET", "lectures/intro/assignments/basics/submissions", all="1")
    assert status == 200 and submission["id"] in [s["id"] for s in history["items"]]
    status, assignments = await api("GET", "lectures/intro/assignments")
    assert {a["name"]: a["submissions_used"] for a in assignments["items"]}["basics"] >= 1


async def test_feedback_is_html_for_a_sandbox_and_withdraw(api, login, jp_root_dir: Path, jp_fetch) -> None:
    login("bob")
    (jp_root_dir / "work").mkdir()
    shutil.copy(SOLUTION, jp_root_dir / "work" / "basics.ipynb")
    status, submission = await api(
        "POST", "lectures/intro/assignments/basics/submissions", {"path": "work/basics.ipynb"}
    )
    assert status == 201, submission
    await wait_graded(api, "basics", submission["id"])
    path = f"lectures/intro/assignments/basics/submissions/{submission['id']}"
    response = await jp_fetch("grader", *path.split("/"), "feedback")
    assert response.code == 200 and b"<html" in response.body.lower()
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox;") and "default-src 'none'" in csp and "script-src" not in csp
    # Withdrawing (allowed before the deadline) passes through; the count of used submissions stays.
    status, _ = await api("DELETE", path)
    assert status == 204
    status, error = await api("GET", path)
    assert status == 404 and error["status"] == 404 and "not found" in error["message"]

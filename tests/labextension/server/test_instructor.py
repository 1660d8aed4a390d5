"""The instructor's side through the Lab server: create, upload, release, grade, release feedback, export."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import time
from pathlib import Path

from .conftest import EXAMPLES, copy_example
from .test_relay import wait_graded

A = "lectures/intro/assignments"


async def test_create_upload_release_edit(api, login, jp_root_dir: Path) -> None:
    login("ins")
    status, created = await api(
        "POST",
        A,
        {
            "name": "week2",
            "due_date": "2099-02-01T12:00:00Z",
            "late_until": "2099-02-02T12:00:00Z",
            "late_penalty": 0.5,
            "max_submissions": 2,
            "settings": {"timeout": 60},
        },
    )
    assert status == 201, created
    assert (
        created["max_submissions"] == 2 and created["late_penalty"] == 0.5 and created["status"] == "created"
    )

    # The service's own refusals pass through unchanged.
    status, error = await api("POST", A, {"name": "week2"})
    assert status == 409 and error == {
        "message": "Assignment 'week2' already exists in lecture 'intro'",
        "status": 409,
    }
    status, error = await api("POST", A, {"name": "x", "late_penalty": 2})
    assert status == 400 and "late_penalty" in error["message"]
    status, error = await api("POST", f"{A}/week2/release")
    assert status == 409 and "Upload the assignment's source" in error["message"]

    copy_example(jp_root_dir, EXAMPLES / "source" / "basics", "course/week2")
    status, uploaded = await api("POST", f"{A}/week2/source", {"path": "course/week2"})
    assert status == 200 and uploaded["has_source"] is True, uploaded
    status, error = await api("POST", f"{A}/week2/source", {"path": "course/missing"})
    assert status == 400 and "course/missing does not exist" in error["message"]
    (jp_root_dir / "empty").mkdir()
    status, error = await api("POST", f"{A}/week2/source", {"path": "empty"})
    assert status == 400 and "contains no files" in error["message"]
    (jp_root_dir / "empty" / "notes.txt").write_text("no notebook here")
    status, error = await api("POST", f"{A}/week2/source", {"path": "empty"})  # a notebook assignment
    assert status == 400 and "no notebook" in error["message"]

    status, released = await api("POST", f"{A}/week2/release")
    assert status == 200 and released["status"] == "released" and released["max_score"] > 0
    status, edited = await api("PATCH", f"{A}/week2", {"title": "Week 2", "max_submissions": None})
    assert status == 200 and edited["title"] == "Week 2" and edited["max_submissions"] is None
    status, error = await api("PATCH", f"{A}/week2", {"colour": "red"})
    assert status == 400 and "Unknown field(s): colour" in error["message"]
    status, listing = await api("GET", A)
    assert "week2" in [a["name"] for a in listing["items"]]


async def test_grading_manual_scores_feedback_release_and_export(
    api, login, course, jp_root_dir: Path
) -> None:
    with course.client("alice") as alice:
        (jp_root_dir / "alice").mkdir()
        shutil.copy(EXAMPLES / "submission" / "basics.ipynb", jp_root_dir / "alice" / "basics.ipynb")
        submitted = alice.submit("intro", "held", jp_root_dir / "alice")
    login("ins")
    graded = await wait_graded(api, "held", submitted.id)
    assert graded["auto_status"] == "graded"
    sub = f"{A}/held/submissions/{submitted.id}"

    status, logs = await api("GET", f"{sub}/logs")
    assert status == 200 and isinstance(logs["text"], str)
    status, listing = await api("GET", f"{A}/held/submissions", student="alice")
    assert status == 200 and [s["user"] for s in listing["items"]] == ["alice"]

    status, jobs = await api("POST", f"{A}/held/regrade", {"submissions": [submitted.id]})
    assert status == 202 and jobs["jobs"][0]["submission"] == submitted.id
    status, run = await api("POST", f"{A}/held/regrade", {"all": True})
    assert status == 201 and run["total"] >= 1, run
    status, progress = await api("GET", f"{A}/held/grading-runs/{run['id']}")
    assert status == 200 and progress["id"] == run["id"] and "counts" in progress
    for body in ({}, {"submissions": []}, {"submissions": ["1"]}, {"submissions": [0]}):
        status, error = await api("POST", f"{A}/held/regrade", body)
        assert status == 400, body
    # The submission still reads "graded" until a worker claims the regrade: wait for the run itself.
    deadline = time.monotonic() + 120
    while not progress["done"]:
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.2)
        status, progress = await api("GET", f"{A}/held/grading-runs/{run['id']}")
    await wait_graded(api, "held", submitted.id)

    status, scored = await api("PATCH", sub, {"score": 7.5, "comment": "Good work"})
    assert status == 200 and scored["manual_score"] == 7.5 and scored["comment"] == "Good work"
    status, released = await api("POST", f"{A}/held/feedback-release")
    assert status == 200 and released["released"] >= 1
    status, html = await api("GET", f"{sub}/feedback")
    assert status == 200 and "<html" in html.lower()

    status, exported = await api("POST", f"{A}/held/export", {"path": "grades/held.csv"})
    assert status == 200 and exported == {"path": "grades/held.csv"}
    rows = list(csv.DictReader(io.StringIO((jp_root_dir / "grades" / "held.csv").read_text())))
    assert any(row.get("user") == "alice" for row in rows), rows
    status, error = await api("POST", f"{A}/held/export", {"path": "grades/held.csv"})
    assert status == 409 and "exists already" in error["message"]
    status, _ = await api("POST", f"{A}/held/export", {"path": "grades/held.csv", "overwrite": True})
    assert status == 200
    status, error = await api("POST", f"{A}/held/export", {"path": "grades/held.txt"})
    assert status == 400 and "must end in .csv" in error["message"]

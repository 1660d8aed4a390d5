"""Grading end to end through the service: submit over HTTP, follow the event stream, check results."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from base64 import b64decode
from pathlib import Path

import pytest

from .conftest import DATA, World, zip_dir
from .grading_utils import submission, submit_files, wait_graded
from .service import ServiceProcess

A = "lectures/ml/assignments"
# The uids jobs run as when the service runs as root (LocalAutogradeExecutor.sandbox_uid_base).
SANDBOX_UIDS = range(61000, 61256)


def wrong_submission(tmp_path: Path) -> Path:
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = "def double(x):\n    return 4 if x == 2 else 0"
    path = tmp_path / "wrong.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_submit_stream_and_score(world: World) -> None:
    sub = world.submit("student").json()
    events = wait_graded(world.client("student"), sub["id"])
    states = [e["auto_status"] for e in events]
    assert states[-1] == "graded" and "running" in states or states == ["graded"], states
    # feedback_policy manual: the student learns it is graded, not the score, until it is released
    assert "score" not in events[-1] and events[-1]["results_released"] is False
    got = submission(world.client("student"), "ml", "tiny", sub["id"])
    assert got["auto_status"] == "graded" and got["score"] is None
    got = submission(world.client("tutor"), "ml", "tiny", sub["id"])
    assert got["auto_status"] == "graded" and got["score"] == 3.0 and got["max_score"] == 3.0


def test_hidden_test_code_never_reaches_students(world: World, tmp_path: Path) -> None:
    sub = world.submit("student", notebook=wrong_submission(tmp_path)).json()
    assert wait_graded(world.client("tutor"), sub["id"])[-1]["score"] == 2.0
    assert world.client("instructor").post(f"{A}/tiny/feedback-release").status_code == 200
    base = f"{A}/tiny/submissions/{sub['id']}"
    student = world.client("student")
    gradebook = student.get(f"{base}/gradebook").json()
    cell = gradebook["notebooks"]["tiny"]["cells"]["test_double_hidden"]
    assert cell["status"] == "failed" and cell["points"] == 0.0
    for text in (
        json.dumps(gradebook),
        student.get(f"{base}/logs").text,
        world.client("tutor").get(f"{base}/feedback").text,
    ):
        assert "double(-3)" not in text
    assert world.client("other_student").get(f"{base}/gradebook").status_code == 404


SPY = """import base64, builtins, os, sys
def double(x):
    payload = base64.b64encode(repr(sys._getframe(1).f_code.co_consts).encode()).decode()
    builtins._stash = payload
    os.write(2, ('LE' + 'AK>' + payload + '\\n').encode())
    if x == -3:
        raise ValueError('LE' + 'AK>' + payload)
    return x + x"""


def test_hidden_test_spied_on_reaches_no_student_representation(world: World, tmp_path: Path) -> None:
    """A submission that reads the hidden test from the caller's frame and brings it out base64-encoded
    on stderr, in an exception and in a later cell: no student representation shows any of it."""
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = SPY
    later = {"cell_type": "code", "metadata": {}, "source": "print('LE' + 'AK>' + _stash)", "outputs": [],
             "execution_count": None, "id": "later1"}  # fmt: skip
    nb["cells"].append(later)
    path = tmp_path / "spy.ipynb"
    path.write_text(json.dumps(nb))
    sub = world.submit("student", notebook=path).json()
    student = world.client("student")
    assert wait_graded(world.client("tutor"), sub["id"])[-1]["score"] == 2.0
    base = f"{A}/tiny/submissions/{sub['id']}"
    staff_book = json.dumps(world.client("tutor").get(f"{base}/gradebook").json())
    # What the spy got out of the hidden test's frame (its constants include -6); before the hidden
    # test it only saw the visible test's, which the student may see.
    stolen = [p for p in re.findall(r"LEAK>([A-Za-z0-9+/=]+)", staff_book) if "-6" in b64decode(p).decode()]
    assert stolen, "the spy did not run, so this proves nothing"
    assert world.client("instructor").post(f"{A}/tiny/feedback-release").status_code == 200
    events = wait_graded(student, sub["id"])
    assert events[-1]["score"] == 2.0, events
    seen = {
        "events": json.dumps(events),
        "submission": json.dumps(student.get(base).json()),
        "gradebook": json.dumps(student.get(f"{base}/gradebook").json()),
        "logs": student.get(f"{base}/logs").text,
        "feedback": student.get(f"{base}/feedback").text,
        "list": json.dumps(student.get(f"{A}/tiny/submissions").json()),
    }
    for where, text in seen.items():
        assert "double(-3)" not in text and not [p for p in stolen if p[:20] in text], where
    book = json.loads(seen["gradebook"])["notebooks"]["tiny"]
    hidden = book["cells"]["test_double_hidden"]
    assert (hidden["status"], hidden["error"]) == ("error", {"name": "ValueError", "message": ""})
    assert "Output not shown" in seen["feedback"]


def test_disk_limit_ends_grading_with_a_reason_students_and_staff_see(world: World, tmp_path: Path) -> None:
    ins = world.client("instructor")
    # (Under the immediate policy students see results, and why a grading failed, at once.)
    disky = {"name": "disky", "settings": {"disk": "32Mi"}, "feedback_policy": "immediate"}
    assert ins.post(A, json=disky).status_code == 201
    r = ins.put(f"{A}/disky/files", data=zip_dir(DATA / "tiny"), headers={"Content-Type": "application/zip"})
    assert r.status_code == 200, r.text
    assert ins.patch(f"{A}/disky", json={"status": "released"}).status_code == 200
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = "for i in range(48):\n    open(f'part{i}.bin', 'wb').write(b'0' * (1 << 20))"
    path = tmp_path / "filler.ipynb"
    path.write_text(json.dumps(nb))
    sub = world.submit("student", notebook=path, assignment="disky").json()
    student = world.client("student")
    events = wait_graded(student, sub["id"])
    expected = "Grading stopped: the job reached its disk limit (32Mi)"
    assert events[-1]["auto_status"] == "failed" and events[-1]["reason"].startswith(expected), events
    base = f"{A}/disky/submissions/{sub['id']}"
    assert student.get(f"{base}/logs").text.startswith(expected)
    assert world.client("tutor").get(f"{base}/logs").text.startswith(expected)
    assert student.get(base).json()["auto_status"] == "failed"
    assert ins.patch(f"{A}/disky", json={"settings": {"disk": "a lot"}}).status_code == 400


def test_redaction_replaces_hidden_lines() -> None:
    from grader_service.api.redact import redact_gradebook, redact_text
    from grader_service.orm import Assignment

    assignment = Assignment(hidden_tests={"lines": ["assert double(-3) == -6", "pass"]})
    gradebook = {"cells": {"t": {"error": {"message": "line 3: assert double(-3) == -6 failed"}}}, "n": 1}
    redacted = redact_gradebook(gradebook, assignment)
    assert redacted == {"cells": {"t": {"error": {"message": "line 3: [hidden test] failed"}}}, "n": 1}
    assert redact_text("x\n  assert double(-3) == -6\npass", assignment) == "x\n  [hidden test]\npass"


def test_feedback_release_policy(world: World) -> None:
    sub = world.submit("student").json()
    wait_graded(world.client("student"), sub["id"])
    base = f"{A}/tiny/submissions/{sub['id']}/feedback"
    r = world.client("student").get(base)
    assert r.status_code == 403 and "not been released" in r.json()["message"]
    page = world.client("tutor").get(base)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert world.client("tutor").post(f"{A}/tiny/feedback-release").status_code == 403
    released = world.client("instructor").post(f"{A}/tiny/feedback-release").json()["released"]
    assert released >= 1
    page = world.client("student").get(base)
    assert page.status_code == 200
    html = page.text
    assert "double(-3)" not in html and "3" in html and "<script src=" not in html


def test_regrade_one_and_grading_run(world: World) -> None:
    tutor = world.client("tutor")
    subs = [world.submit(who).json() for who in ("student", "other_student")]
    for s in subs:
        wait_graded(tutor, s["id"])
    r = tutor.post(f"{A}/tiny/submissions/{subs[0]['id']}/autograde")
    assert r.status_code == 202 and r.json()["state"] in ("queued", "running", "succeeded")
    wait_graded(tutor, subs[0]["id"])
    r = tutor.post(f"{A}/tiny/grading-runs", json={"scope": "latest"})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["total"] >= 2
    latest = tutor.get(f"{A}/tiny/submissions", params={"latest": "true"}).json()["items"]
    for s in latest:
        wait_graded(tutor, s["id"])
    progress = tutor.get(f"{A}/tiny/grading-runs/{run['id']}").json()
    assert progress["done"] and progress["counts"]["succeeded"] == run["total"]
    assert tutor.post(f"{A}/tiny/grading-runs", json={"scope": "some"}).status_code == 400
    assert world.client("student").post(f"{A}/tiny/grading-runs").status_code == 403


def test_scores_table_json_and_csv(world: World) -> None:
    sub = world.submit("other_student").json()
    wait_graded(world.client("tutor"), sub["id"])
    table = world.client("tutor").get(f"{A}/tiny/scores").json()
    rows = {row["user"]: row for row in table["items"]}
    assert rows["stu2"]["submission"] == sub["id"] and rows["stu2"]["final_score"] == 3.0
    r = world.client("tutor").get(f"{A}/tiny/scores", params={"format": "csv"})
    assert r.headers["Content-Type"].startswith("text/csv")
    parsed = {row["user"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert float(parsed["stu2"]["final_score"]) == 3.0
    assert world.client("student").get(f"{A}/tiny/scores").status_code == 403


def test_health_reports_queue(world: World) -> None:
    health = world.client(None).get("health").json()
    assert set(health["queue"]) == {"queued", "running", "oldest_queued_seconds", "backlogged"}
    assert health["executor"] == "local"
    assert health["sandbox"] == "fork-server" and health["grading"] is True and "grading_reason" not in health


def test_sandbox_holds(world: World, tmp_path: Path) -> None:
    """The default sandbox (the fork server's namespaces) holds against the escape notebook."""
    assert "Local executor sandbox: fork server" in world.service.read_log()
    check_escape_notebook(world, tmp_path)


def test_per_job_bubblewrap_sandbox_holds(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Without the fork server each job is a new bubblewrap process: it holds just the same."""
    data_dir = tmp_path_factory.mktemp("bwrap-service") / "data"
    service = ServiceProcess(
        data_dir,
        f"sqlite:///{data_dir.parent / 'grader.sqlite'}",
        config="c.LocalAutogradeExecutor.fork_server = False\n",
    )
    service.start("--upgrade-db")
    try:
        assert "Local executor sandbox: bubblewrap" in service.read_log()
        assert service.client(None).get("health").json()["sandbox"] == "bubblewrap"
        check_escape_notebook(World(service), tmp_path)
    finally:
        service.stop()


def check_escape_notebook(world: World, tmp_path: Path) -> None:
    """Every escape attempt in the escape notebook fails; a 10000 s sleep only costs its own cell."""
    ins = world.client("instructor")
    assert ins.post(A, json={"name": "escape", "settings": {"cell_timeout": 6}}).status_code == 201
    assert (
        ins.put(
            f"{A}/escape/files", data=zip_dir(DATA / "escape"), headers={"Content-Type": "application/zip"}
        ).status_code
        == 200
    )
    assert ins.patch(f"{A}/escape", json={"status": "released"}).status_code == 200
    release = ins.get(f"{A}/escape/files", params={"version": "release"}).content
    import zipfile

    notebook = zipfile.ZipFile(io.BytesIO(release)).read("escape.ipynb")
    data_dir = world.service.data_dir
    secret = tmp_path / "secrets" / "service-secret.txt"
    secret.parent.mkdir()
    secret.write_text("s3cret")
    targets = {
        "read": [
            str(secret),
            str(data_dir / "grader.sqlite"),
            world.service.db_url.replace("sqlite:///", ""),
            str(data_dir / "cookie_secret"),
            str(world.service.config_file),
            "/root/.ssh/id_rsa",
            str(Path.home() / ".bash_history"),
        ],
        "list": [str(data_dir), str(data_dir / "jobs"), str(data_dir / "repos"), str(secret.parent)],
        "write": [str(data_dir / "pwned"), "/tmp/../etc/pwned", str(data_dir / "jobs" / "pwned")],
        "service_port": world.service.port,
        "service_pid": world.service.proc.pid,
    }
    r = submit_files(
        world.client("student"),
        "ml",
        "escape",
        {"escape.ipynb": notebook, "targets.json": json.dumps(targets).encode()},
    )
    assert r.status_code == 201, r.text
    events = wait_graded(world.client("tutor"), r.json()["id"], timeout=300)
    gradebook = world.client("tutor").get(f"{A}/escape/submissions/{r.json()['id']}/gradebook").json()
    assert events[-1]["auto_status"] == "graded", gradebook
    assert events[-1]["score"] == 9.0, json.dumps(gradebook, indent=1)[:4000]
    assert not (data_dir / "pwned").exists()
    assert world.client(None).get("health").json()["status"] == "ok"
    # Nothing a job started survives it: once no job runs, no process runs as a sandbox uid.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        queue = world.client(None).get("health").json()["queue"]
        if queue["queued"] == 0 and queue["running"] == 0:
            break
        time.sleep(0.2)
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_grading_process(int(pid))]
    assert not leftovers, [_describe(int(pid)) for pid in leftovers]


def _describe(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"{pid} (gone)"
    wanted = ("Name", "State", "PPid", "Uid", "NSpid")
    return f"{pid} {cmdline[:200]!r} " + " ".join(line for line in status if line.split(":")[0] in wanted)


def _is_grading_process(pid: int) -> bool:
    """A process of a job: it runs as one of the sandbox uids, or names the job's files."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
        uids = status.split("Uid:")[1].split()[:4]
        if status.split("State:")[1].split()[0] == "Z":  # a zombie runs nothing
            return False
    except (OSError, IndexError):
        return False
    # Another checkout's tests on the same machine use the same uids: only this Python's jobs count.
    ours = sys.executable.encode() in cmdline
    if os.geteuid() == 0 and ours and any(SANDBOX_UIDS.start <= int(uid) < SANDBOX_UIDS.stop for uid in uids):
        return True
    return b"escape.ipynb" in cmdline or (b"ipykernel" in cmdline and b"/job/" in cmdline)


def test_jobs_graded_side_by_side_each_score_exactly(world: World, tmp_path: Path) -> None:
    """Every job of an assignment is staged from the one cached source (a copy of its own): jobs
    graded at once, correct and wrong ones interleaved, get exactly their own scores, and none is
    taken for reading the instructor's files."""
    tutor = world.client("tutor")
    wrong = wrong_submission(tmp_path)
    expected = {}
    for i in range(6):
        notebook = wrong if i % 3 == 2 else None
        sub = world.submit("student" if i % 2 else "other_student", notebook=notebook).json()
        expected[sub["id"]] = 2.0 if notebook else 3.0
    for sid, score in expected.items():
        assert wait_graded(tutor, sid)[-1]["score"] == score
        gradebook = tutor.get(f"{A}/tiny/submissions/{sid}/gradebook").json()
        notes = [n for nb in gradebook["notebooks"].values() for n in nb["notes"]]
        assert not gradebook["tampering"] and not [n for n in notes if n["kind"] == "tampering"], notes


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser")
def test_other_local_users_cannot_reach_job_directories(world: World) -> None:
    """Job directories are open to the sandbox's uid; the data dir the service made keeps everyone else out."""
    data_dir = world.service.data_dir
    assert data_dir.stat().st_mode & 0o077 == 0, oct(data_dir.stat().st_mode)
    jobs = data_dir / "jobs" / "probe"
    jobs.mkdir(parents=True, exist_ok=True)
    jobs.chmod(0o777)
    for command in (f"touch {jobs}/forged", f"ls {data_dir}"):
        attempt = subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", command], capture_output=True)
        assert attempt.returncode != 0, command
    assert not (jobs / "forged").exists()
    jobs.rmdir()

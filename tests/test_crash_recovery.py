"""Kill the service with SIGKILL mid-grading, restart it: every submission ends graded exactly once."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from sqlalchemy import func, select

from grader_service.orm import GradingJob, Submission

from .conftest import DATA, zip_dir
from .grading_utils import wait_graded
from .service import ServiceProcess

CONFIG = """
c.Scheduler.concurrency = 2
c.Scheduler.lease_seconds = 4
"""


def slow_notebook(tmp_path: Path) -> bytes:
    nb = json.loads((DATA / "tiny_submission.ipynb").read_text())
    nb["cells"][1]["source"] = "import time\ntime.sleep(2)\ndef double(x):\n    return x + x"
    return json.dumps(nb).encode()


def test_sigkill_mid_grading_then_restart(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'crash.sqlite'}", config=CONFIG)
    svc.start()
    admin = svc.client(svc.token("root", admin=True))
    assert admin.post("lectures", json={"code": "c", "name": "C"}).status_code == 201
    assert admin.post("lectures/c/assignments", json={"name": "t"}).status_code == 201
    assert (
        admin.put(
            "lectures/c/assignments/t/files",
            data=zip_dir(DATA / "tiny"),
            headers={"Content-Type": "application/zip"},
        ).status_code
        == 200
    )
    assert admin.patch("lectures/c/assignments/t", json={"status": "released"}).status_code == 200
    body = slow_notebook(tmp_path)
    ids = []
    for i in range(5):
        token = svc.token(f"s{i}")
        admin.put(f"lectures/c/roles/s{i}", json={"role": "student"})
        r = svc.client(token).post(
            "lectures/c/assignments/t/submissions",
            data=body,
            params={"filename": "tiny.ipynb"},
            headers={"Content-Type": "application/x-ipynb+json"},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    deadline = time.time() + 60
    while admin.get("health").json()["queue"]["running"] == 0:
        assert time.time() < deadline, "nothing started grading"
        time.sleep(0.05)
    svc.stop(signal.SIGKILL)
    with svc.engine.connect() as conn:
        running = conn.execute(select(func.count()).where(GradingJob.state == "running")).scalar()
    assert running >= 1  # the crash really interrupted grading

    svc.start()
    for submission_id in ids:
        assert wait_graded(admin, submission_id, timeout=180)[-1]["auto_status"] == "graded"
    svc.stop()
    with svc.engine.connect() as conn:
        subs = conn.execute(select(Submission.id, Submission.auto_status, Submission.score)).all()
        assert sorted(s.id for s in subs) == sorted(ids)
        assert all(s.auto_status == "graded" and s.score == 3.0 for s in subs), subs
        per_submission = dict(
            conn.execute(
                select(GradingJob.submission_id, func.count())
                .where(GradingJob.state == "succeeded")
                .group_by(GradingJob.submission_id)
            ).all()
        )
        assert per_submission == {i: 1 for i in ids}
        unfinished = conn.execute(
            select(func.count()).where(GradingJob.state.in_(("queued", "running")))
        ).scalar()
        assert unfinished == 0

"""The REST API end to end over real HTTP: the instructor's and the student's paths."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

from .conftest import DATA, World, zip_dir

A = "lectures/ml/assignments"


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def new_released_assignment(world: World, name: str, **fields) -> str:
    ins = world.client("instructor")
    assert ins.post(A, json={"name": name, **fields}).status_code == 201
    r = ins.put(f"{A}/{name}/files", data=zip_dir(DATA / "tiny"), headers={"Content-Type": "application/zip"})
    assert r.status_code == 200, r.text
    r = ins.patch(f"{A}/{name}", json={"status": "released"})
    assert r.status_code == 200, r.text
    return name


def test_health_and_user(world: World) -> None:
    health = world.client(None).get("health").json()
    assert health["status"] == "ok" and health["database"] == "ok" and health["version"]
    me = world.client("tutor").get("user").json()
    assert me == {"name": "tut", "display_name": None, "admin": False, "roles": {"ml": "tutor"}}
    assert world.client("admin").get("user").json()["admin"] is True


def test_release_produces_student_version(world: World) -> None:
    assignment = world.client("student").get(f"{A}/tiny").json()
    assert assignment["status"] == "released" and assignment["max_score"] == 3.0
    r = world.client("student").get(f"{A}/tiny/files")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert set(archive.namelist()) == {"tiny.ipynb", "data.csv"}
    student_nb = archive.read("tiny.ipynb").decode()
    assert "return 2 * x" not in student_nb and "HIDDEN" not in student_nb and "double(-3)" not in student_nb
    assert "YOUR CODE HERE" in student_nb
    source = zipfile.ZipFile(io.BytesIO(world.client("tutor").get(f"{A}/tiny/files").content))
    assert "double(-3)" in source.read("tiny.ipynb").decode()


def test_invalid_source_cannot_be_released(world: World, tmp_path) -> None:
    ins = world.client("instructor")
    assert ins.post(A, json={"name": "broken"}).status_code == 201
    nb = json.loads((DATA / "tiny" / "tiny.ipynb").read_text())
    nb["cells"][3]["metadata"]["nbgrader"]["grade_id"] = "test_double"  # duplicate grade id
    (tmp_path / "broken.ipynb").write_text(json.dumps(nb))
    r = ins.put(f"{A}/broken/files", data=zip_dir(tmp_path), headers={"Content-Type": "application/zip"})
    assert r.status_code == 200
    r = ins.patch(f"{A}/broken", json={"status": "released"})
    assert r.status_code == 422
    assert "broken, cell test_double: duplicate grade_id" in r.json()["message"]
    assert ins.get(f"{A}/broken").json()["status"] == "created"
    assert world.client("student").get(f"{A}/broken/files").status_code == 404


def test_release_needs_source_and_valid_transitions(world: World) -> None:
    ins = world.client("instructor")
    assert ins.post(A, json={"name": "empty"}).status_code == 201
    r = ins.patch(f"{A}/empty", json={"status": "released"})
    assert r.status_code == 409 and "Upload" in r.json()["message"]
    r = ins.patch(f"{A}/empty", json={"status": "completed"})
    assert r.status_code == 409 and "cannot change from created to completed" in r.json()["message"]


def test_submit_list_get_download(world: World) -> None:
    r = world.submit("student")
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["user"] == "stu" and len(sub["commit_hash"]) == 40 and sub["late"] is False
    assert sub["max_score"] == 3.0 and sub["auto_status"] in ("not_queued", "queued", "running", "graded")
    got = world.client("student").get(f"{A}/tiny/submissions/{sub['id']}").json()
    assert got["commit_hash"] == sub["commit_hash"]
    files = zipfile.ZipFile(
        io.BytesIO(world.client("tutor").get(f"{A}/tiny/submissions/{sub['id']}/files").content)
    )
    assert files.read("tiny.ipynb") == (DATA / "tiny_submission.ipynb").read_bytes()


def test_pagination_newest_first_and_filters(world: World) -> None:
    ids = [world.submit("other_student").json()["id"] for _ in range(3)]
    tutor = world.client("tutor")
    page = tutor.get(f"{A}/tiny/submissions", params={"user": "stu2", "limit": 2}).json()
    assert page["total"] >= 3 and page["limit"] == 2 and len(page["items"]) == 2
    assert [s["id"] for s in page["items"]] == sorted(ids, reverse=True)[:2]
    rest = tutor.get(f"{A}/tiny/submissions", params={"user": "stu2", "limit": 2, "offset": 2}).json()
    assert rest["items"] and rest["items"][0]["id"] < page["items"][-1]["id"]
    latest = tutor.get(f"{A}/tiny/submissions", params={"latest": "true"}).json()["items"]
    assert [s["id"] for s in latest if s["user"] == "stu2"] == [max(ids)]
    assert len({s["user"] for s in latest}) == len(latest)
    assert tutor.get(f"{A}/tiny/submissions", params={"limit": "x"}).status_code == 400
    assert tutor.get(f"{A}/tiny/submissions", params={"offset": "-1"}).status_code == 400


def test_deadline_and_late_policy(world: World) -> None:
    new_released_assignment(
        world, "late-ok", due_date=iso(timedelta(hours=-1)), late_until=iso(timedelta(hours=1))
    )
    r = world.submit("student", assignment="late-ok")
    assert r.status_code == 201 and r.json()["late"] is True and 3500 < r.json()["late_seconds"] < 3700
    new_released_assignment(world, "closed", due_date=iso(timedelta(hours=-1)))
    r = world.submit("student", assignment="closed")
    assert r.status_code == 403 and "deadline" in r.json()["message"]
    assert world.submit("tutor", assignment="closed").status_code == 201  # staff may test after the deadline


def test_max_submissions_counts_withdrawn_ones(world: World) -> None:
    new_released_assignment(world, "twice", max_submissions=2)
    first = world.submit("student", assignment="twice").json()
    assert world.client("student").delete(f"{A}/twice/submissions/{first['id']}").status_code == 204
    assert world.submit("student", assignment="twice").status_code == 201
    r = world.submit("student", assignment="twice")
    assert r.status_code == 403 and "all 2 submissions" in r.json()["message"]
    assert world.submit("other_student", assignment="twice").status_code == 201


def test_submissions_used_is_the_callers_own_count(world: World) -> None:
    """Every assignment response says how many submissions the caller made, withdrawn ones included."""
    new_released_assignment(world, "counted", max_submissions=3)
    first = world.submit("student", assignment="counted").json()
    assert world.client("student").delete(f"{A}/counted/submissions/{first['id']}").status_code == 204
    assert world.submit("student", assignment="counted").status_code == 201

    def used(who: str) -> dict[str, int]:
        items = world.client(who).get(f"{A}?limit=100").json()["items"]
        return {a["name"]: a["submissions_used"] for a in items}

    assert used("student")["counted"] == 2
    assert used("other_student")["counted"] == 0
    assert used("instructor")["counted"] == 0
    assert world.client("student").get(f"{A}/counted").json()["submissions_used"] == 2
    # Each assignment of the page has its own count (one grouped query, not one per row).
    new_released_assignment(world, "counted_once")
    assert world.submit("student", assignment="counted_once").status_code == 201
    counts = used("student")
    assert (counts["counted"], counts["counted_once"]) == (2, 1)
    patched = world.client("instructor").patch(f"{A}/counted", json={"title": "Counted"}).json()
    assert patched["submissions_used"] == 0


def test_completed_assignment_refuses_students(world: World) -> None:
    new_released_assignment(world, "done")
    assert world.client("instructor").patch(f"{A}/done", json={"status": "completed"}).status_code == 200
    r = world.submit("student", assignment="done")
    assert r.status_code == 403 and "completed" in r.json()["message"]


def test_manual_grading_and_soft_delete(world: World) -> None:
    sub = world.submit("student").json()
    path = f"{A}/tiny/submissions/{sub['id']}"
    tutor = world.client("tutor")
    r = tutor.patch(path, json={"manual_score": 2.5, "comment": "nice", "manual_status": "done"})
    assert r.status_code == 200
    assert r.json()["score"] == 2.5 and r.json()["comment"] == "nice" and r.json()["manual_status"] == "done"
    # What older clients send (the values before alembic 0006) still means the same.
    assert tutor.patch(path, json={"manual_status": "not_graded"}).json()["manual_status"] == "needed"
    assert tutor.patch(path, json={"manual_status": "graded"}).json()["manual_status"] == "done"
    assert tutor.patch(path, json={"manual_status": ["done"]}).status_code == 400
    r = tutor.patch(path, json={"manual_score": 4})
    assert r.status_code == 400 and "exceeds the maximum" in r.json()["message"]
    assert world.client("tutor").delete(path).status_code == 403
    assert world.client("student").delete(path).status_code == 204
    assert world.client("student").get(path).status_code == 404
    ids = [s["id"] for s in tutor.get(f"{A}/tiny/submissions", params={"limit": 1000}).json()["items"]]
    assert sub["id"] not in ids
    # The commit survives a soft delete.
    repos = world.service.data_dir / "repos" / "submissions"
    assert any((repo / "refs" / "heads" / "main").exists() for repo in repos.glob("*/*.git"))


def test_withdraw_after_deadline_only_by_instructor(world: World) -> None:
    new_released_assignment(
        world, "past", due_date=iso(timedelta(seconds=-5)), late_until=iso(timedelta(hours=1))
    )
    sub = world.submit("student", assignment="past").json()
    r = world.client("student").delete(f"{A}/past/submissions/{sub['id']}")
    assert r.status_code == 403 and "before the deadline" in r.json()["message"]
    assert world.client("instructor").delete(f"{A}/past/submissions/{sub['id']}").status_code == 204


def test_reupload_after_release_rereleases(world: World, tmp_path) -> None:
    new_released_assignment(world, "fixme")
    nb = json.loads((DATA / "tiny" / "tiny.ipynb").read_text())
    nb["cells"][2]["metadata"]["nbgrader"]["points"] = 5
    (tmp_path / "tiny.ipynb").write_text(json.dumps(nb))
    ins = world.client("instructor")
    r = ins.put(f"{A}/fixme/files", data=zip_dir(tmp_path), headers={"Content-Type": "application/zip"})
    assert r.status_code == 200 and r.json()["max_score"] == 6.0
    nb["cells"][2]["metadata"]["nbgrader"]["points"] = -1
    (tmp_path / "tiny.ipynb").write_text(json.dumps(nb))
    before = r.json()["source_commit"]
    r = ins.put(f"{A}/fixme/files", data=zip_dir(tmp_path), headers={"Content-Type": "application/zip"})
    assert r.status_code == 422 and "tiny, cell test_double" in r.json()["message"]
    after = ins.get(f"{A}/fixme").json()
    assert after["source_commit"] == before and after["max_score"] == 6.0


def test_roles_and_lecture_management(world: World) -> None:
    admin, ins = world.client("admin"), world.client("instructor")
    assert ins.put("lectures/ml/roles/newcomer", json={"role": "tutor"}).status_code == 201
    assert ins.put("lectures/ml/roles/newcomer", json={"role": "student"}).status_code == 200
    roles = ins.get("lectures/ml/roles", params={"role": "student"}).json()["items"]
    assert {"newcomer", "stu", "stu2"} <= {r["user"] for r in roles}
    assert ins.put("lectures/ml/roles/x", json={"role": "god"}).status_code == 400
    assert ins.delete("lectures/ml/roles/newcomer").status_code == 204
    assert ins.delete("lectures/ml/roles/newcomer").status_code == 404
    r = admin.delete("lectures/ml")
    assert r.status_code == 409 and "still has assignments" in r.json()["message"]
    r = ins.patch("lectures/ml", json={"state": "complete"})
    assert r.status_code == 200 and r.json()["state"] == "complete"
    assert [lec["code"] for lec in ins.get("lectures", params={"state": "complete"}).json()["items"]] == [
        "ml"
    ]
    ins.patch("lectures/ml", json={"state": "active"})

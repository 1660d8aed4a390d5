"""GraderClient against the real service: every operation, typed results, errors with the service's message."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from grader_client import GraderClient, errors, models

from .conftest import EXAMPLES, Course

SOLVED = EXAMPLES / "submission" / "basics.ipynb"


def test_health_and_spec_need_no_token(course: Course) -> None:
    from grader_client.config import Credentials

    with GraderClient(credentials=Credentials(course.url, None, "none")) as anonymous:
        health = anonymous.health()
        assert isinstance(health, models.Health) and health.ok and health.database == "ok"
        assert health.queue is not None and health.queue.queued >= 0
        assert "openapi: 3" in anonymous.openapi()
        with pytest.raises(errors.Unauthorized):
            anonymous.whoami()


def test_whoami_and_forbidden_message(course: Course) -> None:
    with course.client("student") as alice:
        me = alice.whoami()
        assert me.name == "alice" and me.admin is False and me.roles == {"intro": "student"}
        with pytest.raises(errors.Forbidden) as caught:
            alice.set_role("intro", "mallory", "instructor")
    error = caught.value
    assert error.status == 403 and error.error == "Forbidden"
    assert (
        str(error)
        == "Forbidden: This needs the instructor role in lecture 'intro'; you have the student role"
    )
    assert error.exit_code == 1


def test_not_found_and_conflict_are_typed(course: Course) -> None:
    with course.client("admin") as admin:
        with pytest.raises(errors.NotFound, match="Lecture 'nope' not found"):
            admin.lecture("nope")
        with pytest.raises(errors.Conflict, match="already exists"):
            admin.create_lecture("intro")
        with pytest.raises(errors.BadRequest, match="slug"):
            admin.create_lecture("Not A Slug")


def test_path_parameters_are_one_segment_each(course: Course) -> None:
    with course.client("admin") as admin:
        with pytest.raises(errors.NotFound):
            admin.lecture("intro/assignments")  # quoted: not a way to reach another endpoint
        with pytest.raises(errors.UsageError):
            admin.lecture("..")


def test_lecture_lifecycle(course: Course) -> None:
    with course.client("admin") as admin:
        created = admin.create_lecture("scratch", "Scratch")
        assert isinstance(created, models.Lecture) and created.created_at is not None
        assert admin.update_lecture("scratch", name="Renamed").name == "Renamed"
        assert admin.update_lecture("scratch", state="complete").state == "complete"
        assert "scratch" in [x.code for x in admin.lectures(state="complete")]
        assert "scratch" not in [x.code for x in admin.lectures(state="active")]
        admin.delete_lecture("scratch")
        with pytest.raises(errors.NotFound):
            admin.lecture("scratch")


def test_pagination_is_iterated_for_the_caller(course: Course) -> None:
    with course.client("admin", page_size=2) as admin:
        admin.create_lecture("paged")
        for i in range(7):
            admin.set_role("paged", f"user{i}", "student")
        roles = list(admin.roles("paged"))
        assert [r.user for r in roles] == [f"user{i}" for i in range(7)]
        assert {r.role for r in roles} == {"student"}
        assert [r.user for r in admin.roles("paged", role="tutor")] == []
        admin.set_role("paged", "user3", "tutor")
        assert [r.user for r in admin.roles("paged", role="tutor")] == ["user3"]
        admin.remove_role("paged", "user3")
        assert len(list(admin.roles("paged"))) == 6


def test_assignment_files_round_trip(course: Course) -> None:
    with course.client("instructor") as ins:
        assignment = ins.assignment("intro", "basics")
        assert assignment.status == "released" and assignment.max_score == 10.0
        assert assignment.due_date is not None and assignment.due_date.year == 2099
        source = zipfile.ZipFile(io.BytesIO(ins.download_assignment("intro", "basics")))
        assert source.namelist() == ["basics.ipynb"]
        assert b"### BEGIN SOLUTION" in source.read("basics.ipynb")
    with course.client("student") as alice:
        released = zipfile.ZipFile(io.BytesIO(alice.download_assignment("intro", "basics")))
        assert b"### BEGIN SOLUTION" not in released.read("basics.ipynb")
        with pytest.raises(errors.Forbidden):
            alice.download_assignment("intro", "basics", version="source")


def test_assignment_create_update_delete(course: Course) -> None:
    with course.client("instructor") as ins:
        created = ins.create_assignment(
            "intro", "draft", title="Draft", due_date="2099-02-01T12:00:00Z", late_penalty=0.25
        )
        assert created.status == "created" and created.late_penalty == 0.25 and created.title == "Draft"
        updated = ins.update_assignment("intro", "draft", max_submissions=None, grading_policy="best")
        assert updated.grading_policy == "best" and updated.max_submissions is None
        assert "draft" in [a.name for a in ins.assignments("intro")]
        with pytest.raises(errors.Conflict, match="Upload the assignment's source"):
            ins.release_assignment("intro", "draft")
        ins.delete_assignment("intro", "draft")
    with course.client("student") as alice:
        assert "draft" not in [a.name for a in alice.assignments("intro")]


def test_submit_wait_and_results(course: Course) -> None:
    """basics has feedback_policy manual: the student's result is held back until released."""
    with course.client("student") as alice:
        submission = alice.submit("intro", "basics", SOLVED)
        assert isinstance(submission, models.Submission) and submission.user == "alice"
        events = list(alice.events(submission=submission.id))
        assert events[-1].auto_status == "graded" and all(e.id for e in events), "every event has an id"
        assert events[-1].score is None and events[-1].results_released is False
        graded = alice.wait("intro", "basics", submission.id)
        assert graded.finished and graded.score is None and graded.results_released is False
        with pytest.raises(errors.Forbidden, match="has not been released yet"):
            alice.gradebook("intro", "basics", submission.id)
        files = zipfile.ZipFile(io.BytesIO(alice.download_submission("intro", "basics", submission.id)))
        assert files.namelist() == ["basics.ipynb"]
        assert submission.id in [s.id for s in alice.submissions("intro", "basics")]
    with course.client("instructor") as ins:
        seen = ins.submission("intro", "basics", submission.id)
        assert seen.score == 10.0 and seen.max_score == 10.0 and seen.status_detail is None
        book = ins.gradebook("intro", "basics", submission.id)
        results = book.results()
        assert [r.name for r in results][:2] == ["test_add", "test_fizzbuzz"]
        assert sum(r.points for r in results) == 10.0 and book.score == 10.0
        assert "graded" in ins.logs("intro", "basics", submission.id)
        assert "<html" in ins.feedback("intro", "basics", submission.id).lower()
        changed = ins.update_submission("intro", "basics", submission.id, manual_score=9.0, comment="ok")
        assert changed.score == 9.0 and changed.auto_score == 10.0 and changed.comment == "ok"
        table = ins.scores("intro", "basics")
        assert isinstance(table, models.ScoreTable)
        (row,) = [r for r in table.items if r.user == "alice"]
        assert row.final_score == 9.0 and row.submission == submission.id
        csv = ins.scores("intro", "basics", format="csv")
        assert csv.splitlines()[0].startswith("user,display_name,submission")
        job = ins.autograde("intro", "basics", submission.id)
        assert isinstance(job, models.Job) and job.submission == submission.id
        run = ins.start_grading_run("intro", "basics", scope="all")
        assert run.total >= 1
        ins.wait("intro", "basics", submission.id)
        assert ins.grading_run("intro", "basics", run.id).id == run.id
        assert ins.release_feedback("intro", "basics") >= 1
    with course.client("student") as alice:
        released = alice.submission("intro", "basics", submission.id)
        assert released.results_released is True and released.score == 9.0 and released.comment == "ok"
        assert alice.gradebook("intro", "basics", submission.id).score == 10.0
        assert "<html" in alice.feedback("intro", "basics", submission.id).lower()
        alice.delete_submission("intro", "basics", submission.id)
        with pytest.raises(errors.NotFound):
            alice.submission("intro", "basics", submission.id)


def test_submit_a_directory_and_refuse_one_without_a_notebook(course: Course, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "basics.ipynb").write_bytes(SOLVED.read_bytes())
    (tmp_path / "work" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "work" / ".ipynb_checkpoints" / "basics-checkpoint.ipynb").write_text("{}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no notebook")
    with course.client("other") as bob:
        submission = bob.submit("intro", "basics", tmp_path / "work")
        files = zipfile.ZipFile(io.BytesIO(bob.download_submission("intro", "basics", submission.id)))
        assert files.namelist() == ["basics.ipynb"], "hidden folders are not uploaded"
        before = len(list(bob.submissions("intro", "basics")))
        with pytest.raises(errors.UsageError, match="contains no notebook"):
            bob.submit("intro", "basics", tmp_path / "empty")
        with pytest.raises(errors.UsageError, match="does not exist"):
            bob.submit("intro", "basics", tmp_path / "missing.ipynb")
        assert len(list(bob.submissions("intro", "basics"))) == before

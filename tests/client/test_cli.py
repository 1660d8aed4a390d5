"""The `grader` command: through click's runner against the real service, and as real subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from grader_client.cli import cli

from ..postgres import free_port
from .conftest import EXAMPLES, Course
from .test_async_client import slow_notebook

GRADER = Path(sys.executable).with_name("grader")
SOURCE = EXAMPLES / "source" / "basics"
SOLVED = EXAMPLES / "submission" / "basics.ipynb"


def run(course: Course, who: str | None, *args: str, input: str | None = None, **env: str) -> Result:
    environment = {"GRADER_URL": course.url, "GRADER_LECTURE": "intro", "GRADER_ASSIGNMENT": "basics", **env}
    if who is not None:
        environment["GRADER_TOKEN"] = course.tokens[who]
    return CliRunner().invoke(cli, list(args), env=environment, input=input, prog_name="grader")


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def row(table: str, first: str) -> list[str]:
    """The cells after `first` in the rich table row that starts with it."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if cells[0] == first:
            return cells[1:]
    raise AssertionError(f"no row {first!r} in:\n{table}")


def refused(result: Result, code: int, message: str) -> None:
    """Exit `code`, and exactly one line on stderr, holding `message`; no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_walkthrough_with_grader_alone(
    course: Course, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's walkthrough: from an empty lecture to an exported CSV, with `grader` only."""
    monkeypatch.chdir(tmp_path)
    admin = {"GRADER_LECTURE": "walk"}
    ok(run(course, "admin", "lecture", "create", "walk", "--name", "Walkthrough", **admin))
    ok(run(course, "admin", "role", "set", "alice", "student", **admin))
    ok(
        run(
            course,
            "admin",
            "assignment",
            "create",
            "basics",
            "--due",
            "2099-01-15T23:59",
            "--max-submissions",
            "5",
            "--feedback-policy",
            "immediate",
            **admin,
        )
    )
    result = ok(run(course, "admin", "assignment", "upload", "basics", str(SOURCE), **admin))
    assert "next: grader assignment release basics" in result.stderr
    ok(run(course, "admin", "assignment", "release", "basics", **admin))
    shown = json.loads(ok(run(course, "admin", "assignment", "show", "--json", **admin)).stdout)
    assert (
        shown["status"] == "released"
        and shown["max_submissions"] == 5
        and shown["feedback_policy"] == "immediate"
        and shown["due_date"].startswith("2099-01-")
    )

    (tmp_path / ".grader.toml").write_text('lecture = "walk"\nassignment = "basics"\n')
    student = {"GRADER_LECTURE": "", "GRADER_ASSIGNMENT": ""}  # from .grader.toml
    ok(run(course, "student", "assignment", "download", **student))
    assert b"BEGIN SOLUTION" not in (tmp_path / "basics" / "basics.ipynb").read_bytes()
    result = ok(run(course, "student", "submit", str(SOLVED), "--wait", **student))
    assert "running" in result.stderr and "graded" in result.stderr
    table = result.stdout
    for line in ("test_add", "test_primes_partial", "total"):
        assert line in table
    assert row(table, "total")[:2] == ["10", "10"]
    listed = json.loads(ok(run(course, "student", "submissions", "list", "--json", **student)).stdout)
    assert [s["score"] for s in listed] == [10.0]

    ok(run(course, "admin", "scores", "export", "-o", str(tmp_path / "grades.csv"), **admin))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "grades.csv").read_text())))
    assert [(r["user"], r["final_score"]) for r in rows] == [("alice", "10.0")]


def test_json_output_is_json_only(course: Course) -> None:
    for args in (
        ("whoami", "--json"),
        ("lecture", "list", "--json"),
        ("lecture", "show", "--json"),
        ("role", "list", "--json"),
        ("assignment", "list", "--json"),
        ("assignment", "show", "--json"),
        ("submissions", "list", "--json"),
        ("health", "--json"),
    ):
        result = ok(run(course, "tutor", *args))
        json.loads(result.stdout)  # nothing else on stdout
    me = json.loads(ok(run(course, "tutor", "whoami", "--json")).stdout)
    assert me == {"name": "tut", "display_name": None, "admin": False, "roles": {"intro": "tutor"}}


def test_whoami_prints_user_admin_flag_and_roles(course: Course) -> None:
    out = ok(run(course, "student", "whoami")).stdout
    lines = [line.split() for line in out.splitlines()]
    assert ["user", "alice"] in lines and ["admin", "no"] in lines
    assert row(out, "intro") == ["student"]


def test_exit_codes(course: Course) -> None:
    refused(
        run(course, "student", "role", "set", "bob", "tutor"),
        1,
        "Forbidden: This needs the instructor role in lecture 'intro'; you have the student role",
    )
    bad = run(course, None, "whoami", GRADER_TOKEN="not-a-token")
    refused(bad, 1, "Unauthorized:")
    port = free_port()
    refused(
        run(course, "student", "--url", f"http://127.0.0.1:{port}/", "whoami"),
        3,
        f"Cannot reach http://127.0.0.1:{port}/",
    )
    refused(run(course, "student", "role", "set", "bob", "teacher"), 2, "'teacher' is not one of")
    refused(run(course, "student", "no-such-command"), 2, "No such command")
    refused(run(course, None, "whoami", GRADER_URL=""), 2, "No service URL")
    refused(run(course, "student", "lecture", "show", "nope"), 1, "Not Found: Lecture 'nope' not found")
    assert ok(run(course, None, "health")).stdout.split()[:2] == ["status", "ok"]


def test_roster_import_checks_everything_before_changing_anything(course: Course, tmp_path: Path) -> None:
    ok(run(course, "admin", "lecture", "create", "rost"))
    env = {"GRADER_LECTURE": "rost"}
    unknown_role = tmp_path / "unknown.csv"
    unknown_role.write_text("user,role\ncarl,student\ndora,teacher\n")
    refused(
        run(course, "admin", "roster", "import", str(unknown_role), "--apply", **env),
        2,
        "line 3: unknown role 'teacher' for dora",
    )
    duplicate = tmp_path / "duplicate.csv"
    duplicate.write_text("user,role\ncarl,student\nerik,tutor\ncarl,tutor\n")
    refused(
        run(course, "admin", "roster", "import", str(duplicate), "--apply", **env),
        2,
        "line 4: carl is listed twice (also on line 2)",
    )
    no_header = tmp_path / "no_header.csv"
    no_header.write_text("carl,student\n")
    refused(
        run(course, "admin", "roster", "import", str(no_header), **env),
        2,
        "line 1 must be a header with the columns user,role",
    )
    assert json.loads(ok(run(course, "admin", "role", "list", "--json", **env)).stdout) == []

    good = tmp_path / "good.csv"
    good.write_text("user,role\ncarl,student\nerik,tutor\n")
    dry = ok(run(course, "admin", "roster", "import", str(good), **env))
    assert "Dry run: nothing changed" in dry.stderr and "carl" in dry.stdout
    assert json.loads(ok(run(course, "admin", "role", "list", "--json", **env)).stdout) == []
    ok(run(course, "admin", "roster", "import", str(good), "--apply", **env))
    roles = json.loads(ok(run(course, "admin", "role", "list", "--json", **env)).stdout)
    assert {(r["user"], r["role"]) for r in roles} == {("carl", "student"), ("erik", "tutor")}
    changes = json.loads(ok(run(course, "admin", "roster", "import", str(good), "--json", **env)).stdout)
    assert changes == []
    good.write_text("user,role\ncarl,tutor\n")
    ok(run(course, "admin", "roster", "import", str(good), "--apply", "--remove-missing", **env))
    roles = json.loads(ok(run(course, "admin", "role", "list", "--json", **env)).stdout)
    assert {(r["user"], r["role"]) for r in roles} == {("carl", "tutor")}


def test_bad_paths_are_refused_before_sending(course: Course, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no notebook here")
    refused(
        run(course, "instructor", "assignment", "upload", "basics", str(tmp_path / "notes")),
        2,
        "contains no notebook (.ipynb)",
    )
    refused(run(course, "student", "submit", str(tmp_path / "missing.ipynb")), 2, "does not exist")
    refused(run(course, "student", "submit", str(tmp_path / "notes")), 2, "contains no notebook")


def test_download_never_overwrites_changed_files_without_force(course: Course, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    ok(run(course, "student", "assignment", "download", "-o", str(target)))
    notebook = target / "basics.ipynb"
    original = notebook.read_bytes()
    again = ok(run(course, "student", "assignment", "download", "-o", str(target)))
    assert "0 file(s) written, 1 already up to date" in again.stderr
    notebook.write_bytes(original + b" ")
    refused(
        run(course, "student", "assignment", "download", "-o", str(target)),
        1,
        "Would overwrite 1 changed local file(s)",
    )
    assert notebook.read_bytes() == original + b" "
    ok(run(course, "student", "assignment", "download", "-o", str(target), "--force"))
    assert notebook.read_bytes() == original


def test_login_stores_a_private_file_and_refuses_a_readable_one(course: Course, tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "GRADER_URL": ""}
    wrong = run(course, None, "login", course.url, input="wrong-token\n", **env)
    refused(wrong, 1, "Unauthorized")
    assert not (tmp_path / "cfg" / "grader" / "config.toml").exists()
    result = ok(run(course, None, "login", course.url, input=course.tokens["student"] + "\n", **env))
    assert "as alice" in result.stderr
    path = tmp_path / "cfg" / "grader" / "config.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "alice" in ok(run(course, None, "whoami", **env)).stdout
    path.chmod(0o640)
    refused(run(course, None, "whoami", **env), 2, "other users can access it (mode 0640)")


def test_every_command_has_help_with_an_example() -> None:
    def commands(
        group: click.Group, prefix: tuple[str, ...] = ()
    ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        for name, command in group.commands.items():
            yield (*prefix, name), command
            if isinstance(command, click.Group):
                yield from commands(command, (*prefix, name))

    for path, command in commands(cli):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        if not isinstance(command, click.Group):
            assert re.search(r"Example:\n +grader ", result.stdout), (
                f"grader {' '.join(path)} --help: no example"
            )


def test_shell_completion_uses_clicks_mechanism() -> None:
    result = CliRunner().invoke(cli, ["completion", "bash"])
    assert result.exit_code == 0 and "_GRADER_COMPLETE=bash_complete" in result.stdout
    completed = subprocess.run(
        [GRADER],
        env={
            **os.environ,
            "_GRADER_COMPLETE": "bash_complete",
            "COMP_WORDS": "grader assig",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "assignment" in completed.stdout


def test_score_set_and_regrade_watch(course: Course) -> None:
    submitted = json.loads(ok(run(course, "other", "submit", str(SOLVED), "--wait", "--json")).stdout)
    assert submitted["auto_status"] == "graded"
    sid = str(submitted["id"])
    ok(run(course, "tutor", "score", "set", sid, "7.5", "--comment", "see notes"))
    shown = json.loads(ok(run(course, "tutor", "submissions", "show", sid, "--json")).stdout)
    assert shown["score"] == 7.5 and shown["comment"] == "see notes"
    refused(run(course, "tutor", "score", "set", sid, "11"), 1, "exceeds the maximum of 10.0")
    result = ok(run(course, "tutor", "regrade", sid, "--watch"))
    assert f"Submission {sid}: regrade queued" in result.stderr and "1/1" in result.stderr
    result = ok(run(course, "tutor", "regrade", "--watch"))
    assert "Grading run" in result.stderr and "0 failed" in result.stderr
    refused(run(course, "tutor", "regrade", "999999"), 1, "Submission 999999 not found")
    assert "grader logs" not in ok(run(course, "tutor", "logs", sid)).stderr


# --- real subprocesses -----------------------------------------------------------------------


def grader_env(course: Course, who: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GRADER_URL": course.url,
        "GRADER_TOKEN": course.tokens[who],
        "GRADER_LECTURE": "intro",
        "GRADER_ASSIGNMENT": "basics",
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
    }


def test_submit_wait_as_a_subprocess_with_environment_credentials(course: Course, tmp_path: Path) -> None:
    done = subprocess.run(
        [GRADER, "submit", str(SOLVED), "--wait"],
        env=grader_env(course, "student", tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Submitted" in done.stderr and "graded" in done.stderr
    # basics releases results by hand: the student is told, and sees no score yet
    assert "Graded. The gradebook of this submission has not been released yet" in done.stderr
    assert done.stdout == ""
    tutor = subprocess.run(
        [GRADER, "submit", str(SOLVED), "--wait"],
        env=grader_env(course, "tutor", tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tutor.returncode == 0, tutor.stderr
    assert row(tutor.stdout, "test_fizzbuzz")[:2] == ["2", "2"] and row(tutor.stdout, "total")[:2] == [
        "10",
        "10",
    ]


def test_watch_feed_until_interrupted(course: Course, tmp_path: Path) -> None:
    with course.client("instructor") as ins:  # a second assignment: the feed follows both
        ins.create_assignment("intro", "watched")
    watcher = subprocess.Popen(
        [GRADER, "watch", "--json"],
        env={**grader_env(course, "tutor", tmp_path), "GRADER_ASSIGNMENT": ""},  # the whole lecture
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # let it connect; a submission before would only show if still pending
        with course.client("student") as alice:
            submission = alice.submit("intro", "basics", SOLVED)
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = watcher.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            seen.append(event)
            if event["submission"] == submission.id and event["auto_status"] == "graded":
                break
        assert seen and seen[-1]["auto_status"] == "graded" and seen[-1]["user"] == "alice", seen
        assert seen[-1]["assignment"] == "basics"
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(30) == 0, watcher.stderr.read()


def test_service_restarted_during_submit_wait(course: Course, tmp_path: Path) -> None:
    """The stream ends when the service stops; `--wait` reconnects and prints the final result."""
    notebook = tmp_path / "basics.ipynb"
    notebook.write_bytes(slow_notebook(15))
    waiter = subprocess.Popen(
        [GRADER, "submit", str(notebook), "--wait"],
        env=grader_env(course, "tutor", tmp_path),  # staff: sees the score table at once
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in waiter.stderr:
            if found := re.search(r"submission (\d+) ", line):
                break
        else:
            raise AssertionError(f"no submission id: {waiter.wait(10)} {waiter.stdout.read()}")
        # Stop the service while this submission is being graded: its state, asked of the API (what
        # `--wait` printed so far may lag behind a busy machine), must be running.
        with course.client("tutor") as tutor:
            deadline = time.monotonic() + 120
            while (
                state := tutor.submission(course.lecture, course.assignment, int(found[1])).auto_status
            ) == "queued":
                assert time.monotonic() < deadline, "never started grading"
                time.sleep(0.1)
        assert state == "running", f"graded before the service could be stopped: {state}"
        course.svc.stop()
        time.sleep(1)  # the service is away for a while: reconnects are refused meanwhile
        course.svc.start()
        out, err = waiter.communicate(timeout=180)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, err
    assert "graded" in err and "Traceback" not in err
    assert "total" in out and "test_primes_partial" in out


COMMAND_YAML = """submission:
  files: ["*.py"]
stages:
  - name: test
    command: ["python3", "/job/grader/harness.py"]
    results: stdout
"""
COMMAND_HARNESS = """import json, sys
sys.path.insert(0, '/job/submission')
import solution
ok = solution.add(2, 3) == 5
print(json.dumps({'tests': [{'name': 'add_small', 'score': 2 if ok else 0, 'max_score': 2},
                            {'name': 'add_never', 'score': 0, 'max_score': 1}]}))
"""


def test_a_command_assignment_with_grader_alone(course: Course, tmp_path: Path) -> None:
    """`--kind command`, a directory of harness files, a directory of .py files submitted (no notebook
    in either), and the per-test table like a notebook's."""
    here = {"GRADER_ASSIGNMENT": "adder"}
    ok(run(course, "instructor", "assignment", "create", "adder", "--kind", "command",
           "--feedback-policy", "immediate", **here))  # fmt: skip
    source, work = tmp_path / "source", tmp_path / "work"
    source.mkdir()
    work.mkdir()
    (source / "grader.yaml").write_text(COMMAND_YAML)
    (source / "harness.py").write_text(COMMAND_HARNESS)
    ok(run(course, "instructor", "assignment", "upload", "adder", str(source), **here))
    ok(run(course, "instructor", "assignment", "release", "adder", **here))
    shown = json.loads(ok(run(course, "instructor", "assignment", "show", "--json", **here)).stdout)
    assert shown["kind"] == "command" and shown["status"] == "released"

    (work / "solution.py").write_text("def add(a, b):\n    return a + b\n")
    table = ok(run(course, "student", "submit", str(work), "--wait", **here)).stdout
    assert row(table, "add_small")[:3] == ["2", "2", "passed"]
    assert row(table, "add_never")[:3] == ["0", "1", "failed"]
    assert row(table, "total")[:2] == ["2", "3"]

    (work / "notes.txt").write_text("not allowed")
    refused(run(course, "student", "submit", str(work), **here), 1, "'notes.txt'")

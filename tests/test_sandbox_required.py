"""The local executor fails closed: where no sandbox works, nothing is graded, nothing is lost.

A machine without a sandbox is made by configuration alone: the fork server turned off and
bubblewrap pointed at a binary that is not there (as on a host without the package), or at one
that cannot create namespaces (as in a locked-down container). The service must still start and
take submissions, say on /health and in its log that it does not grade, why, and what would fix
it, keep every submission queued, and grade them once it restarts with a sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader_service.autograding.local import UNSANDBOXED_SETTING, sandbox_fix

from .conftest import World
from .grading_utils import submission, wait_graded
from .service import ServiceProcess

NO_FORK_SERVER = "c.LocalAutogradeExecutor.fork_server = False\n"
MISSING_BWRAP = NO_FORK_SERVER + "c.LocalAutogradeExecutor.bwrap_path = '/nonexistent/bwrap'\n"
# A bwrap that runs but fails, as one does where user namespaces are forbidden.
BROKEN_BWRAP = NO_FORK_SERVER + "c.LocalAutogradeExecutor.bwrap_path = '/bin/false'\n"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def service_with(data_dir: Path, config: str) -> ServiceProcess:
    return ServiceProcess(data_dir, f"sqlite:///{data_dir.parent / 'grader.sqlite'}", config=config)


@pytest.fixture
def unsandboxed(data_dir: Path) -> Iterator[ServiceProcess]:
    service = service_with(data_dir, MISSING_BWRAP)
    service.start("--upgrade-db")
    try:
        yield service
    finally:
        service.stop()


def test_no_sandbox_keeps_submissions_queued_until_one_works(
    unsandboxed: ServiceProcess, data_dir: Path
) -> None:
    health = unsandboxed.client(None).get("health")
    assert health.status_code == 200  # serving: submissions are taken
    body = health.json()
    assert body["grading"] is False and body["sandbox"] == "none" and body["status"] == "degraded"
    assert "no sandbox works here" in body["grading_reason"]
    assert "fork_server = False" in body["grading_reason"] and "/nonexistent/bwrap" in body["grading_reason"]
    assert "install bubblewrap" in body["grading_fix"]
    log = unsandboxed.read_log()
    assert "Grading is OFF" in log and UNSANDBOXED_SETTING in log and "sandbox none" in log
    assert "Local executor sandbox" not in log  # nothing claims to sandbox

    world = World(unsandboxed)
    ids = [world.submit("student").json()["id"], world.submit("other_student").json()["id"]]
    time.sleep(5)  # a worker would have claimed them within a poll interval (1 s)
    tutor = world.client("tutor")
    for sid in ids:
        assert submission(tutor, "ml", "tiny", sid)["auto_status"] == "queued"
    assert unsandboxed.client(None).get("health").json()["queue"] | {"oldest_queued_seconds": 0} == {
        "queued": 2,
        "running": 0,
        "oldest_queued_seconds": 0,
        "backlogged": False,
    }
    assert unsandboxed.stop() == 0

    # The same data and database, on a machine where the sandbox works (the default config).
    restarted = service_with(data_dir, "")
    restarted.start()
    try:
        health = restarted.client(None).get("health").json()
        assert health["grading"] is True and health["sandbox"] == "fork-server" and health["status"] == "ok"
        assert "grading_reason" not in health and "grading_fix" not in health
        tutor = restarted.client(world.tokens["tutor"])
        for sid in ids:
            events = wait_graded(tutor, sid)
            assert events[-1]["auto_status"] == "graded" and events[-1]["score"] == 3.0, events
    finally:
        restarted.stop()


def test_a_bwrap_that_cannot_create_namespaces_is_no_sandbox(data_dir: Path) -> None:
    service = service_with(data_dir, BROKEN_BWRAP)
    service.start("--upgrade-db")
    try:
        body = service.client(None).get("health").json()
        assert body["grading"] is False and body["sandbox"] == "none"
        assert "cannot create namespaces" in body["grading_reason"]
        assert "user namespaces" in body["grading_fix"] and "fork_server = True" in body["grading_fix"]
    finally:
        service.stop()


def test_unsandboxed_grading_only_when_told(data_dir: Path) -> None:
    service = service_with(data_dir, MISSING_BWRAP + UNSANDBOXED_SETTING + "\n")
    service.start("--upgrade-db")
    try:
        body = service.client(None).get("health").json()
        assert body["grading"] is True and body["sandbox"] == "none" and body["status"] == "ok"
        assert "Local grading is NOT sandboxed" in service.read_log()
        world = World(service)
        events = wait_graded(world.client("tutor"), world.submit("student").json()["id"])
        assert events[-1]["auto_status"] == "graded" and events[-1]["score"] == 3.0
    finally:
        service.stop()


def test_api_only_process_says_so(data_dir: Path) -> None:
    service = service_with(data_dir, "c.GraderService.grading = False\n")
    service.start("--upgrade-db")
    try:
        body = service.client(None).get("health").json()
        assert body["grading"] is False and body["status"] == "ok" and body["sandbox"] == "fork-server"
        assert "only serves the API" in body["grading_reason"] and "grading_fix" not in body
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("fork_server", "as_root", "installed", "expected"),
    [
        (True, False, False, ["apt-get install bubblewrap", "run the service as root"]),
        (True, False, True, ["user namespaces", "run the service as root"]),
        (True, True, True, ["user namespaces", "in a container", "kube executor"]),
        (False, True, False, ["apt-get install bubblewrap", "fork_server = True"]),
    ],
)
def test_the_fix_fits_the_machine(
    fork_server: bool, as_root: bool, installed: bool, expected: list[str]
) -> None:
    fix = sandbox_fix(fork_server, as_root, installed)
    assert all(part in fix for part in expected), fix

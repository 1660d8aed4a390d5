"""Shared fixtures: one PostgreSQL server per session, a service per module and database."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .postgres import PostgresServer, create_database
from .service import ServiceProcess

DATA = Path(__file__).parent / "data"
_db_counter = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulation_artifact(reason): the test checks something CPU emulation (qemu-user) changes, which "
        "the reason names; skipped with that reason when the tests run emulated (scripts/arm64-smoke)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("emulation_artifact")
    if marker is None:
        return
    if not marker.args or not str(marker.args[0]).strip():
        raise pytest.UsageError(f"{item.nodeid}: emulation_artifact needs a reason")
    emulator = emulated_by()
    if emulator:
        pytest.skip(f"emulation artifact under {emulator}: {marker.args[0]}")


@functools.cache
def emulated_by() -> str | None:
    """The emulator this Python runs under, or None on a real CPU.

    Under qemu-user (binfmt_misc), the system runs the emulator and publishes *its* command line
    for every process: a child started as `sys.executable ...` shows another program in argv[0].
    (qemu disguises /proc/self, so the check reads a child's entry.)
    """
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        argv0 = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    finally:
        child.communicate(b"")
    return None if argv0 == os.fsencode(sys.executable) else os.fsdecode(argv0)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    url = os.environ.get("GRADER_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, empty database of each kind for the module."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'grader.sqlite'}"
    admin_url = request.getfixturevalue("postgres_admin_url")
    return create_database(admin_url, f"grader_test_{os.getpid()}_{next(_db_counter)}")


@pytest.fixture(scope="module")
def service(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real service on a free port, with a fresh data dir; upgraded on start."""
    data_dir = tmp_path_factory.mktemp("service") / "data"
    proc = ServiceProcess(data_dir, db_url)
    proc.start("--upgrade-db")
    try:
        yield proc
    finally:
        proc.stop()


def zip_dir(directory: Path) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(directory).as_posix())
    return buf.getvalue()


class World:
    """A lecture with one user per role, a released and an unreleased assignment."""

    lecture = "ml"
    other_lecture = "other"
    released = "tiny"
    unreleased = "draft"

    def __init__(self, service: ServiceProcess):
        self.service = service
        self.tokens = {
            "admin": service.token("root", admin=True),
            "instructor": service.token("ins"),
            "tutor": service.token("tut"),
            "student": service.token("stu"),
            "other_student": service.token("stu2"),
            "outsider": service.token("out"),
        }
        self.names = {
            "admin": "root",
            "instructor": "ins",
            "tutor": "tut",
            "student": "stu",
            "other_student": "stu2",
            "outsider": "out",
        }
        admin = self.client("admin")
        for code in (self.lecture, self.other_lecture):
            assert admin.post("lectures", json={"code": code, "name": code.upper()}).status_code == 201
        for role, name in (("instructor", "ins"), ("tutor", "tut"), ("student", "stu"), ("student", "stu2")):
            assert admin.put(f"lectures/{self.lecture}/roles/{name}", json={"role": role}).status_code == 201
        assert (
            admin.put(f"lectures/{self.other_lecture}/roles/out", json={"role": "instructor"}).status_code
            == 201
        )
        ins = self.client("instructor")
        base = f"lectures/{self.lecture}/assignments"
        assert (
            ins.post(base, json={"name": self.released, "due_date": "2099-01-01T00:00:00Z"}).status_code
            == 201
        )
        r = ins.put(
            f"{base}/{self.released}/files",
            data=zip_dir(DATA / "tiny"),
            headers={"Content-Type": "application/zip"},
        )
        assert r.status_code == 200, r.text
        r = ins.patch(f"{base}/{self.released}", json={"status": "released"})
        assert r.status_code == 200, r.text
        assert ins.post(base, json={"name": self.unreleased}).status_code == 201

    def client(self, who: str | None):
        return self.service.client(self.tokens.get(who) if who else None)

    def submit(self, who: str, notebook: Path | None = None, assignment: str | None = None):
        notebook = notebook or DATA / "tiny_submission.ipynb"
        return self.client(who).post(
            f"lectures/{self.lecture}/assignments/{assignment or self.released}/submissions",
            params={"filename": "tiny.ipynb"},
            data=notebook.read_bytes(),
            headers={"Content-Type": "application/x-ipynb+json"},
        )


@pytest.fixture(scope="module")
def world(service: ServiceProcess) -> World:
    return World(service)

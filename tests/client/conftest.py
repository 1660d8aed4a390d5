"""Fixtures for the client and the `grader` command: the real service as a subprocess (SQLite).

Every request any client test sends is recorded, and the session ends by checking that each went to
an operation of openapi.yaml (the drift test checks the client's code; this checks what it did).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from ..service import ServiceProcess

if TYPE_CHECKING:
    from grader_client import AsyncGraderClient, GraderClient

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "grader_service" / "api" / "openapi.yaml"
EXAMPLES = REPO / "examples"
METHODS = {"get", "post", "put", "patch", "delete"}


def spec_operations() -> set[tuple[str, str]]:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    return {(m.upper(), path) for path, item in spec["paths"].items() for m in item if m in METHODS}


def path_pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


SENT: list[tuple[str, str]] = []


@pytest.fixture(autouse=True)
def _record_requests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Record every request of the clients; keep tests away from the real ~/.config and env."""
    import httpx

    for cls in (httpx.Client, httpx.AsyncClient):
        original = cls.send

        def send(
            self: Any, request: httpx.Request, *args: Any, __original: Any = original, **kwargs: Any
        ) -> Any:
            SENT.append((request.method, request.url.path))
            return __original(self, request, *args, **kwargs)

        monkeypatch.setattr(cls, "send", send)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("GRADER_URL", "GRADER_TOKEN", "GRADER_LECTURE", "GRADER_ASSIGNMENT", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not SENT:
        return
    patterns = [(m, path_pattern("/api/v1" + p)) for m, p in spec_operations()]
    stray = sorted({(m, p) for m, p in SENT if not any(m == sm and pat.match(p) for sm, pat in patterns)})
    if stray:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nclient requests to paths not in openapi.yaml: {stray}")


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real service on SQLite, with a fresh data dir."""
    root = tmp_path_factory.mktemp("client-service")
    proc = ServiceProcess(root / "data", f"sqlite:///{root / 'grader.sqlite'}")
    proc.start("--upgrade-db")
    try:
        yield proc
    finally:
        proc.stop()


class Course:
    """A lecture 'intro' with an instructor, a tutor and two students, and 'basics' released."""

    lecture = "intro"
    assignment = "basics"

    def __init__(self, svc: ServiceProcess):

        self.svc = svc
        self.tokens = {
            "admin": svc.token("root", admin=True),
            "instructor": svc.token("ins"),
            "tutor": svc.token("tut"),
            "student": svc.token("alice"),
            "other": svc.token("bob"),
        }
        self.url = svc.url
        with self.client("admin") as admin:
            admin.create_lecture(self.lecture, "Intro to Python")
            for user, role in (
                ("ins", "instructor"),
                ("tut", "tutor"),
                ("alice", "student"),
                ("bob", "student"),
            ):
                admin.set_role(self.lecture, user, role)
        with self.client("instructor") as ins:
            ins.create_assignment(
                self.lecture, self.assignment, due_date="2099-01-01T00:00:00Z", max_submissions=50
            )
            ins.upload_assignment(self.lecture, self.assignment, EXAMPLES / "source" / "basics")
            ins.release_assignment(self.lecture, self.assignment)

    def client(self, who: str, **kwargs: Any) -> GraderClient:
        from grader_client import GraderClient

        return GraderClient(self.url, self.tokens[who], **kwargs)

    def async_client(self, who: str, **kwargs: Any) -> AsyncGraderClient:
        from grader_client import AsyncGraderClient

        return AsyncGraderClient(self.url, self.tokens[who], **kwargs)


@pytest.fixture(scope="module")
def course(svc: ServiceProcess) -> Course:
    return Course(svc)

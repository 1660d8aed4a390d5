"""The server extension inside a real Jupyter server (pytest-jupyter), against the real service.

The service runs as a subprocess on SQLite (tests/service.py); the Jupyter server runs in the test
process with `grader_labextension` enabled and its credentials in the environment, as a user's Lab
has them. Nothing of the service is mocked.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# pytest-jupyter's fixtures (jp_serverapp, jp_fetch, ...) and its hooks that run async tests.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from ...service import ServiceProcess

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            # (terminals off: not ours, and their websocket handler warns about authentication)
            "jpserver_extensions": {"grader_labextension": True, "jupyter_server_terminals": False},
            # allow_unauthenticated_access stays at its default (true), so the login test checks
            # that each of our handlers requires a login itself (@tornado.web.authenticated).
        }
    }


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real service on SQLite, with a fresh data dir."""
    root = tmp_path_factory.mktemp("lab-service")
    proc = ServiceProcess(root / "data", f"sqlite:///{root / 'grader.sqlite'}")
    proc.start("--upgrade-db")
    try:
        yield proc
    finally:
        proc.stop()


class Course:
    """Lecture 'intro': instructor ins, tutor tut, students alice and bob; outsider out (no role).

    'basics' is released with immediate feedback (students see their score at once) and three
    submissions allowed; 'held' is released with the default, manual feedback policy.
    """

    lecture = "intro"

    def __init__(self, svc: ServiceProcess):
        from grader_client import GraderClient

        self.url = svc.url
        self.tokens = {
            "admin": svc.token("root", admin=True),
            "ins": svc.token("ins"),
            "tut": svc.token("tut"),
            "alice": svc.token("alice"),
            "bob": svc.token("bob"),
            "out": svc.token("out"),
        }
        with GraderClient(self.url, self.tokens["admin"]) as admin:
            admin.create_lecture(self.lecture, "Intro to Python")
            for user, role in (
                ("ins", "instructor"),
                ("tut", "tutor"),
                ("alice", "student"),
                ("bob", "student"),
            ):
                admin.set_role(self.lecture, user, role)
        with self.client("ins") as ins:
            for name, policy in (("basics", "immediate"), ("held", "manual")):
                ins.create_assignment(
                    self.lecture,
                    name,
                    due_date="2099-01-01T00:00:00Z",
                    max_submissions=3,
                    feedback_policy=policy,
                )
                ins.upload_assignment(self.lecture, name, EXAMPLES / "source" / "basics")
                ins.release_assignment(self.lecture, name)

    def client(self, who: str):
        from grader_client import GraderClient

        return GraderClient(self.url, self.tokens[who])


@pytest.fixture(scope="module")
def course(svc: ServiceProcess) -> Course:
    return Course(svc)


@pytest.fixture(autouse=True)
def _isolated_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `grader login` file and no credentials from the developer's environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("GRADER_URL", "GRADER_TOKEN", "JUPYTERHUB_API_TOKEN", "GRADER_LECTURE", "GRADER_ASSIGNMENT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def login(monkeypatch: pytest.MonkeyPatch, course: Course):
    """`login("alice")`: the Jupyter server's credentials are alice's (set before its first request)."""

    def use(who: str, url: str | None = None) -> None:
        monkeypatch.setenv("GRADER_URL", url or course.url)
        monkeypatch.setenv("GRADER_TOKEN", course.tokens[who])

    return use


@pytest.fixture
def api(jp_fetch):
    """`await api("GET", "lectures")` -> (status, JSON or text), errors included (no raising)."""

    async def call(method: str, path: str, body: Any = None, headers: dict | None = None, **params: Any):
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "headers": headers or {}}
        if body is not None or method in ("POST", "PATCH", "PUT"):
            kwargs["body"] = json.dumps(body if body is not None else {})
        response = await jp_fetch("grader", *path.split("/"), params=params or None, **kwargs)
        text = response.body.decode() if response.body else ""
        if response.headers.get("Content-Type", "").startswith("application/json") and text:
            return response.code, json.loads(text)
        return response.code, text

    return call


def copy_example(root: Path, source: Path, relative: str) -> Path:
    target = root / relative
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return target

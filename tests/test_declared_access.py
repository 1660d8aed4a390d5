"""Every handler method the app routes declares who may call it (`api.permissions`), and the
declaration fits its route: a method under `lectures/<code>/` resolves the lecture by its
declared minimum role; nothing else claims a lecture it cannot find.

The routes are the app's own (`GraderService.make_web_app`), with each authenticator, so a
handler added anywhere, or by an authenticator, is checked without being listed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tornado import web

from grader_service.api.base import APIHandler
from grader_service.api.permissions import UNAUTHENTICATED_LEVELS, Access, access_of, needs_login
from grader_service.app import GraderService
from grader_service.states import RoleName

VERBS = ("get", "post", "put", "patch", "delete")
LECTURE_ROUTE = "/lectures/([^/]+)"


def routed_methods(app: web.Application) -> list[tuple[str, type[APIHandler], str]]:
    """(route, handler class, verb) of every method the app would call for a request."""
    found = []
    for rule in app.wildcard_router.rules:
        handler = rule.target
        assert isinstance(handler, type) and issubclass(handler, APIHandler), rule
        for verb in VERBS:
            if getattr(handler, verb) is not getattr(web.RequestHandler, verb):
                found.append((rule.matcher.regex.pattern, handler, verb))
    return found


def problems(route: str, handler: type[APIHandler], verb: str) -> list[str]:
    """What is wrong with one method's declaration; empty when it is right."""
    where = f"{handler.__name__}.{verb} ({route})"
    access = access_of(getattr(handler, verb))
    if access is None:
        return [
            f"{where} declares no access: decorate it with @public, @needs_login, @needs_admin or @needs_role"
        ]
    found = []
    under_lecture = LECTURE_ROUTE in route
    if access.lecture != under_lecture:
        found.append(f"{where}: needs_role is for routes under lectures/<code>/, and those need it")
    if (access.level in UNAUTHENTICATED_LEVELS) == handler.auth_required:
        found.append(
            f"{where}: @public and @needs_scrape_access go with auth_required = False, and only they do"
        )
    return found


@pytest.fixture(params=["token", "jupyterhub"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> web.Application:
    service = GraderService(data_dir=str(tmp_path / "data"), authenticator_class=request.param)
    service.init_authenticator()
    return service.make_web_app()


def test_every_routed_handler_method_declares_its_access(app: web.Application) -> None:
    methods = routed_methods(app)
    assert len(methods) >= 30  # the whole API, not an empty router
    assert [p for route, handler, verb in methods for p in problems(route, handler, verb)] == []


def test_the_declarations_are_the_documented_minimums(app: web.Application) -> None:
    declared = {
        (handler.__name__, verb): access_of(getattr(handler, verb))
        for _, handler, verb in routed_methods(app)
    }
    # A sample across the kinds: members read, tutors grade, instructors manage, admins create lectures.
    assert declared["SubmissionsHandler", "post"] == Access(RoleName.STUDENT, lecture=True)
    assert declared["SubmissionHandler", "patch"] == Access(RoleName.TUTOR, lecture=True)
    assert declared["RoleHandler", "put"] == Access(RoleName.INSTRUCTOR, lecture=True)
    assert declared["LectureHandler", "delete"] == Access("admin", lecture=True)
    assert declared["LecturesHandler", "post"] == Access("admin")
    assert declared["EventsHandler", "get"] == Access("login")
    assert declared["HealthHandler", "get"] == Access("public")
    assert declared["LivenessHandler", "get"] == Access("public")
    assert declared["MetricsHandler", "get"] == Access("scrape")


class _Undeclared(APIHandler):
    def get(self) -> None:
        self.finish("{}")


class _LectureWithoutRole(APIHandler):
    @needs_login
    def delete(self, code: str) -> None:
        self.finish("{}")


def test_the_check_finds_an_undeclared_or_misdeclared_method() -> None:
    assert problems("/api/v1/things/?$", _Undeclared, "get") != []
    assert problems("/api/v1/lectures/([^/]+)/things/?$", _LectureWithoutRole, "delete") != []
    assert problems("/api/v1/things/?$", _LectureWithoutRole, "delete") == []

"""openapi.yaml describes exactly the app's routes and methods."""

from __future__ import annotations

import yaml

from grader_service.api import RESOURCE_MODULES
from grader_service.api.spec import SPEC_PATH

METHODS = {"get", "post", "put", "patch", "delete"}


def implemented(handler: type) -> set[str]:
    return {
        m
        for m in METHODS
        if any(
            m in cls.__dict__ for cls in handler.__mro__ if cls.__module__.startswith("grader_service.api")
        )
    }


def test_spec_matches_routes() -> None:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    spec_routes = {path: {m for m in item if m in METHODS} for path, item in spec["paths"].items()}
    routes: dict[str, set[str]] = {}
    for module in RESOURCE_MODULES:
        for pattern, handler in module.handlers:
            path = "/" + pattern
            path = path.replace("lectures/([^/]+)", "lectures/{code}", 1)
            path = path.replace("assignments/([^/]+)", "assignments/{name}", 1)
            path = path.replace("submissions/([^/]+)", "submissions/{id}", 1)
            path = path.replace("roles/([^/]+)", "roles/{user}", 1)
            path = path.replace("grading-runs/([^/]+)", "grading-runs/{id}", 1)
            assert "(" not in path, path
            routes[path] = implemented(handler)
    assert routes == spec_routes


def test_spec_is_served(world) -> None:
    r = world.client(None).get("openapi.yaml")
    assert r.status_code == 200 and yaml.safe_load(r.text)["openapi"].startswith("3.")

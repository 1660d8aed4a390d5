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
            path = path.replace("extensions/([^/]+)", "extensions/{user}", 1)
            path = path.replace("grading-runs/([^/]+)", "grading-runs/{id}", 1)
            assert "(" not in path, path
            routes[path] = implemented(handler)
    assert routes == spec_routes


def test_spec_is_served(world) -> None:
    r = world.client(None).get("openapi.yaml")
    assert r.status_code == 200 and yaml.safe_load(r.text)["openapi"].startswith("3.")


def test_spec_lists_the_common_status_codes_on_every_operation() -> None:
    """What every handler can answer (see the spec's description) is listed where it applies."""
    spec = yaml.safe_load(SPEC_PATH.read_text())
    missing = []
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method not in METHODS:
                continue
            codes = set(operation["responses"])
            needs = set()
            if operation.get("security", spec["security"]):
                needs.add("401")
            if shared or operation.get("parameters"):
                needs.add("400")
            if "{code}" in path:
                needs.add("404")
            if "requestBody" in operation:
                needs.update({"400", "413"})
            if not needs <= codes:
                missing.append(f"{method.upper()} {path}: {sorted(needs - codes)}")
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")) and path != "/health":
                    ref = response.get("$ref") or response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.startswith("#/components/"), (path, method, code)
    assert missing == []

"""What the panels see when something is wrong: not configured, service down, refused, not logged in."""

from __future__ import annotations

import pytest
from tornado.httpclient import HTTPClientError

from ...postgres import free_port

# Every route with sample arguments, and the verbs it answers.
ROUTES = [
    ("config", ["GET"]),
    ("lectures", ["GET"]),
    ("lectures/intro/assignments", ["GET", "POST"]),
    ("lectures/intro/assignments/basics", ["GET", "PATCH"]),
    ("lectures/intro/assignments/basics/release", ["POST"]),
    ("lectures/intro/assignments/basics/source", ["POST"]),
    ("lectures/intro/assignments/basics/fetch", ["POST"]),
    ("lectures/intro/assignments/basics/submissions", ["GET", "POST"]),
    ("lectures/intro/assignments/basics/submissions/1", ["GET", "PATCH", "DELETE"]),
    ("lectures/intro/assignments/basics/submissions/1/gradebook", ["GET"]),
    ("lectures/intro/assignments/basics/submissions/1/logs", ["GET"]),
    ("lectures/intro/assignments/basics/submissions/1/feedback", ["GET"]),
    ("lectures/intro/assignments/basics/submissions/1/grades", ["GET", "PUT"]),
    ("lectures/intro/assignments/basics/submissions/1/history", ["GET"]),
    ("lectures/intro/assignments/basics/submissions/1/notebooks", ["GET"]),
    ("lectures/intro/assignments/basics/grading-queue", ["GET"]),
    ("lectures/intro/assignments/basics/regrade", ["POST"]),
    ("lectures/intro/assignments/basics/grading-runs/1", ["GET"]),
    ("lectures/intro/assignments/basics/feedback-release", ["POST"]),
    ("lectures/intro/assignments/basics/export", ["POST"]),
    ("events?submission=1", ["GET"]),
]


async def test_every_route_needs_a_lab_login(jp_fetch, login) -> None:
    """Without the Lab's token (or with a wrong one) nothing reaches the service."""
    login("ins")
    for path, verbs in ROUTES:
        route, _, query = path.partition("?")
        for verb in verbs:
            for headers in ({"Authorization": ""}, {"Authorization": "token wrong"}):
                body = "{}" if verb in ("POST", "PATCH", "PUT") else None
                with pytest.raises(HTTPClientError) as refused:
                    await jp_fetch(
                        "grader",
                        *route.split("/"),
                        method=verb,
                        body=body,
                        headers=headers,
                        params=dict([query.split("=")]) if query else None,
                    )
                assert refused.value.code == 403, (verb, path)


async def test_not_configured(api) -> None:
    status, config = await api("GET", "config")
    assert status == 200 and config["configured"] is False and config["user"] is None
    assert "GRADER_URL" in config["message"]
    for path in ("lectures", "lectures/intro/assignments"):
        status, error = await api("GET", path)
        assert status == 503 and "GRADER_URL" in error["message"] and error["status"] == 503


async def test_service_down_is_a_503_naming_the_url(api, login) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    login("alice", url=url)
    status, config = await api("GET", "config")
    assert status == 200 and config["configured"] is True and config["url"] == url
    assert config["message"].startswith(f"The grader service at {url} is not reachable: ")
    for method, path in (("GET", "lectures"), ("POST", "lectures/intro/assignments/basics/fetch")):
        status, error = await api(method, path)
        assert status == 503, error
        assert error["message"].startswith(f"The grader service at {url} is not reachable: "), error


async def test_config_names_the_user(api, login, course) -> None:
    login("alice")
    status, config = await api("GET", "config")
    assert status == 200 and config["configured"] and config["message"] is None
    assert config["url"] == course.url and config["user"]["name"] == "alice"
    assert config["user"]["roles"] == {"intro": "student"}
    assert "token" not in str(config).lower()  # the browser never sees a service token


async def test_an_outsider_gets_the_service_refusal(api, login) -> None:
    login("out")
    status, error = await api("GET", "lectures/intro/assignments")
    assert (status, error) == (404, {"message": "Lecture 'intro' not found", "status": 404})
    status, error = await api("POST", "lectures/intro/assignments/basics/fetch", {})
    assert (status, error["status"]) == (404, 404) and "'intro' not found" in error["message"]


async def test_refusals_pass_through_with_the_service_message(api, login, jp_root_dir) -> None:
    login("alice")
    status, error = await api("POST", "lectures/intro/assignments", {"name": "mine"})
    assert status == 403 and "instructor" in error["message"], error
    status, error = await api("GET", "lectures/intro/assignments/nope/submissions")
    assert status == 404 and "nope" in error["message"], error
    # A student's last allowed submission, then the service's limit message.
    (jp_root_dir / "w").mkdir()
    (jp_root_dir / "w" / "basics.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    statuses = []
    for _ in range(4):
        status, body = await api("POST", "lectures/intro/assignments/held/submissions", {"path": "w"})
        statuses.append(status)
    assert statuses == [201, 201, 201, 403]
    assert body["message"] == "You have used all 3 submissions for 'held'"
    status, listing = await api("GET", "lectures/intro/assignments")
    assert {a["name"]: a["submissions_used"] for a in listing["items"]}["held"] == 3


async def test_under_jupyterhub_the_servers_hub_token_is_used(api, course, monkeypatch) -> None:
    """In a single-user server: GRADER_URL from the hub's spawner, the token is JUPYTERHUB_API_TOKEN."""
    monkeypatch.setenv("GRADER_URL", course.url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", course.tokens["bob"])
    status, config = await api("GET", "config")
    assert status == 200 and config["user"]["name"] == "bob", config

"""Hub tokens at the service: identity, admin flag, roles from groups, the access scope, caching."""

from __future__ import annotations

import time

import pytest

from .hub import CACHE_MAX_AGE, SERVICE_NAME, HubStack

ACCESS = f"access:services!service={SERVICE_NAME}"


def wait_for_roles(hub: HubStack, token: str, expected: dict[str, str], within: float) -> float:
    """Poll GET user until its roles equal `expected`; return how long that took."""
    start = time.monotonic()
    while True:
        r = hub.client(token).get("user")
        assert r.status_code == 200, r.text
        if r.json()["roles"] == expected:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(f"roles still {r.json()['roles']}, expected {expected} after {within} s")
        time.sleep(0.2)


def test_user_token_gives_name_admin_flag_and_roles_from_groups(hub: HubStack) -> None:
    groups = ("ml:tutor", "ml:student", "stats:instructor", "ml:grader", "students", "Ml:tutor")
    name = hub.new_user("tok", groups=groups)
    client = hub.client(hub.token(name))

    r = client.get("user")

    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": name,
        "display_name": None,
        "admin": False,
        "roles": {"ml": "tutor", "stats": "instructor"},  # highest per lecture; others ignored
    }
    # auto_create_lectures: the lectures exist now, and the role works in them
    r = client.get("lectures/stats")
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "instructor"


def test_hub_admins_and_admin_users_are_service_admins(hub: HubStack) -> None:
    hub_admin = hub.new_user("hubadmin", admin=True)
    assert hub.client(hub.token(hub_admin)).get("user").json()["admin"] is True

    r = hub.hub("POST", "users/grader-boss", json={"admin": False})  # named in admin_users
    assert r.status_code in (201, 409), r.text
    assert hub.client(hub.token("grader-boss")).get("user").json()["admin"] is True

    plain = hub.new_user("plain")
    assert hub.client(hub.token(plain)).get("user").json()["admin"] is False


def test_server_token_with_the_access_scope_works(hub: HubStack) -> None:
    """What the lab extension forwards: the server's token, with c.Spawner.server_token_scopes."""
    name = hub.new_user("srv", groups=("ml:student",))
    scopes = [f"access:servers!server={name}/", f"users:activity!user={name}", ACCESS]
    r = hub.client(hub.token(name, scopes)).get("user")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name
    assert r.json()["roles"] == {"ml": "student"}  # the hub returns groups whatever the token's scopes


def test_unfiltered_access_services_scope_works(hub: HubStack) -> None:
    name = hub.new_user("root", admin=True)  # only hub admins hold the unfiltered scope
    r = hub.client(hub.token(name, ["access:services"])).get("user")
    assert r.status_code == 200, r.text


def test_token_without_the_access_scope_is_403_naming_it(hub: HubStack) -> None:
    name = hub.new_user("noaccess")
    token = hub.token(name, [f"access:servers!server={name}/", f"users:activity!user={name}"])
    for method in ("GET", "POST"):
        r = hub.client(token).request(method, "user" if method == "GET" else "lectures", json={})
        assert r.status_code == 403, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"] == "Forbidden"
        assert ACCESS in r.json()["message"]


def test_unknown_token_and_no_credentials_are_401_json(hub: HubStack) -> None:
    for client in (hub.client("not-a-hub-token"), hub.client(None)):
        r = client.get("user")
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "Unauthorized"


def test_group_changes_reach_the_service_within_cache_max_age(hub: HubStack) -> None:
    name = hub.new_user("mover")
    token = hub.token(name)
    admin = hub.client(hub.token(hub.new_user("granter", admin=True)))
    assert admin.post("lectures", json={"code": "apionly"}).status_code == 201
    assert admin.put(f"lectures/apionly/roles/{name}", json={"role": "student"}).status_code == 201
    assert hub.client(token).get("user").json()["roles"] == {"apionly": "student"}
    slack = CACHE_MAX_AGE + 3  # the cache, plus polling and a loaded machine

    hub.add_to_group("ml:tutor", name)
    took = wait_for_roles(hub, token, {"ml": "tutor", "apionly": "student"}, within=slack)
    assert took <= slack

    hub.remove_from_group("ml:tutor", name)
    # the hub-sourced role goes; the API-granted role in a lecture without a hub group stays
    wait_for_roles(hub, token, {"apionly": "student"}, within=slack)

    # a hub group for a lecture with an API-granted role takes it over, and takes it away on leaving
    hub.add_to_group("apionly:instructor", name)
    wait_for_roles(hub, token, {"apionly": "instructor"}, within=slack)
    hub.remove_from_group("apionly:instructor", name)
    wait_for_roles(hub, token, {}, within=slack)


def test_token_post_needs_no_xsrf(hub: HubStack) -> None:
    name = hub.new_user("poster", groups=("ml:instructor",))
    r = hub.client(hub.token(name)).post("lectures/ml/assignments", json={"name": f"hw-{name}"})
    assert r.status_code == 201, r.text


def test_hub_service_tokens_are_refused(hub: HubStack) -> None:
    r = hub.client(hub.admin_token).get("user")  # the tests' own hub service
    assert r.status_code == 403, r.text
    assert "Only JupyterHub users" in r.json()["message"]

"""Production layout: configurable-http-proxy in front, the service at /services/grader/.

The service takes its hub settings from the environment here ($JUPYTERHUB_API_URL, _API_TOKEN,
_SERVICE_NAME), and every request below goes through the proxy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from .browser import cookie, login
from .hub import SERVICE_NAME, HubStack

PREFIX = f"/services/{SERVICE_NAME}/"
COOKIE = f"service-{SERVICE_NAME}"
# For requests the service refuses before reading their body: tornado then closes the connection without
# saying so, and a keep-alive client's next request on it can die with a reset (see the report on
# api/base.py); closing from our side keeps these tests about XSRF, not about connection reuse.
REFUSED = {"Connection": "close"}


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    stack = HubStack(tmp_path_factory.mktemp("hub-proxy"), layout="proxy")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def test_token_through_the_proxy(proxied: HubStack) -> None:
    name = proxied.new_user("viaproxy", groups=("algo:tutor",))
    r = proxied.client(proxied.token(name)).get("user")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name
    assert r.json()["roles"] == {"algo": "tutor"}
    assert r.url.startswith(f"http://127.0.0.1:{proxied.proxy_port}{PREFIX}")


def test_no_credentials_is_401_json_through_the_proxy(proxied: HubStack) -> None:
    r = proxied.client(None).get("user")
    assert r.status_code == 401
    assert r.json()["error"] == "Unauthorized"


def test_browser_login_and_xsrf_through_the_proxy(proxied: HubStack) -> None:
    name = proxied.new_user("proxybrowser", groups=("algo:instructor",))
    session = requests.Session()

    r = login(session, proxied.service_url + f"oauth_login?next={PREFIX}api/v1/user", name)

    assert r.status_code == 200, r.text
    assert r.url == proxied.service_api + "user"
    assert r.json()["name"] == name
    # the service's cookies stay under its prefix, clear of the hub's (/hub/) cookies of the same name
    assert cookie(session, COOKIE, PREFIX) is not None
    xsrf = cookie(session, "_xsrf", PREFIX)
    assert xsrf is not None
    assert cookie(session, "_xsrf", "/hub/") is not None
    assert cookie(session, "_xsrf", "/") is None

    url = proxied.service_api + "lectures/algo/assignments"
    r = session.post(url, json={"name": "p1"}, headers=REFUSED, timeout=30)
    assert r.status_code == 403, r.text
    r = session.post(url, json={"name": "p1"}, headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 201, r.text

    # the hub's own cookie-authenticated pages still work next to the service's cookies
    r = session.get(proxied.public_hub_url + "home", timeout=30)
    assert r.status_code == 200
    assert r.url == proxied.public_hub_url + "home"

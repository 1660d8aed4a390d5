"""A headless browser login through the hub's OAuth, with `requests`."""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

import requests

from .hub import PASSWORD

FORM_ACTION = re.compile(r'<form[^>]*action="([^"]*)"')
XSRF_INPUT = re.compile(r'name="_xsrf"\s+value="([^"]*)"')


def login(session: requests.Session, login_url: str, user: str) -> requests.Response:
    """Open the service's login URL, sign in at the hub's form, and follow redirects to the end.

    Returns the last response (the service's page at `next`).
    """
    page = session.get(login_url, timeout=30)
    assert page.status_code == 200 and "/hub/login" in page.url, (page.status_code, page.url, page.text[:500])
    action = FORM_ACTION.search(page.text)
    xsrf = XSRF_INPUT.search(page.text)
    assert action and xsrf, page.text[:2000]
    return session.post(
        urljoin(page.url, html.unescape(action.group(1))),
        data={"username": user, "password": PASSWORD, "_xsrf": html.unescape(xsrf.group(1))},
        timeout=30,
    )


def cookie(session: requests.Session, name: str, path: str) -> str | None:
    """The value of the cookie `name` set for exactly `path`, if any."""
    for c in session.cookies:
        if c.name == name and c.path == path:
            return c.value
    return None
